package apply

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"

	"github.com/nqlite/nqlite/service/api"
)

// The running digest: every applied stream message advances it, in the
// SQLite transaction that applies the message, so every node that applied
// the same messages with the same outcome holds the same digest at the
// same sequence, however its entries were batched, restarted or restored.
//
//	digest(seq) = SHA-256(digest(prev) || seq || body)
//
// where prev is the message applied before (the chain's first digest, at
// its origin, is 32 zero bytes) and body is, for an entry, its committed
// row changes and its statements' outcomes (digest format 1, written down
// byte for byte in DESIGN.md, "Running digest"). SHA-256 from the
// standard library: a well-known hash with no dependency, and with
// SHA-NI (amd64) or the ARMv8 SHA extensions it costs a few hundred
// nanoseconds per small entry (DESIGN.md has the measured cost).
//
// The digest observes; it never decides an outcome.

// Digest is a SHA-256 value: a running digest or a content hash.
type Digest [32]byte

// String returns the digest as 64 lowercase hex digits.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ParseDigest parses 64 hex digits (as String writes them).
func ParseDigest(s string) (Digest, error) {
	var d Digest
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(d) {
		return d, fmt.Errorf("digest %q: want 64 hex digits", s)
	}
	copy(d[:], b)
	return d, nil
}

// DigestFormat is the digest format this code computes (see DESIGN.md).
// A change to what the digest covers or how it is encoded is a new format:
// nodes compare digests only of one format.
const DigestFormat = 1

// DigestState is a database's running digest as of one applied sequence.
type DigestState struct {
	// Seq is the stream sequence the digest is as of (the applied one).
	Seq uint64
	// Digest is digest(Seq).
	Digest Digest
	// Origin is the sequence the chain started at, with the zero digest:
	// 0 for a database created empty by nqlite; for a database that
	// existed before nqlite computed digests (an upgraded node), or a
	// snapshot made by such a node, the applied sequence at which this
	// chain was started. Two nodes' digests are comparable only when
	// their origins (and formats) are equal.
	Origin uint64
	// Format is the digest format (DigestFormat); 0 in a SnapshotInfo of
	// a file that carries no digest.
	Format int
}

// digestRing is how many applied sequences' digests DigestAt remembers.
const digestRing = 4096

type ringSlot struct {
	seq uint64
	set bool
	d   Digest
}

// Digest returns the running digest as of the applied sequence.
func (db *DB) Digest() DigestState {
	db.digestMu.Lock()
	defer db.digestMu.Unlock()
	return db.dstate
}

// DigestAt returns the running digest as of sequence seq, if this node
// applied seq among the last 4096 sequences it applied since it opened (or
// since the file was last replaced): so a node can compare a checkpoint
// another node published for a sequence it has passed. It returns false
// for a sequence not applied yet, older than that, or skipped (a batch
// that jumped over it: a load took a snapshot in place of its object).
func (db *DB) DigestAt(seq uint64) (DigestState, bool) {
	db.digestMu.Lock()
	defer db.digestMu.Unlock()
	st := db.dstate
	if seq == st.Seq {
		return st, true
	}
	if seq > st.Seq || seq < st.Origin {
		return DigestState{}, false
	}
	s := &db.ring[seq%digestRing]
	if !s.set || s.seq != seq {
		return DigestState{}, false
	}
	st.Seq, st.Digest = seq, s.d
	return st, true
}

// commitDigests records the digests of sequences applied and committed
// (seqs[i] has ds[i]) and calls OnDigest with the last. The caller holds
// applyMu.
func (db *DB) commitDigests(seqs []uint64, ds []Digest) {
	if len(seqs) == 0 {
		return
	}
	db.digestMu.Lock()
	for i, seq := range seqs {
		db.ring[seq%digestRing] = ringSlot{seq: seq, set: true, d: ds[i]}
	}
	db.dstate.Seq, db.dstate.Digest = seqs[len(seqs)-1], ds[len(ds)-1]
	st := db.dstate
	db.digestMu.Unlock()
	if db.onDigest != nil {
		db.onDigest(st)
	}
}

