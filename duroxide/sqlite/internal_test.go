package sqlite

import (
	"context"
	"database/sql/driver"
	"reflect"
	"strings"
	"testing"

	"github.com/mattn/go-sqlite3"
)

// TestNoReprepare checks that no prepared statement is re-prepared at every
// execution (see the note in stmts.go) and that none sorts or scans a big
// table where an index should serve.
func TestNoReprepare(t *testing.T) {
	s := openFile(t)
	ctx := context.Background()
	var w writeStmts
	var r readStmts
	defs := append(w.defs(), r.defs()...)
	err := s.wconn.Raw(func(dc any) error {
		c := dc.(*sqlite3.SQLiteConn)
		if _, err := c.Exec("BEGIN", nil); err != nil {
			return err
		}
		defer c.Exec("ROLLBACK", nil)
		for _, d := range defs {
			q := strings.TrimSpace(d.sql)
			if strings.HasPrefix(q, "BEGIN") || strings.HasPrefix(q, "COMMIT") || strings.HasPrefix(q, "ROLLBACK") ||
				strings.HasPrefix(q, "SAVEPOINT") || strings.HasPrefix(q, "RELEASE") {
				continue
			}
			st, err := c.Prepare(q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			args := make([]driver.NamedValue, st.NumInput())
			vargs := make([]driver.Value, st.NumInput())
			for i := range args {
				args[i] = driver.NamedValue{Ordinal: i + 1, Value: int64(1)}
				vargs[i] = int64(1)
			}
			rows, err := c.Query("EXPLAIN QUERY PLAN "+q, vargs)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			vals := make([]driver.Value, 4)
			for rows.Next(vals) == nil {
				detail, _ := vals[3].(string)
				if strings.Contains(detail, "TEMP B-TREE") || strings.HasPrefix(detail, "SCAN history") ||
					strings.HasPrefix(detail, "SCAN instances") || strings.HasPrefix(detail, "SCAN orchestrator_queue") {
					t.Errorf("plan %q for\n%s", detail, q)
				}
			}
			rows.Close()
			for i := range 6 {
				if i == 3 {
					for j := range args {
						args[j].Value = "x"
					}
				}
				// Constraint failures on repeated inserts do not matter here.
				if rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, args); err == nil {
					rows.Close()
				}
			}
			if n := reflect.ValueOf(st).Elem().FieldByName("repreps").Int(); n != 0 {
				t.Errorf("re-prepared %d times:\n%s", n, q)
			}
			st.Close()
		}
		return nil
	})
	must(t, err)
}
