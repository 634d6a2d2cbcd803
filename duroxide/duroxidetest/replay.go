package duroxidetest

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/toygres/toygres/duroxide"
)

// Replay runs one recorded execution history (as duroxide.Client.ReadHistory
// returns it) through the orchestrations registered in reg and returns a
// *duroxide.NondeterminismError when today's code no longer produces it:
// a different step at some point of the history, or a different ending of
// a finished execution. instance is the instance id the history belongs to
// (the code may use ctx.InstanceID); the execution is taken to be the first
// (use Golden.ExecutionID for others). Nothing is run: no activity, no time.
func Replay(reg *duroxide.Registry, instance string, history []duroxide.Event) error {
	return duroxide.NewExecutor(reg, duroxide.ExecutorOptions{}).Replay(instance, 1, history)
}

// Golden is a recorded history kept as a test fixture: a JSON file that
// ReplayFile checks against today's code.
type Golden struct {
	// Instance and ExecutionID are what the code saw as ctx.InstanceID and
	// ctx.ExecutionID.
	Instance    string `json:"instance"`
	ExecutionID int64  `json:"execution_id,omitempty"`
	// Note says what the history shows (for readers of the file).
	Note    string           `json:"note,omitempty"`
	History []duroxide.Event `json:"history"`
}

// ReadGolden reads a golden history file.
func ReadGolden(path string) (Golden, error) {
	var g Golden
	b, err := os.ReadFile(path)
	if err != nil {
		return g, fmt.Errorf("read golden history: %w", err)
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return g, fmt.Errorf("read golden history %s: %w", path, err)
	}
	if len(g.History) == 0 {
		return g, fmt.Errorf("golden history %s is empty", path)
	}
	return g, nil
}

// WriteGolden writes a golden history file (indented JSON, one event a line).
func WriteGolden(path string, g Golden) error {
	var b []byte
	b = append(b, "{\n"...)
	head, _ := json.Marshal(struct {
		Instance    string `json:"instance"`
		ExecutionID int64  `json:"execution_id,omitempty"`
		Note        string `json:"note,omitempty"`
	}{g.Instance, g.ExecutionID, g.Note})
	b = append(b, "  "...)
	b = append(b, head[1:len(head)-1]...)
	b = append(b, ",\n  \"history\": [\n"...)
	for i, ev := range g.History {
		line, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("write golden history: %w", err)
		}
		b = append(b, "    "...)
		b = append(b, line...)
		if i < len(g.History)-1 {
			b = append(b, ',')
		}
		b = append(b, '\n')
	}
	b = append(b, "  ]\n}\n"...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write golden history: %w", err)
	}
	return nil
}

// ReplayFile replays a golden history file (see Replay).
func ReplayFile(reg *duroxide.Registry, path string) error {
	g, err := ReadGolden(path)
	if err != nil {
		return err
	}
	exec := g.ExecutionID
	if exec == 0 {
		exec = 1
	}
	if err := duroxide.NewExecutor(reg, duroxide.ExecutorOptions{}).Replay(g.Instance, exec, g.History); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
