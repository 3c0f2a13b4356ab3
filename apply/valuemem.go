package apply

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// Large values (entry format version 5). A step of SQLite's VM that builds
// or copies a multi-megabyte value (printf, hex, ||, a record of a
// recursive CTE, a blob read back from a table) counts as one step, though
// it costs as much as a million ordinary ones. So in a v5 entry every
// allocation of valueThreshold bytes or more that SQLite makes on the
// apply connection while an entry's statement runs is charged to the step
// budget as well, at valueBytesPerStep bytes a step.
//
// Not those whose amount or timing depends on the connection's history
// rather than on the entry and the file (which are the same on every
// node):
//
//   - the page cache (pcache1Alloc: pages, and the pager's and b-tree's
//     page-sized scratch buffers; pcache1ResizeHash: its hash table, grown
//     as the cache fills; pcache1InitBulk, disabled anyway below): a warm
//     cache allocates nothing where a cold one allocates a page;
//   - parsing and schema loading (sqlite3.pParse set, sqlite3.init.busy):
//     nested statements SQLite or FTS5 prepare while a statement runs are
//     cached for the connection's life, so a node that prepared them
//     earlier allocates nothing now;
//   - what FTS5 keeps across statements: its pending-terms hash
//     (sqlite3Fts5HashNew, made at a table's first write on the
//     connection, and fts5HashResize, which keeps its size after each
//     flush), the unicode61 tokenizer's case-folding buffer
//     (fts5UnicodeTokenize) and the structure record (read by
//     fts5StructureReadUncached only when the connection has none);
//   - the pre-update hook (nqlite's own reading of the row changes).
//
// The apply connection has no lookaside (disableLookaside), so small
// allocations cannot come from slots whose availability is history too.
// The exclusions are recognised by the function that asked the allocator
// (the first caller outside SQLite's malloc layer) or its caller:
// modernc's SQLite is Go, so runtime.Callers sees its frames. The stack
// is walked only for allocations of the threshold or more made while an
// armed v5 meter's statement runs.
const (
	// valueThreshold is the smallest allocation that counts, in bytes:
	// one more than SQLite's default lookaside slot, so a row of a few
	// short values allocates less. Values below it are the residual that
	// is not charged (DESIGN.md "Large values": a recursive CTE carrying
	// a 1,100-byte value runs 79-121 ns a step, 4-6 s at the default
	// budget).
	valueThreshold = 1201
	// valueBytesPerStep converts charged bytes into steps. Measured with
	// BenchmarkLargeValues (DESIGN.md): building a 16 MB value with
	// printf takes about 30 ms, 2 ns a byte, and an ordinary step 27-38
	// ns, so 16 bytes a step weighs the slowest value builders about as
	// a step, and memcpy-like copies (0.1-0.5 ns a byte) more.
	valueBytesPerStep = 16
)

// origMem are SQLite's memory methods before installValueAllocator
// wrapped them; origMalloc and origRealloc call its xMalloc and xRealloc.
var (
	origMem     lib.Tsqlite3_mem_methods
	wrappedMem  lib.Tsqlite3_mem_methods // a global: SQLite reads it through a uintptr (checkptr)
	origMalloc  func(*libc.TLS, int32) uintptr
	origRealloc func(*libc.TLS, uintptr, int32) uintptr
	// valueMeters maps the *libc.TLS of every apply connection with a
	// meter to the meter. Only its own goroutine writes a meter's fields
	// (a TLS is used by one goroutine at a time).
	valueMeters sync.Map
	// allocInstallErr is why the wrapper could not be installed (nil if
	// it was); Open fails with it.
	allocInstallErr error
)

func init() { allocInstallErr = installValueAllocator() }

