package apply

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"regexp"
	"unicode/utf8"

	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/nqlite/nqlite/service/api"
)

// Loader fetches the object a load entry at stream sequence seq names into
// a new file in dir and returns its path. An error wrapping ErrLoadInvalid
// is final and the same on every node (no such object, another digest):
// the entry is skipped. Any other error is retried: a node never skips a
// load another node made.
//
// snap reports that the file is not the load object but a stored snapshot
// holding seq or a later sequence: the object is gone because a snapshot
// covers the entry (load objects are deleted then), so the node takes that
// snapshot instead; its own applied sequence is kept.
type Loader func(ctx context.Context, seq uint64, l *Load, dir string) (path string, snap bool, err error)

// ErrLoadInvalid marks a load entry every node refuses the same way.
var ErrLoadInvalid = errors.New("load refused")

// applyLoad replaces the database with the object of a load entry at
// sequence seq: a SQLite file (checked with quick_check), or SQL text run
// on an empty database like one entry (same time and seed on every node).
// The new file records seq as its applied sequence.
//
// The new file holds the change counts of the old one plus one reset
// (for an entry in format version 3 or later), and OnChanges gets the
// reset before the file is swapped. Its running digest continues the old
// file's chain: SHA-256(prev || seq || 'L' || data), data the entry's
// message (every node fetched the same object); a load every node
// refuses advances it with 'N' in place of 'L'. A stored snapshot taken
// in place of a deleted object brings its own digest.
func (db *DB) applyLoad(seq uint64, e *Entry, data []byte) error {
	countsReset := counted(data)
	if db.loader == nil {
		return fmt.Errorf("apply entry %d: a load entry, but this node has no loader", seq)
	}
	if seq <= db.applied.Load() {
		return nil // in the snapshot an earlier load entry of this batch restored
	}
	ctx := db.actx
	dir := dirOf(db.path)
	path, snap, err := db.loader(ctx, seq, e.Load, dir)
	counts := db.counts.clone()
	if countsReset {
		counts.Resets++
	}
	dst := db.Digest()
	dst.Seq, dst.Digest = seq, db.dig.step(dst.Digest, seq, digestLoad, data)
	var reqs []requestRecord
	if err == nil && !snap && loadKeepsRequests(data) {
		reqs, err = db.liveRequests(e.Time)
		if err != nil {
			os.Remove(path)
		}
	}
	if err == nil {
		path, err = db.prepareLoad(seq, e, path, snap, counts, dst, reqs)
	}
	if err == nil && !snap && countsReset && db.onChanges != nil {
		if cerr := db.onChanges(ctx, db.counts, []EntryChanges{{Seq: seq, Time: e.Time, Node: e.Node, Reset: true}}); cerr != nil {
			os.Remove(path)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("apply load entry %d: changes: %w", seq, cerr)
		}
	}
	if errors.Is(err, ErrLoadInvalid) {
		db.log.Warn("load entry refused: skipped by every node", "seq", seq, "object", e.Load.Object, "err", err)
		if serr := db.markApplied(seq, db.dig.step(db.Digest().Digest, seq, digestNoLoad, data)); serr != nil {
			return serr
		}
		db.deliver(e.Token, Outcome{Seq: seq, Results: []api.Result{{Error: err.Error()}}})
		return nil
	}
	if err != nil {
		return fmt.Errorf("apply load entry %d: %w", seq, err)
	}
	db.keepRing = !snap // the chain goes on (a snapshot's is its own)
	err = db.replaceLocked(path)
	db.keepRing = false
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("apply load entry %d: %w", seq, err)
	}
	if db.onDigest != nil {
		db.onDigest(db.Digest())
	}
	if snap {
		db.log.Info("load object deleted: took the stored snapshot that covers the load entry", "seq", seq, "object", e.Load.Object, "snapshot_seq", db.Applied())
		return nil
	}
	db.log.Info("database loaded", "seq", seq, "object", e.Load.Object)
	db.noteSQLite(seq, e)
	db.deliver(e.Token, Outcome{Seq: seq, Results: []api.Result{{Write: true}}})
	return nil
}

