package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/toygres/toygres/duroxide"
)

// Watch implements duroxide.Notifier with LISTEN/NOTIFY.
//
// Every store function that makes work visible (enqueue, ack, abandon)
// calls pg_notify on the schema's channel (<schema>_notify) with payload
// "o" (orchestrator queue), "w" (worker queue) or "s" (an instance reached a
// terminal status or was deleted); PostgreSQL delivers it when the
// transaction commits, to every process listening on that database.
//
// The first Watch starts one dedicated listening connection (outside the
// pool). If that connection fails, it reconnects with backoff; after every
// successful LISTEN but the first, every watcher is called for every queue,
// because notifications sent while not listening are lost. Watch waits up
// to two seconds for LISTEN to take effect, so that writes made after it
// returns are notified (if the database cannot be reached, the watchers are
// woken once it can).
// The listener stops at Close. Messages that only become visible with time
// (timers, delayed abandons) produce no notification when they become
// due: the runtime schedules those wake-ups with NextVisibleAt, and
// polls slowly as a fallback.
func (s *Store) Watch(fn func(q duroxide.Queue)) (stop func()) {
	s.notifyMu.Lock()
	if s.closed {
		s.notifyMu.Unlock()
		return func() {}
	}
	if s.notify == nil {
		s.notify = newListener(s)
	}
	l := s.notify
	stop = l.add(fn)
	s.notifyMu.Unlock()
	// Wait (briefly) for LISTEN, so that writes made after Watch returns
	// are notified.
	select {
	case <-l.ready():
	case <-time.After(watchReadyWait):
	}
	return stop
}

// watchReadyWait bounds how long Watch waits for the listener to connect.
var watchReadyWait = 2 * time.Second

// listenerPingInterval is how long the listener waits for a notification
// before checking that its connection is still alive.
var listenerPingInterval = 30 * time.Second

type listener struct {
	s      *Store
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	watchers map[int]func(duroxide.Queue)
	next     int
	// listening is closed and replaced on each successful LISTEN; tests
	// wait on it.
	listening chan struct{}
	connected bool
}

func newListener(s *Store) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{
		s:         s,
		cancel:    cancel,
		done:      make(chan struct{}),
		watchers:  map[int]func(duroxide.Queue){},
		listening: make(chan struct{}),
	}
	go l.run(ctx)
	return l
}

func (l *listener) add(fn func(duroxide.Queue)) func() {
	l.mu.Lock()
	id := l.next
	l.next++
	l.watchers[id] = fn
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.watchers, id)
			l.mu.Unlock()
		})
	}
}

func (l *listener) stop() {
	l.cancel()
	<-l.done
}

func (l *listener) fire(qs ...duroxide.Queue) {
	l.mu.Lock()
	fns := make([]func(duroxide.Queue), 0, len(l.watchers))
	for _, fn := range l.watchers {
		fns = append(fns, fn)
	}
	l.mu.Unlock()
	for _, q := range qs {
		for _, fn := range fns {
			fn(q)
		}
	}
}

// ready returns a channel closed once the listener is listening.
func (l *listener) ready() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.connected {
		c := make(chan struct{})
		close(c)
		return c
	}
	return l.listening
}

func (l *listener) setConnected(v bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.connected = v
	if v {
		// Hellos sent while not listening were missed: notify until a
		// heartbeat, now, has counted the other handles.
		l.s.alone.Store(false)
		select {
		case l.s.beatNow <- struct{}{}:
		default:
		}
		close(l.listening)
		l.listening = make(chan struct{})
	}
}

func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	backoff := 50 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		conn, err := l.connect(ctx)
		if err != nil {
			first = false
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		l.setConnected(true)
		if !first {
			l.fire(duroxide.QueueOrchestrator, duroxide.QueueWorker, duroxide.QueueStatus)
		}
		first = false
		l.serve(ctx, conn)
		l.setConnected(false)
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(closeCtx)
		cancel()
	}
}

func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg := l.s.pool.Config().ConnConfig.Copy()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{l.s.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// serve delivers notifications until the connection fails or ctx ends.
func (l *listener) serve(ctx context.Context, conn *pgx.Conn) {
	for {
		wctx, cancel := context.WithTimeout(ctx, listenerPingInterval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed() {
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				err = conn.Ping(pctx)
				pcancel()
				if err == nil {
					continue
				}
			}
			return
		}
		if pid := l.s.notifyPID.Load(); pid != 0 && n.PID == pid {
			continue // this handle's own announcement: its watchers already heard it
		}
		switch n.Payload {
		case "h":
			l.s.alone.Store(false) // a new handle: announce writes from now on
		case "o":
			l.fire(duroxide.QueueOrchestrator)
		case "w":
			l.fire(duroxide.QueueWorker)
		case "s":
			l.fire(duroxide.QueueStatus)
		default:
			l.fire(duroxide.QueueOrchestrator, duroxide.QueueWorker, duroxide.QueueStatus)
		}
	}
}