// installValueAllocator wraps SQLite's xMalloc and xRealloc
// (SQLITE_CONFIG_GETMALLOC, then SQLITE_CONFIG_MALLOC) and turns off the
// page cache's initial bulk allocation (SQLITE_CONFIG_PAGECACHE with no
// buffer: pcache1's nInitPage is SQLite's nPage, 0), whose timing, at a
// cache's first fetch, is a connection's. It runs before any connection
// is opened (zombiezen initializes SQLite at the first open); if SQLite is
// already initialized, it is shut down first.
func installValueAllocator() error {
	tls := libc.NewTLS()
	defer tls.Close()
	va := tls.Alloc(64)
	defer tls.Free(64)
	config := func(op int32, args ...any) int32 {
		return lib.Xsqlite3_config(tls, op, libc.VaList(va, args...))
	}
	getMalloc := func() int32 {
		return config(lib.SQLITE_CONFIG_GETMALLOC, uintptr(unsafe.Pointer(&origMem)))
	}
	if rc := getMalloc(); rc == lib.SQLITE_MISUSE {
		if rc := lib.Xsqlite3_shutdown(tls); rc != lib.SQLITE_OK {
			return fmt.Errorf("sqlite3_shutdown: code %d", rc)
		}
		if rc := getMalloc(); rc != lib.SQLITE_OK {
			return fmt.Errorf("SQLITE_CONFIG_GETMALLOC: code %d", rc)
		}
	} else if rc != lib.SQLITE_OK {
		return fmt.Errorf("SQLITE_CONFIG_GETMALLOC: code %d", rc)
	}
	if origMem.FxMalloc == 0 || origMem.FxRealloc == 0 {
		return fmt.Errorf("SQLITE_CONFIG_GETMALLOC: no allocator")
	}
	origMalloc = *(*func(*libc.TLS, int32) uintptr)(unsafe.Pointer(&struct{ uintptr }{origMem.FxMalloc}))
	origRealloc = *(*func(*libc.TLS, uintptr, int32) uintptr)(unsafe.Pointer(&struct{ uintptr }{origMem.FxRealloc}))
	wrappedMem = origMem
	wrappedMem.FxMalloc = cFuncPointer(valueMalloc)
	wrappedMem.FxRealloc = cFuncPointer(valueRealloc)
	if rc := config(lib.SQLITE_CONFIG_MALLOC, uintptr(unsafe.Pointer(&wrappedMem))); rc != lib.SQLITE_OK {
		return fmt.Errorf("SQLITE_CONFIG_MALLOC: code %d", rc)
	}
	if rc := config(lib.SQLITE_CONFIG_PAGECACHE, uintptr(0), int32(0), int32(0)); rc != lib.SQLITE_OK {
		return fmt.Errorf("SQLITE_CONFIG_PAGECACHE: code %d", rc)
	}
	return nil
}

// valueMalloc is SQLite's xMalloc: SQLite's own, charging a large
// allocation to the running v5 entry's statement, if any.
func valueMalloc(tls *libc.TLS, n int32) uintptr {
	if n >= valueThreshold {
		chargeValue(tls, n)
	}
	return origMalloc(tls, n)
}

// valueRealloc is SQLite's xRealloc, charging a large new size likewise.
func valueRealloc(tls *libc.TLS, p uintptr, n int32) uintptr {
	if n >= valueThreshold {
		chargeValue(tls, n)
	}
	return origRealloc(tls, p, n)
}

// chargeValue charges an allocation of n bytes on the connection of tls,
// if it is an apply connection whose meter counts values and its
// statement is running, and the allocation is not one of the exclusions.
// Over the budget, it marks the statement stopped and interrupts it (at
// the VM's next jump); it never fails the allocation.
func chargeValue(tls *libc.TLS, n int32) {
	v, ok := valueMeters.Load(tls)
	if !ok {
		return
	}
	m := v.(*meter)
	if !m.armed || !m.values || m.inHook || m.over != "" {
		return
	}
	if lib.Xsqlite3_stmt_busy(tls, m.stmt) == 0 || inParse(m.db) || excludedAlloc() {
		return
	}
	m.vbytes += uint64(n)
	if m.base+m.calls*progressEvery+m.valueSteps() > m.limit {
		m.over = stepsError(m.limit)
		lib.Xsqlite3_interrupt(tls, m.db)
	}
}