// prepareLoad turns a fetched object into an nqlite database file holding
// seq as its applied sequence, counts as its change counts, dst as its
// running digest and reqs as its request ids (snap: a stored snapshot,
// checked to hold seq and used as is).
func (db *DB) prepareLoad(seq uint64, e *Entry, path string, snap bool, counts ChangeCounts, dst DigestState, reqs []requestRecord) (string, error) {
	if snap {
		info, err := ReadSnapshotInfo(db.actx, path)
		if err == nil && info.Seq < seq {
			err = fmt.Errorf("the snapshot holds sequence %d, before the load entry", info.Seq)
		}
		if err != nil {
			os.Remove(path)
			return "", fmt.Errorf("snapshot in place of the deleted load object: %w", err)
		}
		return path, nil
	}
	if e.Load.SQL {
		out := path + ".db"
		err := runLoadSQL(db.actx, path, out, seq, e.Time, e.Seed, e.Budget, db.log, &counts, &dst, reqs)
		os.Remove(path)
		if err != nil {
			return "", err
		}
		return out, nil
	}
	if err := prepareFile(db.actx, path, "", seq, &counts, &dst, reqs); err != nil {
		return "", err
	}
	return path, nil
}

// PrepareLoadFile checks the SQLite file at path and converts it in place
// into what applying a load of it makes on every node (WAL journal mode,
// _nqlite_meta at applied sequence 0), so that a load request can be
// refused before its entry is published. When wal is not "", it is the
// database's write-ahead log (FILE-wal of a WAL database): it is moved to
// path-wal, SQLite recovers the committed transactions it holds, and they
// are checkpointed into path, which is then one self-contained file.
//
// Files in every rollback journal mode (delete, truncate, persist, memory,
// off: the file is the same) and in WAL mode, any page size, auto_vacuum
// and encoding are accepted; the data, user_version and application_id
// are kept. Errors wrap ErrLoadInvalid and say why the file is refused:
// not SQLite (encrypted, compressed, another format), a -wal or -journal
// file rather than a database, corrupt (PRAGMA quick_check), a -wal that
// is not one. path (and wal) are removed on error.
//
// The check and the checkpoint read the whole file: once ctx is done they
// are interrupted and the error wraps ctx.Err(), never ErrLoadInvalid (an
// interrupted check says nothing about the file).
func PrepareLoadFile(ctx context.Context, path, wal string) error {
	return prepareFile(ctx, path, wal, 0, nil, nil, nil)
}

// File signatures (https://sqlite.org/fileformat2.html).
var (
	sqliteMagic  = []byte("SQLite format 3\x00")
	journalMagic = []byte{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7}
)

func isWALMagic(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	m := binary.BigEndian.Uint32(b)
	return m == 0x377f0682 || m == 0x377f0683
}

// checkHeader reads the 100-byte database header of path and returns the
// page size, or why the file is not a SQLite database. An empty file is an
// empty database (page size 0).
func checkHeader(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := make([]byte, 100)
	n, err := io.ReadFull(f, h)
	if n == 0 && err == io.EOF {
		return 0, nil
	}
	switch {
	case isWALMagic(h[:n]):
		return 0, fmt.Errorf("%w: this is a SQLite write-ahead log (a -wal file), not a database: load the database file it belongs to, with this file as its -wal", ErrLoadInvalid)
	case bytes.HasPrefix(h[:n], journalMagic):
		return 0, fmt.Errorf("%w: this is a SQLite rollback journal (a -journal file), not a database: load the database file", ErrLoadInvalid)
	case !bytes.HasPrefix(h[:n], sqliteMagic):
		return 0, fmt.Errorf("%w: not a SQLite database: the file does not start with the SQLite header %q (encrypted, compressed, or another format?)", ErrLoadInvalid, sqliteMagic[:15])
	case n < 100:
		return 0, fmt.Errorf("%w: not a usable SQLite database: %d bytes, shorter than the 100-byte SQLite header (truncated?)", ErrLoadInvalid, n)
	}
	ps := int(binary.BigEndian.Uint16(h[16:18]))
	if ps == 1 {
		ps = 65536
	}
	if ps < 512 || ps&(ps-1) != 0 {
		return 0, fmt.Errorf("%w: not a usable SQLite database: the header's page size %d is invalid (corrupt?)", ErrLoadInvalid, ps)
	}
	if h[18] > 2 || h[19] > 2 {
		return 0, fmt.Errorf("%w: the SQLite file format version is %d/%d: this SQLite reads versions 1 (rollback journal) and 2 (WAL)", ErrLoadInvalid, h[18], h[19])
	}
	return ps, nil
}

