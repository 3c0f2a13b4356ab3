package apply

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/nqlite/nqlite/service/api"
)

// Entry is one message on a database's stream: the statements of a request
// that writes, and everything a node needs to apply them with the same
// outcome as every other node.
type Entry struct {
	// Node is the id of the node that accepted the request; Token is that
	// node's handle for the waiting request. Other nodes ignore both.
	Node  string
	Token string
	// Time is 'now' for the whole entry, in Unix milliseconds.
	Time int64
	// Seed seeds random() and randomblob().
	Seed int64
	// Budget bounds the work of applying the entry, the same on every
	// node (see Budget). A zero field encodes as the base budget
	// (BaseSteps, BaseBytes); a decoded entry always has both set.
	Budget Budget
	// SQLite is sqlite_version() of the node that accepted the request
	// (see SQLiteVersion): a node on another SQLite version counts the
	// entry (ForeignSQLite). "" when unknown (format version 1).
	SQLite string
	// Tx makes all statements commit or none.
	Tx         bool
	Statements []api.Statement
	// ID is the idempotency key of the entry's first request ("" for
	// none). In format version 4 every node records the ids of the
	// requests it applies (table _nqlite_requests, with the entry's
	// sequence) and skips a request whose id is recorded, reporting it as
	// a duplicate of that sequence (Outcome.Duplicate).
	ID string
	// Keep is how long, in milliseconds of entry Time, the ids of the
	// entry's requests stay recorded (format version 4): the accepting
	// node's stream duplicate window. A record expires at Time + 2*Keep
	// (the second window absorbs clock skew between accepting nodes) and
	// is deleted by the first entry applied with a later Time.
	Keep int64
	// More are the requests after the first one (Token, Seed, ID, Tx,
	// Statements above) in a coalesced entry (format version 4): the
	// write requests that arrived at the accepting node while its previous
	// entry was being published. Each is applied as if it were an entry of
	// its own at this entry's sequence and Time: its own savepoint, budget,
	// results, outcome and idempotency key.
	More []Request
	// Load, when set, replaces the whole database with an object from the
	// Object Store (nqctl restore); the entry then has no statements.
	Load *Load
}

// Request is one write request of a coalesced entry (Entry.More).
type Request struct {
	Token      string // the accepting node's handle for the waiting request
	ID         string // idempotency key, "" for none
	Seed       int64  // seeds random() and randomblob() for its statements
	Tx         bool   // all its statements commit or none
	Statements []api.Statement
}

// Requests returns the entry's requests: the first (the entry's own
// Token, ID, Seed, Tx and Statements), then More. A load entry has none.
func (e *Entry) Requests() []Request {
	if e.Load != nil {
		return nil
	}
	rs := make([]Request, 0, 1+len(e.More))
	rs = append(rs, Request{Token: e.Token, ID: e.ID, Seed: e.Seed, Tx: e.Tx, Statements: e.Statements})
	return append(rs, e.More...)
}

// Load names an object every node loads as the database's new content,
// all at the entry's sequence.
type Load struct {
	Bucket string
	Object string
	// Digest is the object's "SHA-256=<base64url>" digest: a node refuses
	// an object with another digest.
	Digest string
	// SQL: the object is SQL text (a dump) run on an empty database;
	// otherwise it is a SQLite file.
	SQL bool
}