// allocLayer are SQLite's malloc functions between an allocating function
// and xMalloc/xRealloc (and the wrappers themselves).
var allocLayer = map[string]bool{
	"valueMalloc": true, "valueRealloc": true, "chargeValue": true,
	"_mallocWithAlarm": true, "_sqlite3Malloc": true, "Xsqlite3_malloc": true,
	"Xsqlite3_malloc64": true, "_sqlite3MallocZero": true, "_dbMallocRawFinish": true,
	"_sqlite3DbMallocRawNN": true, "_sqlite3DbMallocRaw": true, "_sqlite3DbMallocZero": true,
	"_sqlite3Realloc": true, "Xsqlite3_realloc": true, "Xsqlite3_realloc64": true,
	"_sqlite3DbRealloc": true, "_dbReallocFinish": true, "_sqlite3DbReallocOrFree": true,
	"_sqlite3Fts5MallocZero": true,
}

// excludedCallers are allocating functions whose allocations do not
// count; excludedParents exclude the allocations of the function that
// they call directly (the allocating function's caller).
var (
	excludedCallers = map[string]bool{
		"_pcache1Alloc": true, "_pcache1ResizeHash": true, "_pcache1InitBulk": true,
		"_fts5HashResize": true, "_fts5UnicodeTokenize": true, "_sqlite3Fts5HashNew": true,
	}
	excludedParents = map[string]bool{
		// FTS5 keeps its structure record (the list of segments) for
		// the connection's life and reads it again only after another
		// connection wrote, so a node that restarted reads it where
		// another does not.
		"_fts5StructureReadUncached": true,
	}
)

// valueSteps returns the steps the statement's large values charged:
// its large allocations and the large values its registers held.
func (m *meter) valueSteps() uint64 { return m.vbytes/valueBytesPerStep + m.held }

// Values held. A step that reads a large value it does not copy costs as
// much as one that builds it: length() of a text, substr(), instr(),
// LIKE, a comparison, of a value built once and kept in a register (a
// constant subquery, a bound parameter): length() of a 16 MB text per row
// took 5.7 ms a row, 0.3 ms a step (BenchmarkLargeValues/length16MB), and
// it allocates nothing. So at every call of the progress handler
// (progressEvery steps) a v5 statement is also charged, for each
// register of the statement (sub-programs' frames included) holding a TEXT or BLOB of valueThreshold bytes or
// more, its length times progressEvery / valueHoldBytesPerStep steps (only
// the entry's statement, see heldBytes): a
// kilobyte held for a step weighs one step. Measured with
// BenchmarkLargeValues: length16MB (0.3 ms a step, each step of a row
// reading 16 MB once in about 20) now stops in 0.5 s, and a recursive CTE
// carrying 1 MB over 100 rows (0.18 s, cte1MB) is charged 18.5M steps
// and passes; at 64 bytes a step it was charged 97M and failed. What
// registers hold at a call depends only on the program and the data, as
// the calls themselves do. A statement that holds a large value while
// doing much cheap work (comparing many rows against a large parameter)
// is charged as if it read the value every 1,024 steps.
const valueHoldBytesPerStep = 1024

// heldBytes returns the bytes of the large TEXT and BLOB values in the
// registers of statement stmt (a Vdbe) while it runs, its sub-programs'
// frames included. Only the entry's own statement: a virtual table's
// statements (R*Tree's node reads, incremental blob handles) stay
// running between statements on a connection that used them, and hold a
// node in a register, which a connection that connected anew does not.
func heldBytes(stmt uintptr) uint64 {
	p := (*lib.TVdbe)(ptr(&stmt))
	if p.FeVdbeState != lib.VDBE_RUN_STATE {
		return 0
	}
	sum := memBytes(p.FaMem, p.FnMem)
	for f := p.FpFrame; f != 0; {
		fr := (*lib.TVdbeFrame)(ptr(&f))
		sum += memBytes(fr.FaMem, fr.FnMem)
		f = fr.FpParent
	}
	return sum
}

