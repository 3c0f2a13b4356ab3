package apply

import (
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
	"zombiezen.com/go/sqlite"
)

// zombiezen.com/go/sqlite does not expose a few C APIs nqlite needs for
// determinism (sqlite3_set_last_insert_rowid) and lossless results
// (sqlite3_column_decltype). These helpers read the package's unexported
// handles through reflect; TestRaw guards the layout they rely on.

func connHandles(c *sqlite.Conn) (*libc.TLS, uintptr) {
	v := reflect.ValueOf(c).Elem()
	tls := (*libc.TLS)(unsafe.Pointer(v.FieldByName("tls").Pointer()))
	return tls, uintptr(v.FieldByName("conn").Uint())
}

func stmtHandle(s *sqlite.Stmt) uintptr {
	return uintptr(reflect.ValueOf(s).Elem().FieldByName("stmt").Uint())
}

// setLastInsertRowID calls sqlite3_set_last_insert_rowid.
func (c *conn) setLastInsertRowID(id int64) {
	lib.Xsqlite3_set_last_insert_rowid(c.tls, c.handle, id)
}

// columnDeclTypes returns sqlite3_column_decltype for each result column
// ("" for expressions).
func (c *conn) columnDeclTypes(cs *cachedStmt) []string {
	tls, h := c.tls, cs.handle
	n := cs.stmt.ColumnCount()
	out := make([]string, n)
	for i := 0; i < n; i++ {
		if p := lib.Xsqlite3_column_decltype(tls, h, int32(i)); p != 0 {
			out[i] = libc.GoString(p)
		}
	}
	return out
}

// actionArg2 returns the second string argument of an authorizer action:
// for OpFunction, the function's name, which zombiezen has no accessor for.
func actionArg2(a sqlite.Action) string {
	return reflect.ValueOf(a).FieldByName("arg2").String()
}

// stmtReadOnly calls sqlite3_stmt_readonly: SQLite's own judgement of
// whether a prepared statement writes the database.
func (c *conn) stmtReadOnly(cs *cachedStmt) bool {
	return lib.Xsqlite3_stmt_readonly(c.tls, cs.handle) != 0
}

// expired calls sqlite3_expired: the statement must be prepared again
// because the schema (or an authorizer, or a function) changed since.
func (c *conn) expired(cs *cachedStmt) bool {
	return lib.Xsqlite3_expired(c.tls, cs.handle) != 0
}

// columnsOf fills cs.columns and cs.declTypes, unless they were read
// since SQLite last prepared the statement (sqlite3_stmt_status
// SQLITE_STMTSTATUS_REPREPARE counts its re-preparations).
func (c *conn) columnsOf(cs *cachedStmt) {
	rp := lib.Xsqlite3_stmt_status(c.tls, cs.handle, lib.SQLITE_STMTSTATUS_REPREPARE, 0)
	if cs.columns != nil && rp == cs.reprepared {
		return
	}
	cs.columns, cs.declTypes, cs.reprepared = c.columnNames(cs), c.columnDeclTypes(cs), rp
}

// columnNames returns sqlite3_column_name for each result column
// (zombiezen's ColumnName loses duplicate names).
func (c *conn) columnNames(cs *cachedStmt) []string {
	tls, h := c.tls, cs.handle
	n := cs.stmt.ColumnCount()
	out := make([]string, n)
	for i := 0; i < n; i++ {
		out[i] = libc.GoString(lib.Xsqlite3_column_name(tls, h, int32(i)))
	}
	return out
}

// funcError makes an application-defined SQL function fail with msg.
// zombiezen v1.4.2 loses the error of a Scalar function (resultError
// shadows err, so sqlite3_result_error_code gets 0 and SQLite returns the
// message as the function's value), so the function sets the error code
// itself and returns the message as the result text, which SQLite then
// reports as the statement's error. TestDB_Now guards this.
func funcError(ctx sqlite.Context, msg string) (sqlite.Value, error) {
	v := reflect.ValueOf(ctx)
	tls := (*libc.TLS)(unsafe.Pointer(v.FieldByName("tls").Pointer()))
	lib.Xsqlite3_result_error_code(tls, uintptr(v.FieldByName("ptr").Uint()), lib.SQLITE_ERROR)
	return sqlite.TextValue(msg), nil
}

// cFuncPointer converts a Go function declared at package level (not a
// closure) to the C function pointer modernc's SQLite calls, as zombiezen
// does for its callbacks (https://golang.org/s/go11func: a func value
// points to a read-only word holding the code address).
func cFuncPointer[T any](f T) uintptr {
	return *(*uintptr)(unsafe.Pointer(&struct{ f T }{f}))
}

// SQLiteVersion returns sqlite_version() of the SQLite library this
// binary is built with, for example "3.49.2".
func SQLiteVersion() string { return sqliteVersion() }

var sqliteVersion = sync.OnceValue(func() string {
	tls := libc.NewTLS()
	defer tls.Close()
	return libc.GoString(lib.Xsqlite3_libversion(tls))
})

