package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Table writes aligned columns.
type Table struct {
	tw *tabwriter.Writer
}

// NewTable starts a table with a header row.
func NewTable(w io.Writer, header ...string) *Table {
	t := &Table{tw: tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)}
	t.Row(header...)
	return t
}

// Row adds a row; empty cells print as "-".
func (t *Table) Row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
		cells[i] = strings.ReplaceAll(cells[i], "\t", " ")
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// Flush writes the table out.
func (t *Table) Flush() error { return t.tw.Flush() }

// Fields writes "label: value" lines with aligned values, under an
// optional section title. Empty values are skipped.
func Fields(w io.Writer, title string, kv ...string) {
	if title != "" {
		fmt.Fprintln(w, title)
	}
	width := 0
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" && len(kv[i]) > width {
			width = len(kv[i])
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		fmt.Fprintf(w, "  %-*s  %s\n", width+1, kv[i]+":", kv[i+1])
	}
}

// PrintJSON writes a value (or raw JSON) indented.
func PrintJSON(w io.Writer, v any) error {
	if raw, ok := v.(json.RawMessage); ok {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err == nil {
			buf.WriteByte('\n')
			_, err = w.Write(buf.Bytes())
			return err
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// FormatTime prints a timestamp in local time ("-" when zero).
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// Ago prints how long ago t was, coarsely ("3m ago").
func Ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
