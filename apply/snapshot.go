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
	// Digest is the running digest the file holds, as of Seq (Format 0:
	// the file carries none, made by a node before digests).
	Digest DigestState
	// Content is the file's content hash (ContentHash.Hash), computed by
	// Snapshot after the copy; ReadSnapshotInfo leaves it zero (HashFile
	// computes it).
	Content Digest
}

// Snapshot writes a consistent point-in-time copy of the database to dst
// on connections of its own: reads and writes go on meanwhile (WAL). The
// copy holds its own applied sequence in _nqlite_meta. dst must not exist.
//
// The copy is page for page (SQLite's backup API, free pages included,
// https://sqlite.org/backup.html), so a node restored from it holds the
// same bytes as the node that made it and, from there on, as every node
// that replayed the stream: page numbers, sqlite_schema.rootpage and
// page_count agree everywhere. (VACUUM INTO, used before, repacks the
// file, so a restored node's layout differed; it also draws from SQLite's
// generator in the middle of the apply's statements.) Only the header's
// schema cookie, which the backup API sets to 1, is put back to the
// source's, and the file change counters, which count writes to the file,
// differ.
func (db *DB) Snapshot(ctx context.Context, dst string) (SnapshotInfo, error) {
	db.fileMu.RLock()
	defer db.fileMu.RUnlock()
	if db.closed.Load() {
		return SnapshotInfo{}, ErrClosed
	}
	if _, err := os.Stat(dst); err == nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: %s exists", dst)
	}
	if err := copyPages(ctx, db.path, dst); err != nil {
		os.Remove(dst)
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	info, err := ReadSnapshotInfo(ctx, dst)
	if err == nil {
		var h ContentHash
		if h, err = HashFile(ctx, dst); err == nil {
			info.Content = h.Hash
		}
	}
	if err != nil {
		os.Remove(dst)
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	return info, nil
}

// copyPages copies the database at src, as of one read transaction, to the
// new file dst, page for page.
func copyPages(ctx context.Context, src, dst string) error {
	sc, err := openConn(src, sqlite.OpenReadOnly|sqlite.OpenNoMutex)
	if err != nil {
		return err
	}
	defer closeSQLite(sc)
	// Pin one read transaction: every step of the backup copies the same
	// version of the database, and schema_version is that version's.
	if err := sqlitex.ExecuteTransient(sc, "BEGIN", nil); err != nil {
		return err
	}
	defer sqlitex.ExecuteTransient(sc, "ROLLBACK", nil)
	var cookie int64
	err = sqlitex.ExecuteTransient(sc, "PRAGMA schema_version", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		cookie = s.ColumnInt64(0)
		return nil
	}})
	if err != nil {
		return err
	}
	dc, err := openConn(dst, sqlite.OpenReadWrite|sqlite.OpenCreate|sqlite.OpenNoMutex)
	if err != nil {
		return err
	}
	defer closeSQLite(dc)
	// No journal for a file nobody uses yet (a rollback journal's header
	// would draw from SQLite's generator).
	if err := sqlitex.ExecuteTransient(dc, "PRAGMA journal_mode=OFF", nil); err != nil {
		return err
	}
	b, err := sqlite.NewBackup(dc, "main", sc, "main")
	if err != nil {
		return err
	}
	for more := true; more; {
		if err := ctx.Err(); err != nil {
			b.Close()
			return err
		}
		more, err = b.Step(1024)
		if err != nil && !more {
			b.Close()
			return err
		}
	}
	b.Close()
	// The copied header puts the file in WAL mode: this write starts a
	// new WAL, whose salt is drawn from SQLite's generator.
	prngMu.Lock()
	defer prngMu.Unlock()
	return sqlitex.ExecuteTransient(dc, fmt.Sprintf("PRAGMA schema_version=%d", cookie), nil)
}

// ReadSnapshotInfo checks a SQLite file with PRAGMA quick_check and reads
// the applied sequence, running digest and page count it holds. A file that is not a
// SQLite database, fails the check or has no nqlite sequence is an error.
// The check reads the whole file: once ctx is done it is interrupted and
// the error wraps ctx.Err() (which says nothing about the file).
func ReadSnapshotInfo(ctx context.Context, path string) (info SnapshotInfo, err error) {
	if _, err := os.Stat(path); err != nil {
		return info, err
	}
	// Read-write (never create), so a WAL left by a crash is recovered.
	c, err := openConn(path, sqlite.OpenReadWrite|sqlite.OpenWAL|sqlite.OpenNoMutex)
	if err != nil {
		return info, fmt.Errorf("%s: %w", path, err)
	}
	defer closeSQLite(c)
	defer interruptOn(ctx, c, &err, path)()
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
	if err := readFileDigest(c, &info); err != nil {
		return info, fmt.Errorf("%s: %w", path, err)
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

// readFileDigest reads the running digest a file holds (_nqlite_digest)
// into info (none: Format 0).
func readFileDigest(c *sqlite.Conn, info *SnapshotInfo) error {
	info.Digest = DigestState{Seq: info.Seq}
	exists := false
	err := sqlitex.ExecuteTransient(c, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '"+digestTable+"'", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		exists = true
		return nil
	}})
	if err != nil || !exists {
		return err
	}
	return sqlitex.ExecuteTransient(c, "SELECT digest, origin, format FROM "+digestTable+" WHERE id = 1", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		if s.ColumnLen(0) != len(info.Digest.Digest) {
			return fmt.Errorf("%s: digest of %d bytes, want %d", digestTable, s.ColumnLen(0), len(info.Digest.Digest))
		}
		s.ColumnBytes(0, info.Digest.Digest[:])
		info.Digest.Origin = uint64(s.ColumnInt64(1))
		info.Digest.Format = int(s.ColumnInt64(2))
		return nil
	}})
}