// setDigestState makes st the database's digest (a file opened or
// swapped in) and forgets the digests remembered for DigestAt: they were
// another file's.
func (db *DB) setDigestState(st DigestState) {
	db.digestMu.Lock()
	if !db.keepRing || st.Origin != db.dstate.Origin {
		db.ring = [digestRing]ringSlot{}
	}
	db.keepRing = false
	db.dstate = st
	db.ring[st.Seq%digestRing] = ringSlot{seq: st.Seq, set: true, d: st.Digest}
	db.digestMu.Unlock()
}

// The kinds of message a digest step covers (the byte after seq).
const (
	digestEntry   = 'E' // an entry: row changes and outcomes
	digestInvalid = 'X' // a message that is not a valid entry, skipped
	digestLoad    = 'L' // a load entry that replaced the database
	digestNoLoad  = 'N' // a load entry refused by every node (ErrLoadInvalid)
)

// digester computes digest steps; one per DB, used under applyMu.
type digester struct {
	h   hash.Hash
	buf []byte // scratch: seq and counts
	out []byte // the bytes of the entry being hashed
}

func newDigester() *digester { return &digester{h: sha256.New()} }

// step returns SHA-256(prev || seq || kind || parts...).
func (g *digester) step(prev Digest, seq uint64, kind byte, parts ...[]byte) Digest {
	g.h.Reset()
	g.h.Write(prev[:])
	g.buf = binary.BigEndian.AppendUint64(g.buf[:0], seq)
	g.buf = append(g.buf, kind)
	g.h.Write(g.buf)
	for _, p := range parts {
		g.h.Write(p)
	}
	var d Digest
	g.h.Sum(d[:0])
	return d
}

// entry returns the digest step of an applied entry: its committed row
// changes (n of them, encoded in enc by the capture) and the outcomes of
// its statements (read[j]: statement j ran as a read, whose result only
// the answering node computes).
//
// The bytes are gathered in one buffer and hashed with one sha256.Sum256:
// cheaper than a hash.Hash's Writes and Sum for the 100 to 200 bytes of a
// small entry.
func (g *digester) entry(prev Digest, seq uint64, n int, enc []byte, results []api.Result, read []bool) Digest {
	g.begin(prev, seq)
	g.request(n, enc, results, read)
	return g.sum()
}

// begin starts the digest of entry seq; request adds each of its
// requests' part (one for an entry of one request), sum returns it.
func (g *digester) begin(prev Digest, seq uint64) {
	o := append(g.out[:0], prev[:]...)
	o = binary.BigEndian.AppendUint64(o, seq)
	g.out = append(o, digestEntry)
}

// request appends one request's part of an entry's digest: n changes
// (enc), then the results. A request skipped as a duplicate is n = 0 and
// no results (a request that ran reports at least one).
func (g *digester) request(n int, enc []byte, results []api.Result, read []bool) {
	o := binary.BigEndian.AppendUint32(g.out, uint32(n))
	o = append(o, enc...)
	o = binary.BigEndian.AppendUint32(o, uint32(len(results)))
	for j := range results {
		o = appendOutcome(o, &results[j], j < len(read) && read[j])
	}
	g.out = o
}

func (g *digester) sum() Digest { return sha256.Sum256(g.out) }

// appendOutcome appends a statement's outcome: 'R' for a read (its rows
// and errors exist only on the node that answers the request), else 'S',
// write (0 or 1), rows affected and last insert id (int64 big-endian),
// and the error (u32 length, UTF-8).
func appendOutcome(b []byte, res *api.Result, read bool) []byte {
	if read {
		return append(b, 'R')
	}
	w := byte(0)
	if res.Write {
		w = 1
	}
	b = append(b, 'S', w)
	b = binary.BigEndian.AppendUint64(b, uint64(res.RowsAffected))
	b = binary.BigEndian.AppendUint64(b, uint64(res.LastInsertID))
	b = binary.BigEndian.AppendUint32(b, uint32(len(res.Error)))
	return append(b, res.Error...)
}