// checkWAL checks that wal is a SQLite write-ahead log with pages of
// pageSize bytes.
func checkWAL(wal string, pageSize int) error {
	f, err := os.Open(wal)
	if err != nil {
		return err
	}
	defer f.Close()
	h := make([]byte, 32)
	n, _ := io.ReadFull(f, h)
	if n == 0 {
		return nil // empty: nothing to recover
	}
	if n < 32 || !isWALMagic(h) {
		return fmt.Errorf("%w: the -wal object is not a SQLite write-ahead log", ErrLoadInvalid)
	}
	if ps := int(binary.BigEndian.Uint32(h[8:12])); pageSize != 0 && ps != pageSize {
		return fmt.Errorf("%w: the -wal object has %d-byte pages but the database %d-byte pages: it is another database's write-ahead log", ErrLoadInvalid, ps, pageSize)
	}
	return nil
}

// prepareFile is PrepareLoadFile recording seq as the applied sequence
// and, unless nil, counts as the change counts and dst as the running
// digest (nil: the file keeps no digest, whatever it held: one made by
// another nqlite database is not this one's); reqs are its request ids
// (writeRequests).
func prepareFile(ctx context.Context, path, wal string, seq uint64, counts *ChangeCounts, dst *DigestState, reqs []requestRecord) (err error) {
	removeAll := func() {
		for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
			os.Remove(p)
		}
		if wal != "" {
			os.Remove(wal)
		}
	}
	defer func() {
		if err != nil {
			removeAll()
		}
	}()
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		// Only the file itself (and wal) may decide what the database holds.
		if err := os.Remove(path + suffix); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	pageSize, err := checkHeader(path)
	if err != nil {
		return err
	}
	if wal != "" {
		if err := checkWAL(wal, pageSize); err != nil {
			return err
		}
		if pageSize == 0 {
			return fmt.Errorf("%w: the database file is empty but has a -wal: a write-ahead log without its database", ErrLoadInvalid)
		}
		if err := os.Rename(wal, path+"-wal"); err != nil {
			return err
		}
	}
	c, err := openConn(path, sqlite.OpenReadWrite|sqlite.OpenNoMutex)
	if err != nil {
		return fmt.Errorf("%w: not a usable SQLite database: %v", ErrLoadInvalid, err)
	}
	defer func() {
		if cerr := closeSQLite(c); err == nil && cerr != nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	defer interruptOn(ctx, c, &err, "prepare the loaded database")()
	check := ""
	err = sqlitex.ExecuteTransient(c, "PRAGMA quick_check", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		if check == "" {
			check = s.ColumnText(0)
		}
		return nil
	}})
	if err != nil {
		return fmt.Errorf("%w: not a usable SQLite database: %v", ErrLoadInvalid, err)
	}
	if check != "ok" {
		return fmt.Errorf("%w: the SQLite database is corrupt: PRAGMA quick_check: %s", ErrLoadInvalid, check)
	}
	// These writes draw from SQLite's generator (journal nonces, the WAL
	// salt): never in the middle of an apply statement (prng.go).
	prngMu.Lock()
	defer prngMu.Unlock()
	// Outside any transaction: SQLite cannot change into WAL mode in one
	// (sqlitex.ExecuteScript would wrap this in a savepoint).
	mode := ""
	err = sqlitex.ExecuteTransient(c, "PRAGMA journal_mode=WAL", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		mode = s.ColumnText(0)
		return nil
	}})
	if err == nil && mode != "wal" {
		err = fmt.Errorf("the journal mode stays %q", mode)
	}
	if err != nil {
		return fmt.Errorf("%w: cannot switch the SQLite database to WAL mode: %v", ErrLoadInvalid, err)
	}
	script := `CREATE TABLE IF NOT EXISTS _nqlite_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR REPLACE INTO _nqlite_meta(key, value) VALUES('applied_seq', ` + fmt.Sprint(seq) + `);`
	if counts != nil {
		script += "\n" + countsSQL(*counts)
	}
	if dst != nil {
		script += "\n" + digestSQL(*dst)
	} else {
		script += "\nDROP TABLE IF EXISTS " + digestTable + ";"
	}
	// Request ids are the stream's, not the file's: the loaded file holds
	// the replaced database's (reqs), never its own (another database's).
	script += "\nDROP TABLE IF EXISTS " + requestsTable + ";"
	err = sqlitex.ExecuteScript(c, script, nil)
	if err != nil {
		return fmt.Errorf("%w: cannot record the applied sequence in the database: %v", ErrLoadInvalid, err)
	}
	if err := writeRequests(c, reqs); err != nil {
		return err // a local failure (the file was usable): retried, never skipped
	}
	// Everything into the file itself: the caller moves path alone.
	var busy, log, done int
	err = sqlitex.ExecuteTransient(c, "PRAGMA wal_checkpoint(TRUNCATE)", &sqlitex.ExecOptions{ResultFunc: func(s *sqlite.Stmt) error {
		busy, log, done = s.ColumnInt(0), s.ColumnInt(1), s.ColumnInt(2)
		return nil
	}})
	if err == nil && (busy != 0 || log != done) {
		err = fmt.Errorf("checkpointed %d of %d frames", done, log)
	}
	if err != nil {
		return fmt.Errorf("checkpoint the loaded database: %w", err)
	}
	return nil
}

