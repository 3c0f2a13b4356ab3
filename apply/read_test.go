package apply

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service/api"
)

// TestPlan_Interrupt checks that a read's context interrupts it, in its
// first statement or a later one, and that no interrupt reaches a later
// read on the same connection (one reader, so every read shares it).
func TestPlan_Interrupt(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "i.sqlite"), Options{Node: "n1", Readers: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	endless := "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n) SELECT count(*) FROM n"
	run := func(ctx context.Context, sql ...string) ([]api.Result, error) {
		t.Helper()
		stmts := make([]api.Statement, len(sql))
		for i, s := range sql {
			stmts[i] = api.Statement{SQL: s}
		}
		p, err := db.Prepare(context.Background(), stmts)
		if err != nil {
			t.Fatal(err)
		}
		type out struct {
			res []api.Result
			err error
		}
		ch := make(chan out, 1)
		go func() {
			res, _, err := p.Run(ctx, 0)
			ch <- out{res, err}
		}()
		select {
		case o := <-ch:
			return o.res, o.err
		case <-time.After(30 * time.Second):
			t.Fatal("the read was not interrupted")
			return nil, nil
		}
	}
	for _, tt := range []struct {
		name string
		sql  []string
	}{
		{"first statement", []string{endless}},
		{"second statement", []string{"SELECT 1", endless}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if _, err := run(ctx, tt.sql...); !errors.Is(err, api.ErrReadTimeout) {
				t.Fatalf("got %v, want read_timeout", err)
			}
			if res, err := run(context.Background(), "SELECT 42"); err != nil || res[0].Error != "" || res[0].Values[0][0] != int64(42) {
				t.Fatalf("the next read: %+v %v", res, err)
			}
		})
	}
	// A context that ended before the read began, or that ends between two
	// statements (the first too short for the progress handler to look):
	// read_timeout (504), never a number without a code.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	between := &endsAfter{Context: context.Background(), checks: 1}
	for name, tc := range map[string]struct {
		ctx context.Context
		sql []string
	}{"before the read": {ended, []string{"SELECT 1"}}, "between statements": {between, []string{"SELECT 1", "SELECT 2"}}} {
		t.Run(name, func(t *testing.T) {
			_, err := run(tc.ctx, tc.sql...)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Kind != api.KindReadTimeout || ae.Code != api.CodeGatewayTimeout {
				t.Fatalf("got %#v (%v), want read_timeout 504", ae, err)
			}
		})
	}
	// A context ending as the read ends: whatever the read got, the next
	// read on the connection is not interrupted.
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go cancel()
		run(ctx, "SELECT 1")
		if res, err := run(context.Background(), "SELECT 2"); err != nil || res[0].Error != "" {
			t.Fatalf("round %d: the next read: %+v %v", i, res, err)
		}
	}
}

// TestPlan_ColumnsAfterSchemaChange checks a cached statement's columns
// follow a schema change that SQLite handles by preparing the statement
// again while it runs (SELECT * after ALTER TABLE ADD COLUMN).
func TestPlan_ColumnsAfterSchemaChange(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "c.sqlite"), Options{Node: "n1", Readers: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	columns := func() ([]string, []any) {
		t.Helper()
		p, err := db.Prepare(context.Background(), []api.Statement{{SQL: "SELECT * FROM t"}})
		if err != nil {
			t.Fatal(err)
		}
		res, _, err := p.Run(context.Background(), 0)
		if err != nil || res[0].Error != "" {
			t.Fatalf("read: %+v %v", res, err)
		}
		return res[0].Columns, res[0].Values[0]
	}
	applyOutcome(t, db, 1, entry(0, 0, false, "CREATE TABLE t(a)", "INSERT INTO t VALUES(1)"))
	if got, _ := columns(); !reflect.DeepEqual(got, []string{"a"}) {
		t.Fatalf("columns: got %v, want [a]", got)
	}
	applyOutcome(t, db, 2, entry(0, 0, false, "ALTER TABLE t ADD COLUMN b DEFAULT 2"))
	for i := 0; i < 2; i++ {
		got, row := columns()
		if !reflect.DeepEqual(got, []string{"a", "b"}) || len(row) != 2 {
			t.Fatalf("read %d after ALTER TABLE: columns %v, row %v; want [a b] and 2 values", i+1, got, row)
		}
	}
}

// endsAfter is a context whose Err is nil for its first checks calls and
// context.DeadlineExceeded from then on: it ends at a chosen point of a
// read, not at a time.
type endsAfter struct {
	context.Context
	mu     sync.Mutex
	checks int
}

func (c *endsAfter) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checks > 0 {
		c.checks--
		return nil
	}
	return context.DeadlineExceeded
}