// numericArg returns sqlite3_value_numeric_type and sqlite3_value_double of
// an SQL function argument, as SQLite's own math functions read them (a
// TEXT that looks like a number counts as one; zombiezen has no
// numeric_type).
func numericArg(v sqlite.Value) (float64, bool) {
	rv := reflect.ValueOf(v)
	tls := (*libc.TLS)(unsafe.Pointer(rv.FieldByName("tls").Pointer()))
	if tls == nil {
		return 0, false
	}
	p := uintptr(rv.FieldByName("ptrOrType").Uint())
	switch lib.Xsqlite3_value_numeric_type(tls, p) {
	case lib.SQLITE_INTEGER, lib.SQLITE_FLOAT:
		return lib.Xsqlite3_value_double(tls, p), true
	}
	return 0, false
}

// contextTLS returns the libc thread state of an SQL function call.
func contextTLS(ctx sqlite.Context) *libc.TLS {
	return (*libc.TLS)(unsafe.Pointer(reflect.ValueOf(ctx).FieldByName("tls").Pointer()))
}

// dropModules calls sqlite3_drop_modules(c, keep): every virtual table
// module but those in keep is removed from the connection.
func (c *conn) dropModules(keep []string) error {
	tls := c.tls
	// The NULL-terminated char*[] and its strings live in C memory: SQLite
	// walks the array with pointer arithmetic, which Go memory does not
	// allow (checkptr, under -race).
	const ptr = unsafe.Sizeof(uintptr(0))
	arr := libc.Xcalloc(tls, libc.Tsize_t(len(keep)+1), libc.Tsize_t(ptr))
	if arr == 0 {
		return fmt.Errorf("drop modules: out of memory")
	}
	defer func() {
		for i := range keep {
			if s := libc.AtomicLoadNUintptr(arr+uintptr(i)*ptr, 0); s != 0 {
				libc.Xfree(tls, s)
			}
		}
		libc.Xfree(tls, arr)
	}()
	for i, name := range keep {
		s, err := libc.CString(name)
		if err != nil {
			return err
		}
		libc.AtomicStoreNUintptr(arr+uintptr(i)*ptr, s, 0)
	}
	rc := lib.Xsqlite3_drop_modules(tls, c.handle, arr)
	if rc != lib.SQLITE_OK {
		return fmt.Errorf("drop modules: %w", sqlite.ResultCode(rc).ToError())
	}
	return nil
}

// stepError is the error of a statement stepped by stepWrite, worded as
// zombiezen words the errors of Stmt.Step ("sqlite: step: ..."), so that
// sqlErrorText gives the same text either way (TestRaw guards it).
type stepError struct {
	code sqlite.ResultCode
	msg  string // sqlite3_errmsg, "" for an interrupt
}

func (e *stepError) Error() string {
	m := e.code.Message()
	if e.msg == "" || e.msg == m {
		return "sqlite: step: " + m
	}
	return "sqlite: step: " + m + ": " + e.msg
}

// bindErr returns the error zombiezen recorded while binding s, which its
// Step reports (a value over SQLITE_LIMIT_LENGTH, for instance).
func bindErr(s *sqlite.Stmt) error {
	f := reflect.ValueOf(s).Elem().FieldByName("bindErr")
	return *(*error)(unsafe.Pointer(f.UnsafeAddr()))
}

// stepWrite steps a writing statement as Stmt.Step does (an interrupt
// when done is closed, the same errors, a reset after an error), and
// also reports, for a statement that failed, whether SQLite kept the row
// changes it made before failing: sqlite3VdbeHalt releases the statement
// journal instead of rolling it back for an OR FAIL conflict or
// RAISE(FAIL) (errorAction OE_Fail) unless the error is one of NOMEM,
// IOERR, INTERRUPT or FULL. zombiezen resets the statement on error,
// which forgets errorAction, so this steps it with the C API directly.
func (c *conn) stepWrite(cs *cachedStmt, done <-chan struct{}) (row, kept bool, err error) {
	if bindErr(cs.stmt) != nil {
		row, err = cs.stmt.Step() // reports the bind error and resets
		return row, false, err
	}
	select {
	case <-done:
		return false, false, &stepError{code: sqlite.ResultInterrupt}
	default:
	}
	rc := lib.Xsqlite3_step(c.tls, cs.handle)
	switch rc & 0xff {
	case lib.SQLITE_ROW:
		return true, false, nil
	case lib.SQLITE_DONE:
		return false, false, nil
	}
	e := &stepError{code: sqlite.ResultCode(rc)}
	if rc&0xff != lib.SQLITE_INTERRUPT {
		e.msg = libc.GoString(lib.Xsqlite3_errmsg(c.tls, c.handle))
	}
	switch rc & 0xff {
	case lib.SQLITE_NOMEM, lib.SQLITE_IOERR, lib.SQLITE_INTERRUPT, lib.SQLITE_FULL:
	default:
		kept = (*lib.TVdbe)(cptr(cs.handle)).FerrorAction == lib.OE_Fail
	}
	lib.Xsqlite3_reset(c.tls, cs.handle)
	return false, kept, e
}

// cptr turns an address in modernc's C heap (memory SQLite allocated, which
// the Go garbage collector neither moves nor frees) into a pointer, to
// read SQLite's own structures through modernc's Go types.
func cptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }
