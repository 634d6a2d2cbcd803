package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

type logsOptions struct {
	follow        bool
	tail          int
	orchestration string
	grep          string
	json          bool
}

func newServerLogsCmd(g *globals) *cobra.Command {
	o := &logsOptions{}
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Show the server log (the JSON log file in the data dir), optionally filtered",
		Long: `Show the last lines of the server log (<data dir>/server.log), formatted for
reading. -o keeps the records of one orchestration (for example
create-test-retry-1a2b3c4d), --grep the lines containing a text; -f keeps
printing new lines as they are written. --json prints the raw records.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.tail < 0 {
				return usagef("-n must not be negative")
			}
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			return showLogs(ctx, g, o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.follow, "follow", "f", false, "keep printing new lines (Ctrl-C stops)")
	f.IntVarP(&o.tail, "tail", "n", 100, "number of lines to show")
	f.StringVarP(&o.orchestration, "orchestration", "o", "", "only records of this orchestration instance id")
	f.StringVar(&o.grep, "grep", "", "only lines containing this text")
	f.BoolVar(&o.json, "json", false, "print the raw JSON records")
	return cmd
}

// logLine is one line of the log file, parsed when it is a JSON record.
type logLine struct {
	raw string
	rec map[string]any
}

func parseLogLine(s string) logLine {
	l := logLine{raw: s}
	if strings.HasPrefix(s, "{") {
		var rec map[string]any
		if json.Unmarshal([]byte(s), &rec) == nil {
			l.rec = rec
		}
	}
	return l
}

// matches applies the filters: the orchestration id must be the record's
// instance_id or orchestration_id (or appear in a plain line), the grep
// text must appear in the raw or the formatted line.
func (o *logsOptions) matches(l logLine) bool {
	if o.orchestration != "" {
		if l.rec == nil {
			if !strings.Contains(l.raw, o.orchestration) {
				return false
			}
		} else {
			ok := false
			for _, k := range []string{"instance_id", "orchestration_id", "orchestration", "actor"} {
				if v, _ := l.rec[k].(string); v == o.orchestration {
					ok = true
				}
			}
			if !ok {
				return false
			}
		}
	}
	if o.grep != "" && !strings.Contains(l.raw, o.grep) && !strings.Contains(formatLogLine(l), o.grep) {
		return false
	}
	return true
}

// formatLogLine renders a record as "time LEVEL message key=value ...".
func formatLogLine(l logLine) string {
	if l.rec == nil {
		return l.raw
	}
	var b strings.Builder
	if ts, ok := l.rec["time"].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			ts = t.Local().Format("2006-01-02 15:04:05.000")
		}
		b.WriteString(ts)
		b.WriteByte(' ')
	}
	lvl, _ := l.rec["level"].(string)
	fmt.Fprintf(&b, "%-5s ", lvl)
	msg, _ := l.rec["msg"].(string)
	b.WriteString(msg)
	keys := make([]string, 0, len(l.rec))
	for k := range l.rec {
		switch k {
		case "time", "level", "msg", "service_name":
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		switch v := l.rec[k].(type) {
		case string:
			if v == "" || strings.ContainsAny(v, " \t\"=") {
				b.WriteString(fmt.Sprintf("%q", v))
			} else {
				b.WriteString(v)
			}
		default:
			j, _ := json.Marshal(v)
			b.Write(j)
		}
	}
	return b.String()
}

func (o *logsOptions) print(w io.Writer, l logLine) {
	if o.json {
		fmt.Fprintln(w, l.raw)
		return
	}
	fmt.Fprintln(w, formatLogLine(l))
}

func showLogs(ctx context.Context, g *globals, o *logsOptions) error {
	path := logPath(g.dataDir)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no server log at %s (has the server run with this data dir?)", path)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	// Keep the last N matching lines.
	ring := make([]logLine, 0, o.tail)
	total, matched := 0, 0
	rd := bufio.NewReaderSize(f, 256*1024)
	var pos int64
	for {
		line, err := rd.ReadString('\n')
		if len(line) > 0 && strings.HasSuffix(line, "\n") {
			pos += int64(len(line))
			total++
			l := parseLogLine(strings.TrimRight(line, "\r\n"))
			if o.matches(l) {
				matched++
				if o.tail > 0 {
					if len(ring) == o.tail {
						copy(ring, ring[1:])
						ring = ring[:o.tail-1]
					}
					ring = append(ring, l)
				}
			}
		}
		if err != nil {
			break // a partial last line is read again when following
		}
	}
	for _, l := range ring {
		o.print(g.stdout, l)
	}
	if !o.follow {
		if o.orchestration != "" || o.grep != "" {
			fmt.Fprintf(g.stderr, "(%d of %d lines matched; showing the last %d)\n", matched, total, len(ring))
		}
		return nil
	}
	return followLog(ctx, g, o, path, pos)
}

// followLog prints lines appended after offset until ctx ends. A file that
// shrinks (truncated or replaced) is read again from its start.
func followLog(ctx context.Context, g *globals, o *logsOptions, path string, offset int64) error {
	var partial []byte
	buf := make([]byte, 256*1024)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		f, err := os.Open(path)
		if err == nil {
			if st, err := f.Stat(); err == nil && st.Size() < offset {
				offset, partial = 0, nil
			}
			if _, err := f.Seek(offset, io.SeekStart); err == nil {
				for {
					n, err := f.Read(buf)
					if n > 0 {
						offset += int64(n)
						partial = append(partial, buf[:n]...)
						for {
							i := bytes.IndexByte(partial, '\n')
							if i < 0 {
								break
							}
							l := parseLogLine(strings.TrimRight(string(partial[:i]), "\r"))
							partial = partial[i+1:]
							if o.matches(l) {
								o.print(g.stdout, l)
							}
						}
					}
					if err != nil {
						break
					}
				}
			}
			f.Close()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
