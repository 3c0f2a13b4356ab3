package apply

import (
	"fmt"
	"math"
	"sync"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// Budget bounds the work of applying one request of an entry (each
// request of a coalesced entry has the whole budget), counted the same way on
// every node: SQLite virtual-machine steps (sqlite3_progress_handler and
// SQLITE_STMTSTATUS_VM_STEP), and bytes of rows written. It travels in the
// entry (set by the node that accepted the request), so nodes with other
// flags apply an entry with the same budget and the same outcome.
//
// The budget is per entry: the statements of an entry share it, in order.
// A statement that goes over it fails with an error naming the budget
// (a writing statement is undone as if it failed alone, see ApplyBatch),
// and so does every statement of the entry after it; the entry is applied
// (its other statements commit, or with Tx none does) and the stream moves
// on. No wall-clock time is involved.
//
// Reads inside a writing entry run only on the node that answers the
// request, so they cannot draw on the budget the other nodes count: they
// have a budget of their own of the same size on that node.
type Budget struct {
	// Steps is the most SQLite VM steps (opcodes executed, triggers
	// included) the entry's statements may take, from 1 to MaxSteps.
	Steps uint64
	// Bytes is the most bytes the entry's statements may write, from 1 up:
	// the sizes of the new values of every row inserted or updated,
	// triggers included (TEXT and BLOB their length, INTEGER and REAL 8,
	// NULL 0; deletes count nothing).
	Bytes uint64
}

// Defaults and limits of a Budget.
const (
	// DefaultSteps is the default budget of steps (--max-entry-steps).
	// Measured on the project's 2-core VM with BenchmarkSteps (three runs,
	// other work on the machine): a recursive CTE runs 26-37M steps/s, a
	// count over a cross join 60-110M, an insert fanned out by triggers
	// 13-15M, a 100k-row INSERT ... SELECT into an indexed table 8-9M. So
	// 50M steps is 0.5-2 s of such loops and about 6 s of the heaviest
	// writes, while the Chinook script as one entry takes 0.43M steps and
	// a 100k-row INSERT ... SELECT 2.9M (TestBudget_DefaultFitsBulk). A few
	// steps cost far more than others (a function building a 16 MiB
	// string, a sort): the budget bounds work, not time.
	DefaultSteps = 50_000_000
	// DefaultBytes is the default budget of bytes written
	// (--max-entry-bytes): 256 MiB, about 2 s of writing large values on
	// that VM (BenchmarkBytes: 129-136 MB/s), and 100 times what a
	// 100k-row INSERT ... SELECT of short rows writes.
	DefaultBytes = 256 << 20
	// MaxSteps is the most steps a budget may hold: SQLite counts a
	// statement's steps in 32 bits.
	MaxSteps = 4_000_000_000
	// BaseSteps and BaseBytes are the budget of entries that do not carry
	// one: entries in format version 1 (written before budgets existed, by
	// nodes that applied them without limit) and entries encoded with a
	// zero Budget. They are fixed forever, so every node applies such an
	// entry alike whatever its version or flags, and generous, so an old
	// entry that succeeded without a budget is unlikely to fail with one.
	BaseSteps = MaxSteps
	BaseBytes = 4 << 30
)

// orBase returns b with zero fields replaced by the base budget.
func (b Budget) orBase() Budget {
	if b.Steps == 0 {
		b.Steps = BaseSteps
	}
	if b.Bytes == 0 {
		b.Bytes = BaseBytes
	}
	return b
}

// stepsError and bytesError are the results of a statement over the budget.
func stepsError(limit uint64) string {
	return fmt.Sprintf("exceeded the execution budget of %d steps; split the work or raise --max-entry-steps", limit)
}

func bytesError(limit uint64) string {
	return fmt.Sprintf("exceeded the write budget of %d bytes; split the work or raise --max-entry-bytes", limit)
}

// progressEvery is how many VM steps pass between calls of the progress
// handler. SQLite calls it when a statement's step count (carried over
// between sqlite3_step calls of one execution) passes each multiple, so
// the calls of an execution depend only on its program and data.
const progressEvery = 1000

// meter counts the budget on the apply connection. SQLite calls its
// progress handler and pre-update hook; they count only while a statement
// of an entry is being stepped (armed), never while nqlite's own
// statements run or while SQLite parses (a statement re-prepared on one
// node and not on another after a schema change).
type meter struct {
	tls   *libc.TLS
	db    uintptr // sqlite3*
	armed bool
	stmt  uintptr // the statement being stepped
	calls uint64  // progress handler calls counted in this statement
	base  uint64  // steps charged to the budget before this statement
	limit uint64  // steps allowed
	write bool    // this statement's writes count bytes
	bytes uint64  // bytes written by the entry, this statement included
	maxB  uint64  // bytes allowed
	over  string  // why this statement was stopped ("" if it was not)
	// values: large allocations and large values held count, and only
	// the entry statement's own steps (entry format version 5,
	// valuemem.go); vbytes is the bytes the
	// allocations charged in this statement, held the steps the values
	// held charged; inHook is set while the pre-update hook runs (not
	// charged).
	values bool
	vbytes uint64
	held   uint64
	inHook bool
	pValue uintptr // C memory for sqlite3_preupdate_new's out pointer
	// capture holds the row changes of the write being stepped
	// (changes.go).
	capture capture
}

var meters sync.Map // sqlite3* -> *meter

// installMeter registers the progress handler and the pre-update hook on
// the apply connection c; values: the capture keeps the changes' values.
//
// The hook stays registered for the connection's life: SQLite compiles
// some statements differently when one is registered at prepare time (a
// DELETE without WHERE deletes row by row instead of truncating, so every
// deleted row is reported), and the code of a statement must not depend on
// when it was prepared. It counts only while armed.
func installMeter(c *conn, values bool) *meter {
	m := &meter{tls: c.tls, db: c.handle, pValue: libc.Xmalloc(c.tls, 8), capture: capture{values: values}}
	meters.Store(c.handle, m)
	valueMeters.Store(c.tls, m)
	lib.Xsqlite3_progress_handler(c.tls, c.handle, progressEvery, cFuncPointer(progressCallback), c.handle)
	lib.Xsqlite3_preupdate_hook(c.tls, c.handle, cFuncPointer(preupdateCallback), c.handle)
	return m
}

// remove unregisters the meter before its connection closes.
func (m *meter) remove() {
	lib.Xsqlite3_progress_handler(m.tls, m.db, 0, 0, 0)
	lib.Xsqlite3_preupdate_hook(m.tls, m.db, 0, 0)
	meters.Delete(m.db)
	valueMeters.Delete(m.tls)
	libc.Xfree(m.tls, m.pValue)
	m.pValue = 0
}

// arm starts counting statement cs: spent steps (and, for a write, bytes)
// are already charged against limit and maxBytes; a write's row changes
// are captured afresh; values: large allocations count as steps too
// (format version 5, valuemem.go).
func (m *meter) arm(cs *cachedStmt, spent, limit uint64, write bool, bytes, maxBytes uint64, values bool) {
	lib.Xsqlite3_stmt_status(m.tls, cs.handle, lib.SQLITE_STMTSTATUS_VM_STEP, 1) // carry nothing over from earlier runs
	// The capture's encoding buffers are reused: the entry kept copies.
	c := &m.capture
	*m = meter{tls: m.tls, db: m.db, pValue: m.pValue, armed: true, stmt: cs.handle,
		base: spent, limit: limit, write: write, bytes: bytes, maxB: maxBytes, values: values,
		capture: capture{values: c.values, enc: c.enc[:0], ends: c.ends[:0], colbuf: c.colbuf[:0]}}
}

// disarm stops counting and returns the statement's exact step count
// (with its large allocations' steps, valuemem.go) and why it was stopped
// ("" if it was not). The statement's captured changes stay in m.capture
// until the next arm.
func (m *meter) disarm(cs *cachedStmt) (steps uint64, over string) {
	m.armed = false
	steps = uint64(uint32(lib.Xsqlite3_stmt_status(m.tls, cs.handle, lib.SQLITE_STMTSTATUS_VM_STEP, 0)))
	return steps + m.valueSteps(), m.over
}

// progressCallback is the progress handler: it stops the statement (by
// returning non-zero, which SQLite turns into SQLITE_INTERRUPT) once the
// steps charged plus those counted in this statement pass the limit.
func progressCallback(tls *libc.TLS, arg uintptr) int32 {
	v, _ := meters.Load(arg)
	m, _ := v.(*meter)
	if m == nil || !m.armed {
		return 0
	}
	if m.over != "" {
		return 1
	}
	if lib.Xsqlite3_stmt_busy(tls, m.stmt) == 0 {
		return 0 // SQLite is preparing the statement again, not running it
	}
	if m.values && (*lib.Tsqlite3)(ptr(&m.db)).FnVdbeExec > 1 {
		// A statement run by a virtual table (FTS5's, R*Tree's own
		// statements and blob handles) inside the entry's: those are
		// prepared once per connection and kept, and how many VM steps
		// they take (an incremental blob opened anew or moved to another
		// row) depends on the connection's history, so in a v5 entry
		// only the entry's statement's own steps, which SQLite counts
		// to its calls here, decide (TestValues_Determinism, R*Tree).
		return 0
	}
	m.calls++
	if m.values {
		m.held += heldBytes(m.stmt) * progressEvery / valueHoldBytesPerStep
	}
	if m.base+m.calls*progressEvery+m.valueSteps() > m.limit {
		m.over = stepsError(m.limit)
		return 1
	}
	return 0
}

// preupdateCallback is the pre-update hook: while a write of an entry is
// armed, it records the change (changes.go) and adds the size of the new
// row of every insert and update (triggers included) to the bytes
// written, and interrupts the statement at once when they pass the limit
// (at the next jump of the VM, before the next row).
func preupdateCallback(tls *libc.TLS, arg, db uintptr, op int32, zDb, zTbl uintptr, key1, key2 int64) {
	v, _ := meters.Load(arg)
	m, _ := v.(*meter)
	if m == nil || !m.armed || !m.write {
		return
	}
	m.inHook = true
	m.bytes += m.record(tls, db, op, zTbl, key1, key2)
	m.inHook = false
	if m.bytes > m.maxB && m.over == "" {
		m.over = bytesError(m.maxB)
		lib.Xsqlite3_interrupt(tls, db)
	}
}

// satMul returns a*b, or limit if that is more.
func satMul(a, b, limit uint64) uint64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxUint64/b || a*b > limit {
		return limit
	}
	return a * b
}
