package apply

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/nqlite/nqlite/service/api"
	"modernc.org/libc"
	"zombiezen.com/go/sqlite"
)

// connMu works around a race in zombiezen v1.4.2: Conn.Close frees the
// sqlite3 handle first and then deletes the authorizer registered under
// its address, so a connection opened meanwhile at the same address (the
// allocator reuses it) lost its authorizer and the next prepare crashed
// (seen under the race detector). Every Close in this package and every
// SetAuthorizer hold connMu, so an authorizer is registered only after the
// close that freed its address finished.
var connMu sync.Mutex

// closeSQLite closes c under connMu (see connMu).
// interruptOn makes the statements of c, a connection of a long
// operation of its own (a quick_check, a checkpoint of a whole file),
// stop once ctx is done (SQLITE_INTERRUPT). The returned func, deferred,
// lifts the interrupt and, when ctx is done and *err is set, makes *err
// ctx's error, wrapped with what: an interrupted check is never a verdict
// on the file.
func interruptOn(ctx context.Context, c *sqlite.Conn, err *error, what string) func() {
	c.SetInterrupt(ctx.Done())
	return func() {
		c.SetInterrupt(nil)
		if *err != nil && ctx.Err() != nil {
			*err = fmt.Errorf("%s: %w", what, ctx.Err())
		}
	}
}

func closeSQLite(c *sqlite.Conn) error {
	connMu.Lock()
	defer connMu.Unlock()
	return c.Close()
}

// stmtCacheSize is how many prepared statements each connection keeps.
const stmtCacheSize = 256

// conn is one SQLite connection with its authorizer and a bounded cache of
// prepared statements. zombiezen's own cache (Conn.Prep) grows without
// bound and hides whether the authorizer ran, so nqlite keeps its own: the
// statement and what the authorizer saw when it was prepared.
type conn struct {
	c      *sqlite.Conn
	tls    *libc.TLS // c's handles, for the C APIs zombiezen lacks (raw.go)
	handle uintptr
	rec    *recorder
	lru    *list.List // of *cachedStmt, most recent first
	cache  map[string]*list.Element
	// A read connection: ctx is the running read's context (nil between
	// reads), watched whether readProgress is installed (read.go).
	ctx     context.Context
	watched bool
	// A read connection's snapshot (readsnap.go): snap while its read
	// transaction is kept open, begun with applied at snapSeq.
	snap    bool
	snapSeq uint64
	// apply: this is the apply connection, whose every statement may draw
	// from SQLite's generator and so runs with prngMu held (prng.go).
	apply     bool
	prngDepth int // prngMu held by this connection (nesting depth)
	// lastUser is the last statement prepared for a user (not by exec).
	lastUser *cachedStmt
	// vtabs are the writable virtual tables (joinVirtualTables), known
	// until the schema changes.
	vtabs      []string
	vtabsKnown bool
	// anyVtab: the schema holds a virtual table of any module, known with
	// vtabs (only virtual tables prepare statements on the connection
	// that nqlite does not bind before every use: clearIdleBindings).
	anyVtab bool
}

type cachedStmt struct {
	sql    string
	stmt   *sqlite.Stmt
	handle uintptr // the sqlite3_stmt*, stable across SQLite's re-prepares
	info   stmtInfo
	// The result columns' names and declared types (readRows, columnsOf),
	// as of the statement's preparation number reprepared.
	columns, declTypes []string
	reprepared         int32
}

// Limits set on every connection (https://sqlite.org/limits.html). They
// are the same on every node, so a statement over one fails the same way
// everywhere. MaxValueBytes bounds one TEXT or BLOB (SQLITE_LIMIT_LENGTH),
// MaxSQLBytes one statement's text.
const (
	MaxValueBytes = 16 << 20
	MaxSQLBytes   = 8 << 20
)

func newConn(c *sqlite.Conn) (*conn, error) {
	c.Limit(sqlite.LimitLength, MaxValueBytes)
	c.Limit(sqlite.LimitSQLLength, MaxSQLBytes)
	c.Limit(sqlite.LimitAttached, 0)
	c.Limit(sqlite.LimitWorkerThreads, 0)
	rec := &recorder{}
	connMu.Lock()
	err := c.SetAuthorizer(rec)
	connMu.Unlock()
	if err != nil {
		return nil, err
	}
	tls, h := connHandles(c)
	return &conn{c: c, tls: tls, handle: h, rec: rec, lru: list.New(), cache: make(map[string]*list.Element)}, nil
}