// The entry encoding is binary, compact and fast to decode (every node
// decodes every entry, and catch-up is bound by it):
//
//	"nq" version:byte (1 to 5)
//	node:str token:str time:varint seed:varint
//	[version 2 and later: steps:uvarint bytes:uvarint sqlite:str]
//	flags:byte (bit 0: tx, bit 1: load)
//	[load: bucket:str object:str digest:str kind:byte (0 SQLite, 1 SQL)]
//	[version 4 and later: id:str keep:uvarint]
//	statements
//	[version 4 and later: more:uvarint, then per further request (none for a load):
//	  token:str id:str seed:varint flags:byte (bit 0: tx) statements]
//	statements: count:uvarint, then per statement:
//	  sql:str kind:byte (0 none, 1 positional, 2 named) n:uvarint
//	  n × value (positional) or n × (name:str value) (named)
//	value: tag:byte then 0 NULL | 1 INTEGER varint | 2 REAL 8 bytes
//	       little-endian IEEE 754 | 3 TEXT str | 4 BLOB str
//	str: length:uvarint bytes
//
// Version 2 adds the entry's budget (steps 1 to MaxSteps, bytes at least
// 1) and the accepting node's SQLite version. Version 1 entries (written
// before budgets) still decode, with the fixed base budget (BaseSteps,
// BaseBytes) and no SQLite version. Version 3 has version 2's layout; the
// row changes of its entries count toward the database's ChangeCounts,
// which the nodes that read version 2 at most do not keep, so a node that
// does not count must not apply such an entry. Version 4 adds the first
// request's idempotency key, the time the keys are kept, and further
// requests (a coalesced entry); its nodes record the requests' keys in
// the database, which nodes reading version 3 at most do not, so they
// must not apply it. Version 5 has version 4's layout; its statements'
// large allocations count toward the step budget (valuemem.go), which
// changes outcomes, so nodes reading version 4 at most must not apply it.
// Version 6 has version 5's layout; a load entry in version 6 keeps the
// request ids of the database it replaces (requests.go), which changes
// the outcome of a later retry, so nodes reading version 5 at most must
// not apply it. Encode writes version 6.
//
// Decoding is strict: every byte is accounted for, strings are valid UTF-8
// (BLOBs excepted), so a message that is not an entry is recognised and
// skipped the same way by every node. A message that starts like an entry
// of a later version (byte 3 above EntryVersion) is not skipped: it is an
// ErrUnknownVersion, and the node stops applying until it is upgraded.
const (
	entryMagic0  = 'n'
	entryMagic1  = 'q'
	EntryVersion = 6 // the entry format this code writes, and the newest it reads
)

const (
	tagNull byte = iota
	tagInt
	tagReal
	tagText
	tagBlob
)

// Encode returns the entry's stream message body, in format version
// EntryVersion.
func (e *Entry) Encode() []byte { return e.encode(EntryVersion) }

// encode writes format version v (1 to 5; tests write older ones:
// versions 1 to 3 have no ID, Keep or More).
func (e *Entry) encode(v byte) []byte {
	n := 64 + len(e.Node) + len(e.Token) + len(e.SQLite) + len(e.ID) + statementsLen(e.Statements)
	for i := range e.More {
		n += 24 + len(e.More[i].Token) + len(e.More[i].ID) + statementsLen(e.More[i].Statements)
	}
	b := make([]byte, 0, n)
	b = append(b, entryMagic0, entryMagic1, v)
	b = appendStr(b, e.Node)
	b = appendStr(b, e.Token)
	b = binary.AppendVarint(b, e.Time)
	b = binary.AppendVarint(b, e.Seed)
	if v >= 2 {
		bu := e.Budget.orBase()
		b = binary.AppendUvarint(b, bu.Steps)
		b = binary.AppendUvarint(b, bu.Bytes)
		b = appendStr(b, e.SQLite)
	}
	var flags byte
	if e.Tx {
		flags |= 1
	}
	if e.Load != nil {
		flags |= 2
	}
	b = append(b, flags)
	if l := e.Load; l != nil {
		b = appendStr(b, l.Bucket)
		b = appendStr(b, l.Object)
		b = appendStr(b, l.Digest)
		if l.SQL {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	if v >= 4 {
		b = appendStr(b, e.ID)
		b = binary.AppendUvarint(b, uint64(max(e.Keep, 0)))
	}
	b = appendStatements(b, e.Statements)
	if v >= 4 {
		b = binary.AppendUvarint(b, uint64(len(e.More)))
		for i := range e.More {
			r := &e.More[i]
			b = appendStr(b, r.Token)
			b = appendStr(b, r.ID)
			b = binary.AppendVarint(b, r.Seed)
			if r.Tx {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
			b = appendStatements(b, r.Statements)
		}
	}
	return b
}

func statementsLen(sts []api.Statement) int {
	n := 0
	for _, st := range sts {
		n += len(st.SQL) + 12 + 12*(len(st.Params)+len(st.Named))
	}
	return n
}

func appendStatements(b []byte, sts []api.Statement) []byte {
	b = binary.AppendUvarint(b, uint64(len(sts)))
	for _, st := range sts {
		b = appendStr(b, st.SQL)
		switch {
		case st.Named != nil:
			b = append(b, 2)
			b = binary.AppendUvarint(b, uint64(len(st.Named)))
			for k, v := range st.Named {
				b = appendStr(b, k)
				b = appendValue(b, v)
			}
		case st.Params != nil:
			b = append(b, 1)
			b = binary.AppendUvarint(b, uint64(len(st.Params)))
			for _, v := range st.Params {
				b = appendValue(b, v)
			}
		default:
			b = append(b, 0, 0)
		}
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, tagNull)
	case int64:
		return binary.AppendVarint(append(b, tagInt), x)
	case int:
		return binary.AppendVarint(append(b, tagInt), int64(x))
	case bool:
		if x {
			return binary.AppendVarint(append(b, tagInt), 1)
		}
		return binary.AppendVarint(append(b, tagInt), 0)
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, tagReal), math.Float64bits(x))
	case string:
		return appendStr(append(b, tagText), x)
	case []byte:
		b = binary.AppendUvarint(append(b, tagBlob), uint64(len(x)))
		return append(b, x...)
	default:
		return appendStr(append(b, tagText), fmt.Sprint(x))
	}
}

