package api

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Password hashing: PBKDF2-HMAC-SHA256, 600,000 iterations (OWASP 2023),
// 16-byte random salt, 32-byte key, stored as
// $pbkdf2-sha256$i=<iterations>$<salt b64>$<key b64>.
const (
	pbkdf2Iterations = 600_000
	saltLen          = 16
	keyLen           = 32
	hashPrefix       = "$pbkdf2-sha256$"
)

// hashPassword returns the encoded PBKDF2 hash of password.
func hashPassword(password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key, err := pbkdf2.Key(sha256.New, password, salt, pbkdf2Iterations, keyLen)
	if err != nil {
		return "", err
	}
	enc := base64.RawStdEncoding
	return fmt.Sprintf("%si=%d$%s$%s", hashPrefix, pbkdf2Iterations, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

type parsedHash struct {
	iter      int
	salt, key []byte
}

func parseHash(h string) (parsedHash, error) {
	bad := errors.New("unrecognised password hash format")
	if !strings.HasPrefix(h, hashPrefix) {
		return parsedHash{}, bad
	}
	parts := strings.Split(strings.TrimPrefix(h, hashPrefix), "$")
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "i=") {
		return parsedHash{}, bad
	}
	iter, err := strconv.Atoi(strings.TrimPrefix(parts[0], "i="))
	if err != nil || iter < 1000 || iter > 100_000_000 {
		return parsedHash{}, bad
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[1])
	key, err2 := enc.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 {
		return parsedHash{}, bad
	}
	return parsedHash{iter: iter, salt: salt, key: key}, nil
}

// verify reports, in constant time with respect to the password, whether
// password matches the hash.
func (p parsedHash) verify(password string) bool {
	key, err := pbkdf2.Key(sha256.New, password, p.salt, p.iter, len(p.key))
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(key, p.key) == 1
}

// adminFile is the stored admin credential (StateDir/admin.json, 0600).
type adminFile struct {
	User         string    `json:"user"`
	PasswordHash string    `json:"password_hash"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// randomToken returns n random bytes, base64url-encoded without padding.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenHash is how a session token is stored: its SHA-256, hex. Tokens are
// 256-bit random values, so a fast hash is enough to make a stolen sessions
// file useless.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// writeFileAtomic writes data to path with mode 0600 via a temporary file.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// session is one login: a browser cookie or a bearer token.
type session struct {
	Kind      string    `json:"kind"` // "browser", "token"
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// maxSessions bounds the sessions file; the sessions closest to expiry are
// dropped first.
const maxSessions = 1000

// sessionStore keeps sessions by token hash, in memory and in a 0600 JSON
// file, so bearer tokens survive a restart. Every change is applied to the
// file's current content (read, change, atomic rename), so another process
// using the same file (a CLI issuing a local token) is not overwritten;
// a token not found in memory triggers a reload when the file changed.
type sessionStore struct {
	path string
	now  func() time.Time

	mu       sync.Mutex
	sessions map[string]session
	modTime  time.Time
	size     int64
}

type sessionsFile struct {
	Sessions map[string]session `json:"sessions"` // by SHA-256 of the token
}

func newSessionStore(path string, now func() time.Time) (*sessionStore, error) {
	s := &sessionStore{path: path, now: now, sessions: map[string]session{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.readLocked()
	if err != nil {
		return nil, err
	}
	s.sessions = m
	return s, nil
}

// readLocked reads the file (empty if absent) and drops expired sessions.
func (s *sessionStore) readLocked() (map[string]session, error) {
	m := map[string]session{}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		s.modTime, s.size = time.Time{}, 0
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read sessions: %w", err)
	}
	if fi, err := os.Stat(s.path); err == nil {
		s.modTime, s.size = fi.ModTime(), fi.Size()
	}
	var f sessionsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("read sessions %s: %w", s.path, err)
	}
	now := s.now()
	for h, se := range f.Sessions {
		if len(h) == 64 && now.Before(se.ExpiresAt) {
			m[h] = se
		}
	}
	return m, nil
}

// update applies fn to the file's current sessions and saves them.
func (s *sessionStore) update(fn func(m map[string]session)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.readLocked()
	if err != nil {
		return err
	}
	fn(m)
	if len(m) > maxSessions {
		hs := make([]string, 0, len(m))
		for h := range m {
			hs = append(hs, h)
		}
		sort.Slice(hs, func(i, j int) bool { return m[hs[i]].ExpiresAt.Before(m[hs[j]].ExpiresAt) })
		for _, h := range hs[:len(m)-maxSessions] {
			delete(m, h)
		}
	}
	b, err := json.MarshalIndent(sessionsFile{Sessions: m}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path, b); err != nil {
		return fmt.Errorf("save sessions: %w", err)
	}
	if fi, err := os.Stat(s.path); err == nil {
		s.modTime, s.size = fi.ModTime(), fi.Size()
	}
	s.sessions = m
	return nil
}

// issue creates a session and returns its token.
func (s *sessionStore) issue(kind string, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		return "", time.Time{}, errors.New("session lifetime must be positive")
	}
	tok, err := randomToken(32)
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	exp := now.Add(ttl).UTC()
	err = s.update(func(m map[string]session) {
		m[tokenHash(tok)] = session{Kind: kind, CreatedAt: now.UTC(), ExpiresAt: exp}
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, exp, nil
}

// errExpired and errUnknown distinguish rejected tokens (for logs only:
// clients get the same message for both).
var (
	errExpired = errors.New("session expired")
	errUnknown = errors.New("unknown session")
)

// lookup returns the session of a token.
func (s *sessionStore) lookup(token string) (session, error) {
	if token == "" || len(token) > 256 {
		return session{}, errUnknown
	}
	h := tokenHash(token)
	s.mu.Lock()
	se, ok := s.sessions[h]
	if !ok {
		// Another process may have issued it: reload if the file changed.
		if fi, err := os.Stat(s.path); err == nil && (!fi.ModTime().Equal(s.modTime) || fi.Size() != s.size) {
			if m, err := s.readLocked(); err == nil {
				s.sessions = m
				se, ok = m[h]
			}
		}
	}
	s.mu.Unlock()
	if !ok {
		return session{}, errUnknown
	}
	if !s.now().Before(se.ExpiresAt) {
		return session{}, errExpired
	}
	return se, nil
}

// revoke forgets a token. A token that is not a current session (unknown,
// expired or malformed) changes nothing: the file is neither rewritten nor
// synced, so anonymous logouts cost a hash and a stat.
func (s *sessionStore) revoke(token string) error {
	if token == "" || len(token) > 256 {
		return nil
	}
	h := tokenHash(token)
	if !s.known(h) {
		return nil
	}
	return s.update(func(m map[string]session) { delete(m, h) })
}

// known reports whether the token hash h is a session, in memory or in the
// file when another process changed it since it was read.
func (s *sessionStore) known(h string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[h]; ok {
		return true
	}
	fi, err := os.Stat(s.path)
	if err != nil || (fi.ModTime().Equal(s.modTime) && fi.Size() == s.size) {
		return false
	}
	m, err := s.readLocked()
	if err != nil {
		return true // unreadable: let update report it
	}
	s.sessions = m
	_, ok := m[h]
	return ok
}

// revokeAll forgets every session (after an admin password change).
func (s *sessionStore) revokeAll() error {
	return s.update(func(m map[string]session) { clear(m) })
}

// Login rate limit: at most loginMaxFailures failed attempts per client IP
// within loginWindow; further attempts get 429 until the oldest failure
// leaves the window. A successful login clears the IP's failures. Attempts
// still being checked count as failures until they are settled, so that
// parallel requests cannot slip past the limit while passwords are hashed.
const (
	loginMaxFailures = 5
	loginWindow      = time.Minute
	maxTrackedIPs    = 10_000
	// pendingRetry is the Retry-After of an attempt refused because
	// earlier attempts of its address are still being checked.
	pendingRetry = time.Second
)

type loginLimiter struct {
	now func() time.Time

	mu       sync.Mutex
	failures map[string][]time.Time
	pending  map[string]int // attempts admitted by begin and not yet settled by end
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	return &loginLimiter{now: now, failures: map[string][]time.Time{}, pending: map[string]int{}}
}

// recent returns ip's failures still inside the window (caller holds mu).
func (l *loginLimiter) recent(ip string, now time.Time) []time.Time {
	fs := l.failures[ip]
	i := 0
	for i < len(fs) && !now.Before(fs[i].Add(loginWindow)) {
		i++
	}
	fs = fs[i:]
	if len(fs) == 0 {
		delete(l.failures, ip)
		return nil
	}
	l.failures[ip] = fs
	return fs
}

// blocked reports whether ip must wait because of its recorded failures,
// and how long.
func (l *loginLimiter) blocked(ip string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.blockedLocked(ip, l.now())
}

func (l *loginLimiter) blockedLocked(ip string, now time.Time) (time.Duration, bool) {
	fs := l.recent(ip, now)
	if len(fs) < loginMaxFailures {
		return 0, false
	}
	return fs[len(fs)-loginMaxFailures].Add(loginWindow).Sub(now), true
}

// begin admits a login attempt from ip, or refuses it with the time to
// wait. An admitted attempt must be settled with end. Recorded failures
// and attempts in progress together stay within loginMaxFailures, so at
// most that many wrong passwords are ever checked per window, however
// many requests arrive at once.
func (l *loginLimiter) begin(ip string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if wait, blocked := l.blockedLocked(ip, now); blocked {
		return wait, false
	}
	if len(l.failures[ip])+l.pending[ip] >= loginMaxFailures {
		return pendingRetry, false
	}
	l.pending[ip]++
	return 0, true
}

// end settles an attempt admitted by begin: a failure is recorded (in
// the same critical section that releases the reservation, so no other
// attempt is admitted in between), a success clears ip's failures, an
// unchecked attempt leaves them as they are.
func (l *loginLimiter) end(ip string, outcome loginResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending[ip]--; l.pending[ip] <= 0 {
		delete(l.pending, ip)
	}
	switch outcome {
	case loginFailed:
		l.failLocked(ip)
	case loginOK:
		delete(l.failures, ip)
	}
}

// fail records a failed attempt.
func (l *loginLimiter) fail(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failLocked(ip)
}

func (l *loginLimiter) failLocked(ip string) {
	now := l.now()
	if len(l.failures) >= maxTrackedIPs {
		for k := range l.failures {
			l.recent(k, now)
		}
		if len(l.failures) >= maxTrackedIPs {
			// Under a flood of addresses, forget arbitrary ones rather than grow.
			for k := range l.failures {
				delete(l.failures, k)
				if len(l.failures) < maxTrackedIPs/2 {
					break
				}
			}
		}
	}
	fs := l.recent(ip, now)
	if len(fs) >= 2*loginMaxFailures {
		fs = fs[1:]
	}
	l.failures[ip] = append(fs, now)
}