// prepare returns the prepared statement for sql, from the cache or newly
// prepared. The caller must reset it (release) when done. Errors are
// *api.Error for policy violations and *StmtError for SQLite's own.
func (c *conn) prepare(sql string) (*cachedStmt, error) {
	if el, ok := c.cache[sql]; ok {
		cs := el.Value.(*cachedStmt)
		if !c.expired(cs) {
			c.lru.MoveToFront(el)
			if !c.rec.internal {
				c.lastUser = cs
			}
			return cs, nil
		}
		// The schema changed since it was prepared: prepare it afresh, with
		// the authorizer, rather than let SQLite re-prepare it while it runs.
		c.lru.Remove(el)
		delete(c.cache, sql)
		cs.stmt.Finalize()
	}
	cs := &cachedStmt{sql: sql}
	c.rec.cur = &cs.info
	// Preparing may draw from SQLite's generator (a subquery, view or
	// CREATE TABLE ... AS SELECT with five columns of the same name).
	c.lockPRNG()
	stmt, trailing, err := c.c.PrepareTransient(sql)
	c.unlockPRNG()
	c.rec.cur = nil
	cs.info.finish()
	if cs.info.denied != nil {
		if stmt != nil {
			stmt.Finalize()
		}
		return nil, cs.info.denied
	}
	if err != nil {
		if localFailure(err) {
			return nil, fmt.Errorf("%w: prepare: %s", ErrLocal, sqlErrorText(err, sql))
		}
		return nil, &StmtError{Msg: sqlErrorText(err, sql)}
	}
	if stmt == nil {
		return nil, &StmtError{Msg: "empty statement: it holds only white space or comments"}
	}
	if trailing > 0 && len(api.Split(sql[len(sql)-trailing:])) > 0 {
		stmt.Finalize()
		return nil, &StmtError{Msg: "more than one SQL statement in one statement: split them"}
	}
	cs.stmt, cs.handle = stmt, stmtHandle(stmt)
	if !c.stmtReadOnly(cs) && (cs.info.acted || !cs.info.pragmaRead) {
		cs.info.write = true
		if !cs.info.acted && !c.rec.internal && c.isVacuum(sql) {
			// VACUUM cannot run in the apply transaction, and VACUUM INTO
			// would write a file on the node. (No authorizer action
			// reports VACUUM: it is recognised by its bytecode.)
			stmt.Finalize()
			return nil, api.Errorf(api.CodeForbidden, "VACUUM and VACUUM INTO are not allowed: the apply runs in a transaction, and a file written on one node is not replicated")
		}
	}
	c.cache[sql] = c.lru.PushFront(cs)
	if !c.rec.internal {
		c.lastUser = cs
	}
	for c.lru.Len() > stmtCacheSize {
		old := c.lru.Remove(c.lru.Back()).(*cachedStmt)
		delete(c.cache, old.sql)
		old.stmt.Finalize()
	}
	return cs, nil
}

// isVacuum reports whether sql compiles to SQLite's OP_Vacuum, asking
// SQLite for the statement's bytecode (EXPLAIN). Only statements SQLite
// calls writing but for which the authorizer reported no action get here
// (VACUUM, DROP ... IF EXISTS of nothing), so the cost is rare.
func (c *conn) isVacuum(sql string) bool {
	c.rec.internal = true
	defer func() { c.rec.internal = false }()
	c.lockPRNG()
	stmt, _, err := c.c.PrepareTransient("EXPLAIN " + sql)
	c.unlockPRNG()
	if err != nil {
		return false
	}
	defer stmt.Finalize()
	for {
		row, err := stmt.Step()
		if err != nil || !row {
			return false
		}
		if stmt.ColumnText(1) == "Vacuum" {
			return true
		}
	}
}

// release resets a statement for its next use.
func (cs *cachedStmt) release() {
	cs.stmt.Reset()
	cs.stmt.ClearBindings()
}

func (c *conn) close() error {
	c.unwatchReads()
	for el := c.lru.Front(); el != nil; el = el.Next() {
		el.Value.(*cachedStmt).stmt.Finalize()
	}
	c.lru.Init()
	c.cache = map[string]*list.Element{}
	return closeSQLite(c.c)
}

