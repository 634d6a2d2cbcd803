// Command sqlitedrivers (go run ./sqlitedrivers) compares Go SQLite drivers on the write pattern of
// duroxide's store: small IMMEDIATE transactions that insert, update and
// delete a few rows (WAL, synchronous=NORMAL), plus point reads.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	_ "github.com/mattn/go-sqlite3"
	_ "modernc.org/sqlite"
)

func run(driver, dsn string, n int) (time.Duration, time.Duration, error) {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	for _, q := range []string{"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
		"CREATE TABLE q (id INTEGER PRIMARY KEY, inst TEXT, item TEXT, visible_at INTEGER, lock TEXT)",
		"CREATE TABLE h (inst TEXT, ev INTEGER, data TEXT, PRIMARY KEY (inst, ev))", "CREATE INDEX qv ON q (visible_at, id)"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", q, err)
		}
	}
	payload := `{"kind":"ActivityCompleted","instance":"inst-000123","exec":1,"id":7,"result":"{\"ok\":true,\"value\":12345}"}`
	begin := time.Now()
	for i := 0; i < n; i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return 0, 0, err
		}
		inst := fmt.Sprintf("inst-%d", i%200)
		if _, err := tx.Exec("INSERT INTO q (inst, item, visible_at) VALUES (?, ?, ?)", inst, payload, i); err != nil {
			return 0, 0, err
		}
		if _, err := tx.Exec("INSERT INTO h (inst, ev, data) VALUES (?, ?, ?)", inst, i, payload); err != nil {
			return 0, 0, err
		}
		if _, err := tx.Exec("UPDATE q SET lock = ? WHERE id = (SELECT id FROM q WHERE lock IS NULL ORDER BY visible_at, id LIMIT 1)", "tok"); err != nil {
			return 0, 0, err
		}
		if _, err := tx.Exec("DELETE FROM q WHERE lock = ?", "tok"); err != nil {
			return 0, 0, err
		}
		if err := tx.Commit(); err != nil {
			return 0, 0, err
		}
	}
	writes := time.Since(begin)
	begin = time.Now()
	for i := 0; i < n; i++ {
		var d string
		if err := db.QueryRow("SELECT data FROM h WHERE inst = ? AND ev = ?", fmt.Sprintf("inst-%d", i%200), i).Scan(&d); err != nil {
			return 0, 0, err
		}
	}
	return writes, time.Since(begin), nil
}

func main() {
	n := flag.Int("n", 5000, "transactions per run")
	reps := flag.Int("reps", 5, "repetitions")
	flag.Parse()
	type res struct{ w, r []time.Duration }
	results := map[string]*res{}
	drivers := []struct{ name, driver, opts string }{
		{"mattn/go-sqlite3 (cgo)", "sqlite3", "?_txlock=immediate"},
		{"modernc.org/sqlite (pure Go)", "sqlite", "?_txlock=immediate"},
	}
	for r := 0; r < *reps; r++ {
		for _, d := range drivers {
			dir, _ := os.MkdirTemp("", "sqlcmp")
			w, rd, err := run(d.driver, "file:"+filepath.Join(dir, "x.db")+d.opts, *n)
			os.RemoveAll(dir)
			if err != nil {
				fmt.Println(d.name, err)
				os.Exit(1)
			}
			if results[d.name] == nil {
				results[d.name] = &res{}
			}
			results[d.name].w = append(results[d.name].w, w)
			results[d.name].r = append(results[d.name].r, rd)
		}
	}
	med := func(v []time.Duration) time.Duration {
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		return v[len(v)/2]
	}
	fmt.Printf("%-30s %14s %14s\n", "driver", "write tx (µs)", "point read (µs)")
	for _, d := range drivers {
		x := results[d.name]
		fmt.Printf("%-30s %14.1f %14.1f\n", d.name, float64(med(x.w).Microseconds())/float64(*n), float64(med(x.r).Microseconds())/float64(*n))
	}
}