// barrierBody is the body of a barrier message: "nq", format version 0
// (which no entry has, so a node that predates barriers skips it as an
// invalid entry, the same way), then "barrier".
const barrierBody = "nq\x00barrier"

// Barrier returns the body of a barrier message: a no-op in the entry
// stream that a strong read appends to learn a sequence at or after every
// entry stored before it (see service/stream's Barrier). ApplyBatch skips
// a barrier without changing the database or its change counts, but its
// sequence is applied like an entry's, so WaitApplied on it returns.
func Barrier() []byte { return []byte(barrierBody) }

// IsBarrier reports whether a stream message body is a barrier (Barrier).
func IsBarrier(data []byte) bool { return string(data) == barrierBody }

// ErrInvalidEntry is wrapped by DecodeEntry's errors: the message is not an
// entry. Every node skips such a message the same way.
var ErrInvalidEntry = errors.New("invalid entry")

// ErrUnknownVersion is wrapped by DecodeEntry's error for a message in an
// entry format newer than EntryVersion (written by an upgraded node), and
// by ApplyBatch's *IncompatibleError: such an entry is never skipped; the
// node stops applying the database until it runs a version that reads it.
// It is distinct from ErrInvalidEntry.
var ErrUnknownVersion = errors.New("unknown entry format version")

// IncompatibleError is returned by ApplyBatch for an entry in a format
// this node cannot read (errors.Is(err, ErrUnknownVersion)): the entries
// before it are committed, it is not applied, and nothing after it is.
type IncompatibleError struct {
	Seq     uint64 // the entry's stream sequence
	Version byte   // its format version
}

func (e *IncompatibleError) Error() string {
	return fmt.Sprintf("entry %d is in entry format version %d, and this node reads versions 1 to %d: upgrade this node to apply it", e.Seq, e.Version, EntryVersion)
}

// Unwrap returns ErrUnknownVersion.
func (e *IncompatibleError) Unwrap() error { return ErrUnknownVersion }

