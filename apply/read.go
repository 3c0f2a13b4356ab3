package apply

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/nqlite/nqlite/service/api"
	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
	"zombiezen.com/go/sqlite"
)

// Plan is a request whose statements were prepared on a read connection,
// so that SQLite itself decided whether it writes. A read Plan is run
// locally with Run; a writing one must go through the stream. Either way
// the caller must call Run or Close exactly once to return the connection.
type Plan struct {
	db    *DB
	c     *conn
	pool  chan *conn // where c returns
	stmts []api.Statement
	cs    []*cachedStmt // nil where preparing failed
	errs  []error
	write bool
	first int // index of the first writing statement

	// Storage of cs and errs for a request of one statement (most are).
	cs1   [1]*cachedStmt
	errs1 [1]error
}

// Prepare classifies a request. A statement forbidden by nqlite's SQL
// policy fails the whole request with an *api.Error (400 or 403); a
// statement SQLite cannot prepare (for example, a table that an earlier
// statement of the same request creates) is only an error if the request
// turns out to be a read. ctx bounds the wait for a free read connection.
func (db *DB) Prepare(ctx context.Context, stmts []api.Statement) (*Plan, error) {
	c, pool, err := db.takeReader(ctx)
	if err != nil {
		return nil, err
	}
	p := &Plan{db: db, c: c, pool: pool, stmts: stmts}
	if len(stmts) == 1 {
		p.cs, p.errs = p.cs1[:], p.errs1[:]
	} else {
		p.cs, p.errs = make([]*cachedStmt, len(stmts)), make([]error, len(stmts))
	}
	nondet := ""
	refreshed := false
	for i := range stmts {
		cs, err := c.prepare(stmts[i].SQL)
		if err != nil && !refreshed {
			// The connection's copy of the schema may predate the last
			// applied entry (SQLite re-reads it only when a statement
			// runs), and with it a table or a trigger the error is about:
			// refresh it and try once more.
			refreshed = true
			if rerr := c.refreshSchema(); rerr != nil {
				p.Close()
				return nil, rerr
			}
			cs, err = c.prepare(stmts[i].SQL)
		}
		if ae, ok := err.(*api.Error); ok {
			p.Close()
			return nil, &api.Error{Code: ae.Code, Kind: ae.Kind, Message: fmt.Sprintf("statement %d: %s", i+1, ae.Message)}
		}
		if err != nil {
			p.errs[i] = err
			continue
		}
		p.cs[i] = cs
		if cs.info.write && !p.write {
			p.write, p.first = true, i
		}
		if cs.info.nondeterminism != "" && nondet == "" {
			nondet = fmt.Sprintf("statement %d: %s", i+1, cs.info.nondeterminism)
		}
	}
	if p.write && nondet != "" {
		p.Close()
		return nil, api.Errorf(api.CodeBadRequest, "%s", nondet)
	}
	return p, nil
}

// Failed reports whether some statement could not be prepared here (for
// example a table this node has not created yet).
func (p *Plan) Failed() bool {
	for _, err := range p.errs {
		if err != nil {
			return true
		}
	}
	return false
}

// Write reports whether any statement writes (or controls transactions):
// the request must become a stream entry.
func (p *Plan) Write() bool { return p.write }

// FirstWrite returns the index of the first statement that writes (-1 if
// none does).
func (p *Plan) FirstWrite() int {
	if !p.write {
		return -1
	}
	return p.first
}

// Close returns the read connection without running anything.
func (p *Plan) Close() {
	if p.c == nil {
		return
	}
	p.pool <- p.c
	p.c = nil
}

// Run executes a read Plan on its connection and returns one result per
// statement and the applied sequence the reads saw at least. Several
// statements run in one read transaction (one consistent snapshot).
// ctx interrupts a long read (the read connections' progress handler,
// readProgress): a ctx that ends before the read begins, between its
// statements or while one runs fails Run with a read_timeout *api.Error
// (504: nothing was published). maxBytes (0: no limit) bounds the
// memory rows take: past it, rows are counted but not kept, and Run fails
// with a 413 *api.Error giving the row count.
func (p *Plan) Run(ctx context.Context, maxBytes int) ([]api.Result, uint64, error) {
	defer p.Close()
	if p.write {
		return nil, 0, fmt.Errorf("plan writes: it must be applied from the stream")
	}
	c := p.c
	if ctx.Err() != nil {
		return nil, 0, api.NewError(api.KindReadTimeout, "the request timed out before its read began; nothing was published")
	}
	// The progress handler (readProgress) ends the read once ctx ends.
	c.ctx = ctx
	defer func() { c.ctx = nil }()
	// The statements read the connection's snapshot (readsnap.go), kept
	// for the next read unless a statement fails.
	seq := p.db.applied.Load()
	if c.snap && c.snapSeq != seq {
		p.db.endSnapshot(c)
	}
	if !c.snap {
		if err := p.db.beginSnapshot(c, seq); err != nil {
			return nil, 0, err
		}
	}
	failed := true
	defer func() {
		if failed || c.autocommit() {
			c.ctx = nil
			p.db.endSnapshot(c)
		}
	}()
	results := make([]api.Result, len(p.cs))
	for i, cs := range p.cs {
		if i > 0 && ctx.Err() != nil {
			// Between statements (a statement shorter than progressEvery
			// steps never calls readProgress).
			return nil, 0, api.NewError(api.KindReadTimeout, "statement %d interrupted: the request timed out before it began", i+1)
		}
		if p.errs[i] != nil {
			results[i].Error = errorText(p.errs[i])
			continue
		}
		if err := bind(cs.stmt, &p.stmts[i]); err != nil {
			results[i].Error = errorText(err)
			cs.release()
			continue
		}
		budget := &rowBudget{left: maxBytes, limited: maxBytes > 0}
		err := readRows(c, cs, &results[i], budget, cs.stmt.Step)
		cs.release()
		if err == nil && budget.over {
			return nil, 0, api.Errorf(api.CodeTooLarge, "statement %d returns %d rows, over %d bytes: more than fits one NATS message (max payload); select fewer rows or columns (LIMIT/OFFSET)", i+1, budget.rows, maxBytes)
		}
		if budget.limited {
			maxBytes = budget.left
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, api.NewError(api.KindReadTimeout, "statement %d interrupted: the request timed out while it read", i+1)
			}
			results[i] = api.Result{Error: sqlErrorText(err, cs.sql)}
			continue
		}
	}
	failed = false
	for i := range results {
		if p.errs[i] != nil || results[i].Error != "" {
			failed = true
		}
	}
	return results, seq, nil
}