// Value storage classes in the encodings (SQLite's own type codes; 0: the
// pre-update hook had no value for the column).
const (
	valNone  = 0
	valInt   = lib.SQLITE_INTEGER // 1
	valFloat = lib.SQLITE_FLOAT   // 2
	valText  = lib.SQLITE_TEXT    // 3
	valBlob  = lib.SQLITE_BLOB    // 4
	valNull  = lib.SQLITE_NULL    // 5
)

// appendSQLiteValue appends the encoding of the sqlite3_value v (storage
// class byte, then int64 or float64 bits big-endian, or u32 length and
// bytes, UTF-8 for TEXT) and returns the bytes the budget counts for it.
func appendSQLiteValue(b []byte, tls *libc.TLS, v uintptr) ([]byte, uint64) {
	switch lib.Xsqlite3_value_type(tls, v) {
	case lib.SQLITE_INTEGER:
		b = append(b, valInt)
		return binary.BigEndian.AppendUint64(b, uint64(lib.Xsqlite3_value_int64(tls, v))), 8
	case lib.SQLITE_FLOAT:
		b = append(b, valFloat)
		return binary.BigEndian.AppendUint64(b, math.Float64bits(lib.Xsqlite3_value_double(tls, v))), 8
	case lib.SQLITE_TEXT:
		p := lib.Xsqlite3_value_text(tls, v)
		n := lib.Xsqlite3_value_bytes(tls, v)
		b = append(b, valText)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		if n > 0 {
			b = append(b, unsafe.Slice((*byte)(cptr(p)), n)...)
		}
		return b, uint64(n)
	case lib.SQLITE_BLOB:
		p := lib.Xsqlite3_value_blob(tls, v)
		n := lib.Xsqlite3_value_bytes(tls, v)
		b = append(b, valBlob)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		if n > 0 {
			b = append(b, unsafe.Slice((*byte)(cptr(p)), n)...)
		}
		return b, uint64(n)
	}
	return append(b, valNull), 0
}

// appendGoValue appends the encoding of a Go value (nil, int64, float64,
// string, []byte), as appendSQLiteValue does.
func appendGoValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case int64:
		return binary.BigEndian.AppendUint64(append(b, valInt), uint64(x))
	case float64:
		return binary.BigEndian.AppendUint64(append(b, valFloat), math.Float64bits(x))
	case string:
		b = binary.BigEndian.AppendUint32(append(b, valText), uint32(len(x)))
		return append(b, x...)
	case []byte:
		b = binary.BigEndian.AppendUint32(append(b, valBlob), uint32(len(x)))
		return append(b, x...)
	}
	return append(b, valNull)
}

// appendChangeHead appends the start of a row change's encoding: table
// (u32 length, UTF-8), op (1 insert, 2 update, 3 delete; 0x80 added for a
// WITHOUT ROWID table) and the rowids: the new one for an insert, the old
// and the new for an update, the old for a delete (int64 big-endian),
// none for a WITHOUT ROWID table.
func appendChangeHead(b []byte, t *tableInfo, op int32, key1, key2 int64) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.name)))
	b = append(b, t.name...)
	var o byte
	switch op {
	case lib.SQLITE_INSERT:
		o = byte(Insert)
	case lib.SQLITE_UPDATE:
		o = byte(Update)
	default:
		o = byte(Delete)
	}
	if t.withoutRowID {
		return append(b, o|0x80)
	}
	b = append(b, o)
	switch op {
	case lib.SQLITE_INSERT:
		b = binary.BigEndian.AppendUint64(b, uint64(key2))
	case lib.SQLITE_UPDATE:
		b = binary.BigEndian.AppendUint64(b, uint64(key1))
		b = binary.BigEndian.AppendUint64(b, uint64(key2))
	default:
		b = binary.BigEndian.AppendUint64(b, uint64(key1))
	}
	return b
}