// exec runs nqlite's own statement (no results) with the reserved-table
// guard lifted.
func (c *conn) exec(sql string, args ...any) error {
	if c.apply {
		c.lockPRNG()
		defer c.unlockPRNG()
	}
	c.rec.internal = true
	defer func() { c.rec.internal = false }()
	cs, err := c.prepare(sql)
	if err != nil {
		return err
	}
	defer cs.release()
	for i, a := range args {
		bindValue(cs.stmt, i+1, a)
	}
	for {
		row, err := cs.stmt.Step()
		if err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		if !row {
			return nil
		}
	}
}

// refreshSchema runs a statement reading the schema, which makes SQLite
// compare the schema cookie and reload a stale schema.
func (c *conn) refreshSchema() error {
	return c.exec("SELECT count(*) FROM sqlite_master")
}

// StmtError is a statement's SQLite error, worded for a person: SQLite's
// message, the position in the statement when SQLite gives one, and a hint
// for common mistakes.
type StmtError struct{ Msg string }

func (e *StmtError) Error() string { return e.Msg }

var posRE = regexp.MustCompile(`^(\d+):(\d+): `)

// sqlErrorText turns a zombiezen error into SQLite's own message, with the
// position SQLite reports. SQLite itself hints at double-quoted strings
// ("no such column: "bob" - should this be a string literal in
// single-quotes?"), which matter because zombiezen disables them.
func sqlErrorText(err error, sql string) string {
	msg := err.Error()
	for _, p := range []string{"sqlite: prepare: ", "sqlite: step: ", "sqlite: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	pos := ""
	if m := posRE.FindStringSubmatch(msg); m != nil {
		pos = fmt.Sprintf(" (line %s, column %s)", m[1], m[2])
		msg = msg[len(m[0]):]
	}
	code := sqlite.ErrCode(err)
	var se *stepError
	if errors.As(err, &se) {
		code = se.code
	}
	if code != sqlite.ResultOK {
		for _, m := range []string{code.Message(), code.ToPrimary().Message()} {
			if strings.HasPrefix(msg, m+": ") {
				msg = msg[len(m)+2:]
				break
			}
		}
	}
	return msg + pos
}

// bindValue binds a parameter value (nil, int64, float64, string, []byte).
func bindValue(s *sqlite.Stmt, i int, v any) {
	switch x := v.(type) {
	case nil:
		s.BindNull(i)
	case int64:
		s.BindInt64(i, x)
	case int:
		s.BindInt64(i, int64(x))
	case float64:
		s.BindFloat(i, x)
	case string:
		s.BindText(i, x)
	case []byte:
		s.BindBytes(i, x)
	case bool:
		s.BindBool(i, x)
	default:
		s.BindText(i, fmt.Sprint(x))
	}
}

// bind binds a statement's parameters, checking that what is given matches
// what the statement expects.
func bind(s *sqlite.Stmt, st *api.Statement) error {
	n := s.BindParamCount()
	if st.Named != nil {
		used := 0
		for i := 1; i <= n; i++ {
			pname := s.BindParamName(i)
			if pname == "" {
				return &StmtError{Msg: fmt.Sprintf("parameter %d is positional (?) but named parameters were given", i)}
			}
			v, ok := st.Named[pname[1:]]
			if !ok {
				return &StmtError{Msg: fmt.Sprintf("no value given for parameter %s", pname)}
			}
			bindValue(s, i, v)
			used++
		}
		if used < len(st.Named) {
			for k := range st.Named {
				found := false
				for i := 1; i <= n; i++ {
					if s.BindParamName(i)[1:] == k {
						found = true
						break
					}
				}
				if !found {
					return &StmtError{Msg: fmt.Sprintf("parameter %q is not used by the statement", k)}
				}
			}
		}
		return nil
	}
	if len(st.Params) != n {
		return &StmtError{Msg: fmt.Sprintf("statement has %d parameters but %d values were given", n, len(st.Params))}
	}
	for i, v := range st.Params {
		bindValue(s, i+1, v)
	}
	return nil
}

// errorText is the result text of a statement that failed.
func errorText(err error) string {
	var se *StmtError
	if errors.As(err, &se) {
		return se.Msg
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Message
	}
	return err.Error()
}