// memBytes sums the lengths of the TEXT and BLOB values of at least
// valueThreshold bytes among the n registers at aMem.
func memBytes(aMem uintptr, n int32) uint64 {
	var sum uint64
	for i := int32(0); i < n; i++ {
		a := aMem + uintptr(i)*unsafe.Sizeof(lib.TMem{})
		m := (*lib.TMem)(ptr(&a))
		if m.Fflags&(lib.MEM_Str|lib.MEM_Blob) != 0 && m.Fn >= valueThreshold {
			sum += uint64(m.Fn)
		}
	}
	return sum
}

// disableLookaside turns off the apply connection's lookaside
// (SQLITE_DBCONFIG_LOOKASIDE with no slots), so every allocation of its
// statements reaches the allocator. With lookaside on, an allocation of up
// to 1,200 bytes takes a free slot if there is one, and how many are free
// depends on the connection's history (its cached statements hold some);
// SQLite then sizes a growing buffer (a string being built, a record)
// from the capacity it got, 1,200 in a slot and the allocator's size on
// the heap, so even the sizes of its later, large allocations would
// depend on that history.
func (c *conn) disableLookaside() error {
	va := c.tls.Alloc(32)
	defer c.tls.Free(32)
	if rc := lib.Xsqlite3_db_config(c.tls, c.handle, lib.SQLITE_DBCONFIG_LOOKASIDE, libc.VaList(va, uintptr(0), int32(0), int32(0))); rc != lib.SQLITE_OK {
		return fmt.Errorf("disable lookaside: SQLite code %d", rc)
	}
	return nil
}

// inParse reports whether SQLite is parsing (a statement being prepared,
// also one that a virtual table, ALTER TABLE or the schema's loading
// prepares while another statement runs: sqlite3.pParse) or loading the
// schema (sqlite3.init.busy): a node that prepared and loaded earlier
// allocates nothing now.
func inParse(db uintptr) bool {
	d := (*lib.Tsqlite3)(ptr(&db))
	return d.FpParse != 0 || d.Finit1.Fbusy != 0
}

// allocPaths caches excludedAlloc's answers by call path, the return
// addresses of the frames it reads: the answer depends only on which
// functions those are, and a workload allocates from a few paths, so the
// frames are named once per path (naming them took most of an insert's
// time when every row allocated a few kilobytes).
var allocPaths sync.Map // [allocFrames]uintptr -> bool

// allocFrames is how many frames excludedAlloc reads, from the wrapper
// on: enough for SQLite's malloc layer, the allocating function and its
// caller.
const allocFrames = 16

// excludedAlloc reports whether the allocation being made is one of the
// exclusions (see above), from the first two frames outside SQLite's
// malloc layer.
func excludedAlloc() bool {
	var pcs [allocFrames]uintptr
	n := runtime.Callers(3, pcs[:])
	if v, ok := allocPaths.Load(pcs); ok {
		return v.(bool)
	}
	ex := excludedFrames(pcs[:n])
	allocPaths.Store(pcs, ex)
	return ex
}

// excludedFrames is excludedAlloc's answer for the frames at pcs.
func excludedFrames(pcs []uintptr) bool {
	frames := runtime.CallersFrames(pcs)
	depth := -1 // 0: the allocating function, 1: its caller
	for {
		f, more := frames.Next()
		name := f.Function
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			name = name[i+1:]
		}
		if depth < 0 && name != "" && !allocLayer[name] {
			depth = 0
		}
		switch depth {
		case 0:
			if excludedCallers[name] {
				return true
			}
		case 1:
			return excludedParents[name]
		}
		if depth >= 0 {
			depth++
		}
		if !more {
			return false
		}
	}
}