// Where the digest is stored: the one row of the table _nqlite_digest,
// updated in the batch's transaction, after its entries (applied_seq, in
// _nqlite_meta, is stored at the batch's start: see flushFirstFrame). A
// table of its own, not rows of _nqlite_meta: each batch writes
// _nqlite_meta's page to the WAL first (flushFirstFrame), and a digest
// there made every batch write that page again at commit (SQLite skips
// an UPDATE's page write only when the bytes are the same, as the
// applied_seq written twice are), rewriting a frame of the transaction in
// the WAL (and its later frames' checksums). Measured with the digest in
// _nqlite_meta: nqlite's own statements of the batch (UPDATE, COMMIT)
// took 4 times as long in a CPU profile of BenchmarkApply/batch=100, and
// the benchmark ran about 20% slower (3 interleaved pairs, see DESIGN.md).
// The table's page is written once, at commit.
const (
	digestTable = "_nqlite_digest"
	digestDDL   = "CREATE TABLE IF NOT EXISTS " + digestTable + "(id INTEGER PRIMARY KEY CHECK (id = 1), digest BLOB NOT NULL, origin INTEGER NOT NULL, format INTEGER NOT NULL)"
	// storeDigestSQL stores the digest (?1) of the applied sequence.
	storeDigestSQL = "UPDATE " + digestTable + " SET digest = ?1 WHERE id = 1"
)

// digestSQL returns statements that make st the digest stored in a
// database file (for a file being prepared for a load).
func digestSQL(st DigestState) string {
	return fmt.Sprintf("%s;\nINSERT OR REPLACE INTO %s(id, digest, origin, format) VALUES(1, X'%s', %d, %d);\n",
		digestDDL, digestTable, st.Digest, st.Origin, st.Format)
}

// errNoDigest: the file holds no digest.
var errNoDigest = errors.New("no digest")

// readDigest reads the digest stored in the database of c, as of applied.
func readDigest(c *conn, applied uint64) (DigestState, error) {
	info := SnapshotInfo{Seq: applied}
	if err := readFileDigest(c.c, &info); err != nil {
		return info.Digest, err
	}
	if info.Digest.Format == 0 {
		return info.Digest, errNoDigest
	}
	return info.Digest, nil
}

// openDigest reads the digest of the file just opened, or starts a chain
// at its applied sequence when it has none (a database created empty, at
// 0; one made before digests, or by other tools) or one of another format.
func (db *DB) openDigest(applied uint64) error {
	st, err := readDigest(db.w, applied)
	if err == nil && st.Format == DigestFormat && st.Origin <= applied {
		db.setDigestState(st)
		return nil
	}
	if err != nil && !errors.Is(err, errNoDigest) {
		db.log.Warn("the stored running digest is unreadable: starting a new chain", "seq", applied, "err", err)
	} else if err == nil {
		db.log.Warn("the stored running digest is of another format: starting a new chain", "seq", applied, "format", st.Format, "origin", st.Origin)
	} else if applied > 0 {
		db.log.Info("the database has no running digest yet: starting the chain here", "seq", applied)
	}
	st = DigestState{Seq: applied, Origin: applied, Format: DigestFormat}
	if err := db.w.exec(digestDDL); err != nil {
		return fmt.Errorf("store the running digest: %w", err)
	}
	if err := db.w.exec("INSERT OR REPLACE INTO "+digestTable+"(id, digest, origin, format) VALUES(1, ?, ?, ?)",
		st.Digest[:], int64(st.Origin), int64(st.Format)); err != nil {
		return fmt.Errorf("store the running digest: %w", err)
	}
	db.setDigestState(st)
	return nil
}
