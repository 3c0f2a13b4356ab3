package apply

import (
	"context"
	"fmt"
	"os"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// SnapshotInfo describes a snapshot file written by Snapshot.
type SnapshotInfo struct {
	// Seq is the stream sequence the snapshot holds: every entry up to and
	// including Seq is in it, none after.
	Seq uint64
	// Pages is the SQLite page count, PageSize its page size in bytes.
	Pages    int64
	PageSize int64
}

// Snapshot writes a consistent point-in-time copy of the database to dst
// with VACUUM INTO (https://sqlite.org/lang_vacuum.html#vacuuminto) on a
// connection of its own: reads and writes go on meanwhile (WAL). The copy
// holds its own applied sequence in _nqlite_meta. dst must not exist.
func (db *DB) Snapshot(ctx context.Context, dst string) (SnapshotInfo, error) {
	db.fileMu.RLock()
	defer db.fileMu.RUnlock()
	if db.closed.Load() {
		return SnapshotInfo{}, ErrClosed
	}
	c, err := sqlite.OpenConn(db.path, sqlite.OpenReadOnly|sqlite.OpenNoMutex)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	defer closeSQLite(c)
	c.SetInterrupt(ctx.Done())
	if err := sqlitex.ExecuteTransient(c, "VACUUM INTO ?", &sqlitex.ExecOptions{Args: []any{dst}}); err != nil {
		os.Remove(dst)
		return SnapshotInfo{}, fmt.Errorf("snapshot: vacuum into: %w", err)
	}
	info, err := ReadSnapshotInfo(dst)
	if err != nil {
		os.Remove(dst)
	}
	return info, err
}

// ReadSnapshotInfo checks a SQLite file with PRAGMA quick_check and reads
// the applied sequence and page count it holds. A file that is not a
// SQLite database, fails the check or has no nqlite sequence is an error.
func ReadSnapshotInfo(path string) (SnapshotInfo, error) {
	var info SnapshotInfo
	if _, err := os.Stat(path); err != nil {
		return info, err
	}
	// Read-write (never create), so a WAL left by a crash is recovered.
	c, err := sqlite.OpenConn(path, sqlite.OpenReadWrite|sqlite.OpenWAL|sqlite.OpenNoMutex)
	if err != nil {
		return info, fmt.Errorf("%s: %w", path, err)
	}
	defer closeSQLite(c)
	check := ""
	err = sqlitex.ExecuteTransient(c, "PRAGMA quick_check", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		if check == "" {
			check = s.ColumnText(0)
		}
		return nil
	}})
	if err != nil {
		return info, fmt.Errorf("%s: quick_check: %w", path, err)
	}
	if check != "ok" {
		return info, fmt.Errorf("%s: quick_check: %s", path, check)
	}
	found := false
	err = sqlitex.ExecuteTransient(c, "SELECT value FROM _nqlite_meta WHERE key = 'applied_seq'", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		info.Seq, found = uint64(s.ColumnInt64(0)), true
		return nil
	}})
	if err != nil {
		return info, fmt.Errorf("%s: not an nqlite database: %w", path, err)
	}
	if !found {
		return info, fmt.Errorf("%s: not an nqlite database: no applied sequence", path)
	}
	for q, dst := range map[string]*int64{"PRAGMA page_count": &info.Pages, "PRAGMA page_size": &info.PageSize} {
		err := sqlitex.ExecuteTransient(c, q, &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
			*dst = s.ColumnInt64(0)
			return nil
		}})
		if err != nil {
			return info, fmt.Errorf("%s: %s: %w", path, q, err)
		}
	}
	return info, nil
}
