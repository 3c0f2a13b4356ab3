package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nqlite/nqlite/service/api"
	"zombiezen.com/go/sqlite"
)

// applyBusyTimeout is how long the apply connection waits for a lock
// another process holds on the database file before the batch fails as a
// local failure (see open).
const applyBusyTimeout = 100 * time.Millisecond

// walAutocheckpoint is how many frames the WAL holds before the commit
// that grows it past them checkpoints it (PRAGMA wal_autocheckpoint on the
// apply connection; PASSIVE, as SQLite's automatic checkpoints are). The
// checkpoint runs inside that commit, on the apply goroutine; the
// background checkpoints (walckpt.go) leave it little to copy, and it
// restarts the WAL. 4,096 frames of 4 KiB pages is a WAL of at most about
// 16 MiB per database.
const walAutocheckpoint = 4096

// Options configure Open.
type Options struct {
	// Node is this node's id; entries it published carry it.
	Node string
	// Readers is the number of read-only connections serving local reads
	// (default 4).
	Readers int
	// Logger receives skipped entries and apply errors (default slog.Default()).
	Logger *slog.Logger
	// MaxPages, when set, is the most pages the database file may hold
	// (PRAGMA max_page_count on the apply connection). Reaching it is a
	// local failure like a full disk (see ErrLocal): the node stops
	// applying until it is reopened with room. It bounds a node's disk use,
	// and lets tests make a disk full.
	MaxPages int64
	// Loader fetches the objects of load entries (nqctl restore); without
	// one, a load entry stops the apply with an error.
	Loader Loader
	// OnChanges, when set, receives the row changes of every batch before
	// it commits (see ChangesFunc); the capture then keeps their values.
	// Without it, changes are still counted (ChangeCounts), which every
	// node does alike.
	OnChanges ChangesFunc
	// OnDigest, when set, is called after every commit that applied
	// messages (a batch, a load, a refused load), with the running digest
	// as of the last sequence it applied (see Digest; DigestAt has those
	// before it). It runs on the apply goroutine, before the next batch:
	// it must be quick and must not call into the DB's apply (ApplyBatch,
	// Hold, Replace, ContentHashAt).
	OnDigest func(DigestState)
	// Mutate is for tests only: when set, it is called with each entry
	// after it is decoded and before this node applies it, and may change
	// it (a parameter, a statement), so a test can make one node apply an
	// entry differently from the others (a divergence) without editing
	// the code under test. Never set it in a node that serves users.
	Mutate func(seq uint64, e *Entry)
}

// DB is one replicated database on this node: its SQLite file, the apply
// connection that alone writes it, a pool of read-only connections for
// local reads, and the applied stream sequence.
type DB struct {
	path      string
	node      string
	maxPages  int64
	log       *slog.Logger
	loader    Loader
	onChanges ChangesFunc

	w      *conn        // the apply connection: only the apply goroutine uses it
	meter  *meter       // counts entries' budgets on w
	helper *sqlite.Conn // plain in-memory connection for deterministic date/time
	hstmts map[string]*sqlite.Stmt
	clock  entryClock

	readers chan *conn
	nread   int // readers wanted
	nopen   int // readers opened

	applied  atomic.Uint64
	held     atomic.Int32 // read connections holding a snapshot (readsnap.go)
	skipped  atomic.Uint64
	waiting  atomic.Int64 // callers blocked in WaitApplied
	mu       sync.Mutex
	advanced chan struct{} // closed and replaced each time applied moves

	waitMu  sync.Mutex
	waiters map[string]chan Outcome

	countsMu sync.Mutex   // guards counts for ChangeCounts; apply writes it under applyMu too
	counts   ChangeCounts // committed change counts (replicated state, see ChangeCounts)
	// countsExist: the database holds the counts table (under applyMu).
	countsExist bool
	// requestsExist: the database holds the request ids table
	// (_nqlite_requests; under applyMu).
	requestsExist bool

	ckpt *walCheckpointer // background WAL checkpoints (walckpt.go); nil while closed

	foreign atomic.Uint64   // entries applied that another SQLite version accepted
	logged  map[string]bool // SQLite versions of foreign entries already logged (under applyMu)
	// traceCost, when set (tests), gets what each applied entry spent of
	// its budget, once its batch commits.
	traceCost func(seq uint64, spent Budget)

	// The running digest (digest.go): dstate is as of the applied
	// sequence, ring has the last digestRing sequences' (DigestAt);
	// digestMu guards both for readers, the apply writes them under
	// applyMu. keepRing: the next open keeps the ring (a load continues
	// the chain; a restore starts another).
	onDigest func(DigestState)
	mutate   func(seq uint64, e *Entry)
	digestMu sync.Mutex
	dstate   DigestState
	ring     [digestRing]ringSlot
	keepRing bool
	dig      *digester
	// Scratch buffers of the entry being applied (under applyMu).
	denc   []byte
	dends  []int
	dreads []bool

	// pins are ContentHashAt calls waiting for a sequence (contenthash.go).
	pinMu sync.Mutex
	pins  []*pin

	closed atomic.Bool

	applyMu sync.Mutex      // held while a batch is applied, and by Hold
	actx    context.Context // the context of the batch being applied (under applyMu)
	fileMu  sync.RWMutex    // Replace holds it to swap the file; Snapshot reads under it
}

