package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/service/api"
)

// Loader fetches the object a load entry names into a new file in dir and
// returns its path. An error wrapping ErrLoadInvalid is final and the same
// on every node (no such object, another digest): the entry is skipped.
// Any other error is retried: a node never skips a load another node made.
type Loader func(ctx context.Context, l *Load, dir string) (string, error)

// ErrLoadInvalid marks a load entry every node refuses the same way.
var ErrLoadInvalid = errors.New("load refused")

// applyLoad replaces the database with the object of a load entry at
// sequence seq: a SQLite file (checked with quick_check), or SQL text run
// on an empty database like one entry (same time and seed on every node).
// The new file records seq as its applied sequence.
func (db *DB) applyLoad(seq uint64, e *Entry) error {
	if db.loader == nil {
		return fmt.Errorf("apply entry %d: a load entry, but this node has no loader", seq)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := dirOf(db.path)
	path, err := db.loader(ctx, e.Load, dir)
	if err == nil {
		path, err = db.prepareLoad(seq, e, path)
	}
	if errors.Is(err, ErrLoadInvalid) {
		db.log.Warn("load entry refused: skipped by every node", "seq", seq, "object", e.Load.Object, "err", err)
		if serr := db.markApplied(seq); serr != nil {
			return serr
		}
		db.deliver(e.Token, Outcome{Seq: seq, Results: []api.Result{{Error: err.Error()}}})
		return nil
	}
	if err != nil {
		return fmt.Errorf("apply load entry %d: %w", seq, err)
	}
	if err := db.replaceLocked(path); err != nil {
		os.Remove(path)
		return fmt.Errorf("apply load entry %d: %w", seq, err)
	}
	db.log.Info("database loaded", "seq", seq, "object", e.Load.Object)
	db.deliver(e.Token, Outcome{Seq: seq, Results: []api.Result{{Write: true}}})
	return nil
}

// prepareLoad turns a fetched object into an nqlite database file holding
// seq as its applied sequence.
func (db *DB) prepareLoad(seq uint64, e *Entry, path string) (string, error) {
	if e.Load.SQL {
		script, err := os.ReadFile(path)
		os.Remove(path)
		if err != nil {
			return "", err
		}
		out := path + ".db"
		os.Remove(out)
		tmp, err := Open(out, Options{Readers: 1, Logger: db.log})
		if err != nil {
			return "", err
		}
		le := &Entry{Time: e.Time, Seed: e.Seed}
		for _, q := range api.Split(string(script)) {
			le.Statements = append(le.Statements, api.Statement{SQL: q})
		}
		if len(le.Statements) > 0 {
			err = tmp.ApplyBatch([]Msg{{Seq: seq, Data: le.Encode()}})
		} else {
			err = tmp.markApplied(seq)
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(out)
			return "", err
		}
		return out, nil
	}
	c, err := openConn(path, sqlite.OpenReadWrite|sqlite.OpenNoMutex)
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("%w: not a SQLite file: %v", ErrLoadInvalid, err)
	}
	check := ""
	err = sqlitex.ExecuteTransient(c, "PRAGMA quick_check", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		if check == "" {
			check = s.ColumnText(0)
		}
		return nil
	}})
	if err == nil && check != "ok" {
		err = errors.New(check)
	}
	if err == nil {
		// These writes' rollback journal draws from SQLite's generator.
		prngMu.Lock()
		err = sqlitex.ExecuteScript(c, `PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS _nqlite_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR REPLACE INTO _nqlite_meta(key, value) VALUES('applied_seq', `+fmt.Sprint(seq)+`);`, nil)
		prngMu.Unlock()
	}
	c.Close()
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("%w: not a usable SQLite database: %v", ErrLoadInvalid, err)
	}
	return path, nil
}

// markApplied records seq as applied without other change.
func (db *DB) markApplied(seq uint64) error {
	if err := db.w.exec("UPDATE _nqlite_meta SET value = ? WHERE key = 'applied_seq'", int64(seq)); err != nil {
		return err
	}
	db.setApplied(seq)
	return nil
}
