package sqlite

// Test hooks for the external test package.

// AsOtherProcess makes Open behave like a Store of another process: no
// write lock, lease owners or notifications shared with other Stores of
// this process on the same file.
func AsOtherProcess() Option { return func(c *config) { c.privateHub = true } }

// StopHeartbeat stops the handle's liveness heartbeat, as if its process had
// been frozen or killed; the handle stays usable.
func StopHeartbeat(s *Store) { s.stopHeartbeat() }
