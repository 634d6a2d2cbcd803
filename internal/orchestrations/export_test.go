package orchestrations

// GetVersion change ids, for tests that pin them to run the code path of
// instances recorded before a change (duroxidetest.WithChangeVersion).
const (
	ChangeLeanCreate     = changeLeanCreate
	ChangeOneHealthWrite = changeOneHealthWrite
)