// DecodeEntry decodes a stream message body: an error wrapping
// ErrInvalidEntry for a message that is not an entry, or ErrUnknownVersion
// for an entry in a newer format.
func DecodeEntry(data []byte) (*Entry, error) {
	if len(data) < 3 || data[0] != entryMagic0 || data[1] != entryMagic1 {
		return nil, fmt.Errorf("%w: not an nqlite entry", ErrInvalidEntry)
	}
	version := data[2]
	switch {
	case version > EntryVersion:
		return nil, fmt.Errorf("%w: format version %d, this node reads 1 to %d", ErrUnknownVersion, version, EntryVersion)
	case version == 0:
		return nil, fmt.Errorf("%w: format version 0", ErrInvalidEntry)
	}
	d := decoder{b: data[3:]}
	e := &Entry{Node: d.str(true), Token: d.str(true), Time: d.varint(), Seed: d.varint()}
	if version >= 2 {
		e.Budget.Steps, e.Budget.Bytes = d.uvarint(), d.uvarint()
		e.SQLite = d.str(true)
		if d.err == nil && (e.Budget.Steps == 0 || e.Budget.Steps > MaxSteps || e.Budget.Bytes == 0) {
			d.fail("budget of %d steps and %d bytes (steps 1 to %d, bytes at least 1)", e.Budget.Steps, e.Budget.Bytes, uint64(MaxSteps))
		}
	} else {
		e.Budget = Budget{Steps: BaseSteps, Bytes: BaseBytes}
	}
	flags := d.byte()
	if flags&^3 != 0 && d.err == nil {
		d.fail("unknown flags %#x", flags)
	}
	e.Tx = flags&1 != 0
	if flags&2 != 0 {
		e.Load = &Load{Bucket: d.str(true), Object: d.str(true), Digest: d.str(true)}
		switch k := d.byte(); k {
		case 0:
		case 1:
			e.Load.SQL = true
		default:
			d.fail("unknown load kind %d", k)
		}
	}
	if version >= 4 {
		e.ID = d.str(true)
		if k := d.uvarint(); k > math.MaxInt64 && d.err == nil {
			d.fail("keep %d ms", k)
		} else {
			e.Keep = int64(k)
		}
	}
	e.Statements = d.statements(e.Load == nil, "")
	if version >= 4 && d.err == nil {
		m := d.count()
		if m > 0 && e.Load != nil {
			d.fail("a load entry with %d further requests", m)
		}
		for k := 0; k < m && d.err == nil; k++ {
			r := Request{Token: d.str(true), ID: d.str(true), Seed: d.varint()}
			switch f := d.byte(); f {
			case 0:
			case 1:
				r.Tx = true
			default:
				d.fail("request %d: unknown flags %#x", k+2, f)
			}
			r.Statements = d.statements(true, fmt.Sprintf("request %d: ", k+2))
			e.More = append(e.More, r)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the last statement", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return e, nil
}

// statements decodes a list of statements (at least one if need).
func (d *decoder) statements(need bool, where string) []api.Statement {
	n := d.count()
	if n == 0 && need && d.err == nil {
		d.fail("%sno statements", where)
	}
	if d.err != nil {
		return nil
	}
	sts := make([]api.Statement, n)
	for i := 0; i < n && d.err == nil; i++ {
		st := &sts[i]
		st.SQL = d.str(true)
		kind := d.byte()
		m := d.count()
		switch kind {
		case 0:
			if m != 0 {
				d.fail("%sstatement %d: %d values without a parameter kind", where, i+1, m)
			}
		case 1:
			st.Params = make([]any, 0, m)
			for j := 0; j < m && d.err == nil; j++ {
				st.Params = append(st.Params, d.value())
			}
		case 2:
			st.Named = make(map[string]any, m)
			for j := 0; j < m && d.err == nil; j++ {
				k := d.str(true)
				st.Named[k] = d.value()
			}
		default:
			d.fail("%sstatement %d: unknown parameter kind %d", where, i+1, kind)
		}
	}
	return sts
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrInvalidEntry, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated or bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length that must fit in what is left of the message.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("count %d exceeds the message", v)
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.count()
	if d.err != nil {
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) str(utf bool) string {
	s := d.bytes()
	if utf && !utf8.Valid(s) {
		d.fail("text is not valid UTF-8")
		return ""
	}
	return string(s)
}

func (d *decoder) value() any {
	switch tag := d.byte(); tag {
	case tagNull:
		return nil
	case tagInt:
		return d.varint()
	case tagReal:
		if len(d.b) < 8 {
			d.fail("truncated REAL")
			return nil
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
		d.b = d.b[8:]
		return f
	case tagText:
		return d.str(true)
	case tagBlob:
		return append([]byte{}, d.bytes()...)
	default:
		d.fail("unknown value tag %d", tag)
		return nil
	}
}
