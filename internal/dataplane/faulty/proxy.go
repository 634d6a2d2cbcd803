package faulty

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// PostgreSQL protocol codes of the packets a client may open with.
const (
	sslRequest    = 80877103
	gssEncRequest = 80877104
	cancelRequest = 80877102
)

// proxy refuses the first failures client sessions of one instance with a
// PostgreSQL error and forwards the rest to target. A session is counted
// when the client sends its startup message, so a client that first asks
// for TLS (and is told no) counts once.
type proxy struct {
	name, target string
	ln           net.Listener
	port         int

	mu       sync.Mutex
	failures int // remaining; negative: all
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func startProxy(name, target string, failures int) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faulty: start the connection proxy of %s: %w", name, err)
	}
	p := &proxy{name: name, target: target, ln: ln, port: ln.Addr().(*net.TCPAddr).Port, failures: failures, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c, true)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.track(c, false)
			p.handle(c)
		}()
	}
}

func (p *proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
		c.Close()
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// failing reports whether the next session must fail, without using it up.
func (p *proxy) failing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failures != 0
}

// take uses up one failure; false when none is left.
func (p *proxy) take() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures == 0 {
		return false
	}
	if p.failures > 0 {
		p.failures--
	}
	return true
}

func (p *proxy) handle(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	first, code, err := readPacket(c)
	if err != nil {
		return
	}
	if p.failing() && code != cancelRequest {
		for code == sslRequest || code == gssEncRequest {
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
			if _, code, err = readPacket(c); err != nil {
				return // the client gave up on this connection (it retries without TLS)
			}
		}
		if p.take() {
			_, _ = c.Write(errorResponse(fmt.Sprintf("injected connection failure for %s (test fault)", p.name)))
			return
		}
		// The last failure went to another session meanwhile: this client
		// already had its TLS answer, so it cannot be forwarded cleanly.
		_, _ = c.Write(errorResponse("faulty proxy: retry"))
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	up, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		_, _ = c.Write(errorResponse(fmt.Sprintf("faulty proxy: reach %s: %v", p.target, err)))
		return
	}
	p.track(up, true)
	defer p.track(up, false)
	if _, err := up.Write(first); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

// readPacket reads a length-prefixed opening packet; code is its first
// 4 bytes after the length (protocol version or request code).
func readPacket(r io.Reader) (pkt []byte, code uint32, err error) {
	var head [8]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, 0, err
	}
	n := binary.BigEndian.Uint32(head[:4])
	if n < 8 || n > 1<<16 {
		return nil, 0, fmt.Errorf("bad packet length %d", n)
	}
	pkt = make([]byte, n)
	copy(pkt, head[:])
	if _, err := io.ReadFull(r, pkt[8:]); err != nil {
		return nil, 0, err
	}
	return pkt, binary.BigEndian.Uint32(head[4:]), nil
}

// errorResponse is a FATAL ErrorResponse (SQLSTATE 08006, connection failure).
func errorResponse(msg string) []byte {
	var body []byte
	for _, f := range []struct {
		t byte
		v string
	}{{'S', "FATAL"}, {'V', "FATAL"}, {'C', "08006"}, {'M', msg}} {
		body = append(body, f.t)
		body = append(body, f.v...)
		body = append(body, 0)
	}
	body = append(body, 0)
	out := []byte{'E', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(body)+4))
	return append(out, body...)
}