// Outcome is the result of applying one entry, delivered to the request
// that published it.
//
// A request of a format version 4 entry whose idempotency key is recorded
// in the database (an earlier request with that key was applied, within
// the entry's Keep) is not run: its Outcome has Duplicate set, Seq the
// sequence of the entry that applied the earlier request, and no Results.
type Outcome struct {
	Seq       uint64
	Results   []api.Result
	Duplicate bool
}

// ErrClosed is returned by operations on a closed DB.
var ErrClosed = errors.New("database is closed")

// Open opens (creating if needed) the SQLite file at path in WAL mode and
// reads the applied sequence stored in it.
func Open(path string, opts Options) (*DB, error) {
	if allocInstallErr != nil {
		return nil, fmt.Errorf("open %s: install the value allocator: %w", path, allocInstallErr)
	}
	if opts.Readers <= 0 {
		opts.Readers = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	db := &DB{path: path, node: opts.Node, maxPages: opts.MaxPages, log: opts.Logger, loader: opts.Loader, onChanges: opts.OnChanges, advanced: make(chan struct{}),
		waiters: make(map[string]chan Outcome), nread: opts.Readers, logged: map[string]bool{},
		onDigest: opts.OnDigest, mutate: opts.Mutate, dig: newDigester()}
	if err := db.open(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

func (db *DB) open() error {
	wc, err := openConn(db.path, sqlite.OpenReadWrite|sqlite.OpenCreate|sqlite.OpenWAL|sqlite.OpenNoMutex)
	if err != nil {
		return err
	}
	// Only another process writing the file (or checkpointing it) makes
	// the apply connection wait for a lock: nqlite's own readers never
	// block it (WAL). Its statements, and so its busy waits, run with the
	// process-wide prngMu held, which every other database's apply and
	// every read's prepare on this node need: so the wait is short, and a
	// lock held longer is a local failure (ErrLocal), retried with backoff
	// by the caller outside the lock while the node reports it.
	wc.SetBusyTimeout(applyBusyTimeout)
	if db.w, err = newConn(wc); err != nil {
		closeSQLite(wc)
		return err
	}
	db.w.apply = true
	if err := db.w.disableLookaside(); err != nil {
		return err
	}
	for _, q := range []string{
		"PRAGMA journal_mode=WAL",
		// Sorts, temporary b-trees and statement journals stay in memory:
		// a temporary file's name is drawn from SQLite's generator.
		"PRAGMA temp_store=MEMORY",
		// The applied sequence commits with each batch, so a batch lost to a
		// power cut is re-applied from the stream: NORMAL is safe here.
		"PRAGMA synchronous=NORMAL",
		// Freed space is zeroed: what a deleted row leaves in a page (or a
		// page on the freelist) would otherwise depend on how entries were
		// grouped into batches, which differs between nodes, and the files
		// would differ in bytes no query reads.
		"PRAGMA secure_delete=ON",
		fmt.Sprintf("PRAGMA wal_autocheckpoint=%d", walAutocheckpoint),
		"CREATE TABLE IF NOT EXISTS _nqlite_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
		"INSERT OR IGNORE INTO _nqlite_meta(key, value) VALUES('applied_seq', 0)",
	} {
		if err := db.w.exec(q); err != nil {
			return err
		}
	}
	if db.maxPages > 0 {
		if err := db.w.exec(fmt.Sprintf("PRAGMA max_page_count=%d", db.maxPages)); err != nil {
			return err
		}
	}
	if err := wc.SetDefensive(true); err != nil {
		return err
	}
	db.meter = installMeter(db.w, db.onChanges != nil)
	seq, err := db.readApplied(db.w)
	if err != nil {
		return err
	}
	db.applied.Store(seq)
	if err := db.openDigest(seq); err != nil {
		return err
	}
	counts, exists, err := readCounts(db.w)
	if err != nil {
		return err
	}
	db.setCounts(counts)
	db.countsExist = exists
	if db.requestsExist, err = tableExists(db.w, requestsTable); err != nil {
		return err
	}
	if db.helper, err = openConn(":memory:", sqlite.OpenReadWrite|sqlite.OpenMemory|sqlite.OpenNoMutex); err != nil {
		return err
	}
	db.hstmts = map[string]*sqlite.Stmt{}
	if err := installDeterministic(wc, &db.clock, db.helper, db.hstmts); err != nil {
		return err
	}
	if err := installMath(wc); err != nil {
		return err
	}
	if err := installLinearStrings(wc); err != nil {
		return err
	}
	if err := installRefusals(wc); err != nil {
		return err
	}
	if err := db.w.dropModules(applyModules); err != nil {
		return err
	}
	db.readers = make(chan *conn, db.nread)
	for i := 0; i < db.nread; i++ {
		rc, err := openConn(db.path, sqlite.OpenReadOnly|sqlite.OpenWAL|sqlite.OpenNoMutex)
		if err != nil {
			return err
		}
		rc.SetBusyTimeout(5 * time.Second)
		c, err := newConn(rc)
		if err != nil {
			closeSQLite(rc)
			return err
		}
		// Reads never draw from SQLite's generator: random() and
		// randomblob() are Go's, temporary files stay in memory.
		err = installReadRandom(rc)
		if err == nil {
			err = installMath(rc)
		}
		if err == nil {
			err = c.exec("PRAGMA temp_store=MEMORY")
		}
		if err == nil {
			err = c.exec("PRAGMA query_only=1")
		}
		if err != nil {
			c.close()
			return err
		}
		rc.SetDefensive(true)
		c.watchReads()
		db.readers <- c
		db.nopen++
	}
	if db.ckpt, err = startCheckpointer(db.path, db.log); err != nil {
		return err
	}
	return nil
}

func (db *DB) setCounts(c ChangeCounts) {
	db.countsMu.Lock()
	db.counts = c
	db.countsMu.Unlock()
}

func (db *DB) readApplied(c *conn) (uint64, error) {
	cs, err := c.prepare("SELECT value FROM _nqlite_meta WHERE key = 'applied_seq'")
	if err != nil {
		return 0, err
	}
	defer cs.release()
	row, err := cs.stmt.Step()
	if err != nil {
		return 0, err
	}
	if !row {
		return 0, errors.New("applied_seq missing from _nqlite_meta")
	}
	return uint64(cs.stmt.ColumnInt64(0)), nil
}

// Path returns the SQLite file's path.
func (db *DB) Path() string { return db.path }

// Applied returns the last stream sequence whose entry is committed in the
// SQLite file.
func (db *DB) Applied() uint64 { return db.applied.Load() }

// Skipped returns how many stream messages were not valid entries and were
// skipped since Open.
func (db *DB) Skipped() uint64 { return db.skipped.Load() }

// ForeignSQLite returns how many entries this node applied since Open that
// a node on another SQLite version accepted (format version 2 entries
// carry the accepting node's sqlite_version(); version 1 entries are not
// counted). Such an entry may have another outcome here than on the
// accepting node's version (an INSERT ... SELECT without ORDER BY may
// assign other rowids): keep the nodes that accept writes on one SQLite
// version. Each foreign version is logged once.
func (db *DB) ForeignSQLite() uint64 { return db.foreign.Load() }

// noteSQLite counts an applied entry accepted under another SQLite version.
// The caller holds applyMu.
func (db *DB) noteSQLite(seq uint64, e *Entry) {
	if e.SQLite == "" || e.SQLite == SQLiteVersion() {
		return
	}
	db.foreign.Add(1)
	if !db.logged[e.SQLite] {
		db.logged[e.SQLite] = true
		db.log.Warn("applying entries accepted by a node on another SQLite version: outcomes may differ between versions; keep the nodes that accept writes on one version",
			"seq", seq, "entry_sqlite", e.SQLite, "node_sqlite", SQLiteVersion(), "accepted_by", e.Node)
	}
}

// Waiting returns how many callers are blocked in WaitApplied.
func (db *DB) Waiting() int64 { return db.waiting.Load() }

// WaitApplied blocks until Applied() >= seq or ctx is done (returning
// ctx.Err()).
func (db *DB) WaitApplied(ctx context.Context, seq uint64) error {
	if db.applied.Load() >= seq {
		return nil
	}
	db.waiting.Add(1)
	defer db.waiting.Add(-1)
	for {
		db.mu.Lock()
		ch := db.advanced
		db.mu.Unlock()
		if db.applied.Load() >= seq {
			return nil
		}
		if db.closed.Load() {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (db *DB) setApplied(seq uint64) {
	db.applied.Store(seq)
	db.mu.Lock()
	close(db.advanced)
	db.advanced = make(chan struct{})
	db.mu.Unlock()
	db.servePins(seq)
}

// Await registers interest in the outcome of the entry carrying token,
// before it is published. The channel receives one Outcome when this node
// applies that entry. cancel must be called when the caller stops waiting.
func (db *DB) Await(token string) (<-chan Outcome, func()) {
	ch := make(chan Outcome, 1)
	db.waitMu.Lock()
	db.waiters[token] = ch
	db.waitMu.Unlock()
	return ch, func() {
		db.waitMu.Lock()
		delete(db.waiters, token)
		db.waitMu.Unlock()
	}
}

func (db *DB) hasWaiter(token string) bool {
	db.waitMu.Lock()
	defer db.waitMu.Unlock()
	_, ok := db.waiters[token]
	return ok
}

func (db *DB) deliver(token string, o Outcome) {
	db.waitMu.Lock()
	ch, ok := db.waiters[token]
	delete(db.waiters, token)
	db.waitMu.Unlock()
	if ok {
		ch <- o
	}
}

// Hold stops this node from applying entries until release is called; the
// batch being applied finishes first. Tests and fault drills use it to
// make a node lag behind the stream.
func (db *DB) Hold() (release func()) {
	db.applyMu.Lock()
	var once sync.Once
	return func() { once.Do(db.applyMu.Unlock) }
}

// ErrUnavailable is returned by reads when the database file could not be
// opened again after a Replace (the error was returned to Replace's
// caller, who retries).
var ErrUnavailable = api.Errorf(api.CodeUnavailable, "this node's copy of the database is being replaced and is not open: retry shortly, or ask another node")

// Replace swaps the database file for the SQLite file at src (a verified
// snapshot, moved into place with rename, so a crash leaves either file
// whole) and reopens it; the applied sequence becomes the one src holds.
// Reads wait for the swap (or fail with ErrUnavailable if the new file
// cannot be opened); the caller must not apply meanwhile. src must be on the same file system as the
// database.
func (db *DB) Replace(src string) error {
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	return db.replaceLocked(src)
}

// replaceLocked is Replace with applyMu held. Reads wait on fileMu for
// the swap, which is brief: the caller fetched src beforehand.
func (db *DB) replaceLocked(src string) error {
	err := func() error {
		db.fileMu.Lock()
		defer db.fileMu.Unlock()
		if err := db.closeConns(); err != nil {
			return fmt.Errorf("replace: close: %w", err)
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if err := os.Remove(db.path + suffix); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("replace: %w", err)
			}
		}
		if err := os.Rename(src, db.path); err != nil {
			return fmt.Errorf("replace: %w", err)
		}
		if err := db.open(); err != nil {
			return fmt.Errorf("replace: reopen: %w", err)
		}
		return nil
	}()
	if err != nil {
		return err
	}
	db.setApplied(db.applied.Load())
	return nil
}

// Close closes every connection. The apply loop must have stopped.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return nil
	}
	db.mu.Lock()
	close(db.advanced)
	db.advanced = make(chan struct{})
	db.mu.Unlock()
	return db.closeConns()
}

// closeConns closes the checkpoint connection (waiting for a checkpoint
// that runs), the read pool (waiting for reads in flight), the date/time
// helper and the apply connection, last: closing the last connection
// checkpoints the WAL and deletes it.
func (db *DB) closeConns() error {
	var errs []error
	if db.ckpt != nil {
		errs = append(errs, db.ckpt.close())
		db.ckpt = nil
	}
	if db.readers != nil {
		deadline := time.After(5 * time.Second)
	readers:
		for i := 0; i < db.nopen; i++ {
			select {
			case c := <-db.readers:
				errs = append(errs, c.close())
			case <-deadline:
				errs = append(errs, errors.New("a read connection was not returned within 5s"))
				break readers
			}
		}
	}
	if db.helper != nil {
		for _, s := range db.hstmts {
			s.Finalize()
		}
		errs = append(errs, closeSQLite(db.helper))
	}
	if db.meter != nil {
		db.meter.remove()
	}
	if db.w != nil {
		errs = append(errs, db.w.close())
	}
	db.readers, db.nopen, db.helper, db.w, db.meter = nil, 0, nil, nil, nil
	db.held.Store(0) // closing a connection ended its snapshot
	return errors.Join(errs...)
}

func dirOf(path string) string { return filepath.Dir(path) }