// readConns maps each read connection's sqlite3* to it, for readProgress.
var readConns sync.Map

// watchReads installs readProgress on the read connection c: SQLite calls
// it every progressEvery VM steps, and it ends the statement
// (SQLITE_INTERRUPT) once c.ctx, the running read's context, has ended. It runs on the goroutine stepping the statement, so a read
// costs no goroutine and no registration (zombiezen's SetInterrupt
// starts a goroutine per read: about 3 us of a 7 us point read), and a
// short read (a point read is a few dozen steps) no call at all. SQLite
// checks it where it checks sqlite3_interrupt, at the VM's jumps.
func (c *conn) watchReads() {
	readConns.Store(c.handle, c)
	c.watched = true
	lib.Xsqlite3_progress_handler(c.tls, c.handle, progressEvery, cFuncPointer(readProgress), c.handle)
}

// unwatchReads removes readProgress before c closes.
func (c *conn) unwatchReads() {
	if c.watched {
		lib.Xsqlite3_progress_handler(c.tls, c.handle, 0, 0, 0)
		readConns.Delete(c.handle)
		c.watched = false
	}
}

// readProgress is the progress handler of read connections: non-zero
// (interrupt) once the running read's context ended.
func readProgress(tls *libc.TLS, arg uintptr) int32 {
	v, _ := readConns.Load(arg)
	c, _ := v.(*conn)
	if c == nil || c.ctx == nil || c.ctx.Err() == nil {
		return 0
	}
	return 1
}

// rowBudget bounds the bytes of rows a read keeps (an estimate of their
// JSON size).
type rowBudget struct {
	left    int
	limited bool
	over    bool
	rows    int
}

// readRows steps a bound statement to its end with step, collecting its
// rows into res (columns, declared types and values). With a budget, rows
// past it are counted but not kept. A nil budget keeps everything.
func readRows(c *conn, cs *cachedStmt, res *api.Result, budget *rowBudget, step func() (bool, error)) error {
	s := cs.stmt
	n := 0
	for first := true; ; first = false {
		row, err := step()
		if err != nil {
			return err
		}
		if first {
			// After the first step: SQLite prepares a statement again
			// inside it when the schema changed (SELECT * after ALTER
			// TABLE), which may change the columns.
			n = s.ColumnCount()
			if n > 0 {
				c.columnsOf(cs)
				// Copies: the caller owns the result (database/sql hands
				// Columns to the program).
				res.Columns = append([]string(nil), cs.columns...)
				res.Types = append([]string(nil), cs.declTypes...)
				res.Values = [][]any{}
			}
		}
		if !row {
			return nil
		}
		if budget != nil {
			budget.rows++
			if budget.over {
				continue
			}
		}
		vals := make([]any, n)
		for i := range vals {
			switch s.ColumnType(i) {
			case sqlite.TypeInteger:
				vals[i] = s.ColumnInt64(i)
			case sqlite.TypeFloat:
				vals[i] = s.ColumnFloat(i)
			case sqlite.TypeText:
				vals[i] = s.ColumnText(i)
			case sqlite.TypeBlob:
				b := make([]byte, s.ColumnLen(i))
				s.ColumnBytes(i, b)
				vals[i] = b
			}
		}
		if budget != nil && budget.limited {
			budget.left -= rowSize(vals, res.Columns)
			if budget.left < 0 {
				budget.over = true
				res.Values = nil
				continue
			}
		}
		res.Values = append(res.Values, vals)
	}
}

func (db *DB) takeReader(ctx context.Context) (*conn, chan *conn, error) {
	if db.closed.Load() {
		return nil, nil, ErrClosed
	}
	db.fileMu.RLock() // waits out a Replace's swap
	readers := db.readers
	db.fileMu.RUnlock()
	if readers == nil {
		return nil, nil, ErrUnavailable
	}
	select {
	case c := <-readers:
		db.freshen(c)
		return c, readers, nil
	default: // none free: wait (ctx.Done makes a channel: not before it is needed)
	}
	select {
	case c := <-readers:
		db.freshen(c)
		return c, readers, nil
	case <-ctx.Done():
		return nil, nil, api.NewError(api.KindReadTimeout, "no read connection became free before the request timed out; nothing was published")
	}
}

// rowSize estimates the JSON bytes of a row in the values format (a lower
// bound: the caller checks the exact encoded size).
func rowSize(vals []any, cols []string) int {
	n := 2
	for _, v := range vals {
		n++
		switch x := v.(type) {
		case nil:
			n += 4
		case int64:
			n += 1 + int(math.Log10(math.Abs(float64(x))+1))
		case float64:
			n += 8
		case string:
			n += len(x) + 2
		case []byte:
			n += len(x)*4/3 + 14
		}
	}
	return n
}