// sqliteDumpFK is the line sqlite3's .dump starts with. nqlite never
// enforces foreign keys and refuses the pragma in requests, so a load
// leaves it out (as nqctl's .dump does).
var sqliteDumpFK = regexp.MustCompile(`(?i)^\s*PRAGMA\s+foreign_keys\s*=\s*(OFF|0|false|no)\s*;?\s*$`)

// CheckLoadSQL runs the SQL text at path as a load of it would (see
// runLoadSQL) on a scratch database, with the entry's time and seed, and
// removes it: a load request whose dump every node would refuse is refused
// before its entry is published. Errors wrap ErrLoadInvalid.
func CheckLoadSQL(ctx context.Context, path string, entryTime, seed int64, budget Budget) error {
	out := path + ".check.db"
	defer os.Remove(out)
	return runLoadSQL(ctx, path, out, 1, entryTime, seed, budget, nil, nil, nil, nil)
}

// runLoadSQL runs the SQL text at script on a new database at out, as one
// entry at seq with the load entry's time and seed (so every node makes
// the same file). The text must be UTF-8 and every statement must
// succeed, or the load is refused (ErrLoadInvalid, naming the statement):
// a dump that loads partly would silently drop data. sqlite3's
// "PRAGMA foreign_keys=OFF;" is left out. Unless nil, counts become the
// new database's change counts, and dst its running digest.
func runLoadSQL(ctx context.Context, script, out string, seq uint64, entryTime, seed int64, budget Budget, logger *slog.Logger, counts *ChangeCounts, dst *DigestState, reqs []requestRecord) error {
	text, err := os.ReadFile(script)
	if err != nil {
		return err
	}
	if !utf8.Valid(text) {
		i := 0
		for i < len(text) {
			r, n := utf8.DecodeRune(text[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return fmt.Errorf("%w: the SQL text is not valid UTF-8 (at byte %d): a binary file, or text in another encoding", ErrLoadInvalid, i)
	}
	for _, p := range []string{out, out + "-wal", out + "-shm"} {
		os.Remove(p)
	}
	tmp, err := Open(out, Options{Readers: 1, Node: "load", Logger: logger})
	if err != nil {
		return err
	}
	le := &Entry{Node: "load", Token: "load", Time: entryTime, Seed: seed}
	for _, q := range api.Split(string(text)) {
		if sqliteDumpFK.MatchString(q) {
			continue
		}
		le.Statements = append(le.Statements, api.Statement{SQL: q})
	}
	// The dump runs as one entry whose budget is the load entry's for each
	// of its statements (a dump is many small statements).
	n, bu := uint64(len(le.Statements)), budget.orBase()
	le.Budget = Budget{Steps: satMul(bu.Steps, n, MaxSteps), Bytes: satMul(bu.Bytes, n, math.MaxUint64)}
	var res []api.Result
	if len(le.Statements) > 0 {
		ch, stop := tmp.Await(le.Token)
		err = tmp.ApplyBatch(ctx, []Msg{{Seq: seq, Data: le.Encode()}})
		select {
		case o := <-ch:
			res = o.Results
		default:
		}
		stop()
	} else {
		err = tmp.markApplied(seq, Digest{})
	}
	if err == nil && counts != nil {
		err = tmp.writeCounts(*counts)
	}
	if err == nil && dst != nil {
		err = tmp.writeDigest(*dst)
	}
	if err == nil {
		err = tmp.writeRequests(reqs)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		for i, r := range res {
			if r.Error != "" {
				err = fmt.Errorf("%w: the SQL text's statement %d fails: %s: %s", ErrLoadInvalid, i+1, r.Error, abbrev(le.Statements[i].SQL))
				break
			}
		}
	}
	if err != nil {
		for _, p := range []string{out, out + "-wal", out + "-shm"} {
			os.Remove(p)
		}
		return err
	}
	return nil
}

// abbrev shortens a statement for an error message.
func abbrev(sql string) string {
	if len(sql) <= 80 {
		return sql
	}
	cut := 77
	for cut > 0 && !utf8.RuneStart(sql[cut]) {
		cut--
	}
	return sql[:cut] + "..."
}

// markApplied records seq as applied, with running digest d, without
// other change.
func (db *DB) markApplied(seq uint64, d Digest) error {
	// One transaction: the digest is always the applied sequence's.
	if err := db.w.exec("BEGIN IMMEDIATE"); err != nil {
		return err
	}
	err := db.w.exec("UPDATE _nqlite_meta SET value = ? WHERE key = 'applied_seq'", int64(seq))
	if err == nil {
		err = db.w.exec(storeDigestSQL, d[:])
	}
	if err == nil {
		err = db.w.exec("COMMIT")
	}
	if err != nil {
		rollback(db.w)
		return err
	}
	db.commitDigests([]uint64{seq}, []Digest{d})
	db.setApplied(seq)
	return nil
}

// writeDigest replaces the running digest stored in the database (a
// load's new file) with st.
func (db *DB) writeDigest(st DigestState) error {
	db.w.lockPRNG() // a write may start a WAL (its salt draws)
	defer db.w.unlockPRNG()
	db.w.rec.internal = true
	defer func() { db.w.rec.internal = false }()
	return sqlitex.ExecuteScript(db.w.c, digestSQL(st), nil)
}

// writeRequests writes reqs into the request ids table of the database
// (a load's new file, which holds none).
func (db *DB) writeRequests(reqs []requestRecord) error {
	db.w.lockPRNG()
	defer db.w.unlockPRNG()
	db.w.rec.internal = true
	defer func() { db.w.rec.internal = false }()
	return writeRequests(db.w.c, reqs)
}

// writeCounts replaces the change counts stored in the database (a load's
// new file) with counts.
func (db *DB) writeCounts(counts ChangeCounts) error {
	db.w.rec.internal = true
	defer func() { db.w.rec.internal = false }()
	return sqlitex.ExecuteScript(db.w.c, countsSQL(counts), nil)
}
