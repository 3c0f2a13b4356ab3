package nqsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// Errors of the driver, usable with errors.Is.
var (
	// ErrResultPending is returned by the Result of an Exec inside a
	// transaction before Commit: the statement has not run yet.
	ErrResultPending = errors.New("nqsql: the result of an Exec in a transaction is known only after Commit: the statement is buffered and sent at Commit")
	// ErrRolledBack wraps the error of a Commit that nqlite rolled back
	// (a statement failed: nothing of the transaction was applied), and is
	// returned by the Results of a transaction rolled back.
	ErrRolledBack = errors.New("nqsql: the transaction was rolled back")
	// ErrQueryAfterWrite is returned by a Query inside a transaction after
	// a buffered Exec.
	ErrQueryAfterWrite = errors.New("nqsql: Query in a transaction after an Exec: the Exec is buffered until Commit, so the query could not see it; query before the first Exec, or after Commit")
	// ErrReadOnly is returned by an Exec in a read-only transaction.
	ErrReadOnly = errors.New("nqsql: Exec in a read-only transaction")
	// ErrIsolation is returned by BeginTx for an isolation level stronger
	// than read committed (see the package doc).
	ErrIsolation = errors.New("nqsql: isolation level not supported: nqlite transactions give read committed reads and serialized writes (see the package doc)")
	// ErrDuplicate is returned by the Result of an Exec whose
	// IdempotencyKey matched an earlier write: it was not applied again,
	// and its results are not known.
	ErrDuplicate = errors.New("nqsql: duplicate of an earlier write with the same idempotency key: not applied again")
)

// StatementError is a statement the node ran and SQLite failed: Message is
// SQLite's message with its position; Index is the statement's 0-based
// place among the Count statements of the call.
type StatementError struct {
	Index   int
	Count   int
	Message string
}

func (e *StatementError) Error() string {
	if e.Count <= 1 {
		return e.Message
	}
	return fmt.Sprintf("statement %d of %d: %s", e.Index+1, e.Count, e.Message)
}

// conn is a driver connection: the connector's NATS connection, the
// per-call options being collected and the open transaction. database/sql
// uses a conn from one goroutine at a time.
type conn struct {
	c             *Connector
	ownsConnector bool // made by Driver.Open: Close closes the connector
	opts          callOptions
	tx            *tx
	closed        bool
}

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
	_ driver.Connector          = (*Connector)(nil)
	_ io.Closer                 = (*Connector)(nil) // (*sql.DB).Close closes it
	_ driver.DriverContext      = Driver{}

	_ driver.Stmt                           = (*stmt)(nil)
	_ driver.StmtExecContext                = (*stmt)(nil)
	_ driver.StmtQueryContext               = (*stmt)(nil)
	_ driver.Tx                             = (*tx)(nil)
	_ driver.Result                         = result{}
	_ driver.Result                         = duplicateResult{}
	_ driver.Result                         = (*txResult)(nil)
	_ driver.Rows                           = (*rows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*rows)(nil)
)

// CheckNamedValue takes per-call options out of the arguments
// (driver.ErrRemoveArgument) and converts every other argument to a value
// nqlite binds (see the package doc, "Values").
func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	isOpt, err := c.opts.option(nv.Value)
	if isOpt {
		if err != nil {
			c.opts = callOptions{}
			return err
		}
		return driver.ErrRemoveArgument
	}
	v, err := paramValue(nv.Value)
	if err != nil {
		// The call fails before reaching the driver: drop its options.
		c.opts = callOptions{}
		return err
	}
	nv.Value = v
	return nil
}

// takeOptions returns the per-call options of the current call and clears
// them.
func (c *conn) takeOptions() callOptions {
	o := c.opts
	c.opts = callOptions{}
	return o
}

// ResetSession clears leftover call state when database/sql reuses the
// connection.
func (c *conn) ResetSession(context.Context) error {
	c.opts = callOptions{}
	if c.closed {
		return driver.ErrBadConn
	}
	return nil
}

// IsValid reports whether the connection may be reused.
func (c *conn) IsValid() bool { return !c.closed }

// Close closes the connection (and the connector when Driver.Open made it).
func (c *conn) Close() error {
	c.closed = true
	if c.ownsConnector {
		return c.c.Close()
	}
	return nil
}

// Ping sends SELECT 1 to the database: it fails unless a node serves it.
func (c *conn) Ping(ctx context.Context) error {
	c.opts = callOptions{}
	_, err := c.c.send(ctx, []api.Statement{{SQL: "SELECT 1"}}, callOptions{}, sendMode{})
	return err
}

// Prepare returns a statement; nqlite prepares on the node, per request.
func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext returns a statement. Nothing is sent: the node prepares
// the SQL with each execution, and reports errors then. The query is
// split into statements once, here.
func (c *conn) PrepareContext(_ context.Context, query string) (driver.Stmt, error) {
	return &stmt{c: c, parts: api.Split(query)}, nil
}

// Begin starts a transaction with the default options.
func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx starts a transaction (see the package doc, "Transactions").
// Nothing is sent until Commit.
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	switch sql.IsolationLevel(opts.Isolation) {
	case sql.LevelDefault, sql.LevelReadUncommitted, sql.LevelReadCommitted:
	default:
		return nil, fmt.Errorf("%w: %s", ErrIsolation, sql.IsolationLevel(opts.Isolation))
	}
	if c.tx != nil {
		return nil, errors.New("nqsql: a transaction is already open on this connection")
	}
	c.tx = &tx{c: c, ctx: ctx, readOnly: opts.ReadOnly, afterSeq: c.c.Seq()}
	return c.tx, nil
}

// ExecContext runs query (see the package doc, "Statements"); inside a
// transaction it buffers it until Commit.
func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.exec(ctx, api.Split(query), args)
}

// exec runs the statements of a query, split (parts), with args.
func (c *conn) exec(ctx context.Context, parts []string, args []driver.NamedValue) (driver.Result, error) {
	o := c.takeOptions()
	stmts, err := statements(parts, args)
	if err != nil {
		return nil, err
	}
	if c.tx != nil {
		return c.tx.exec(stmts, o)
	}
	resp, err := c.c.send(ctx, stmts, o, sendMode{exec: true})
	if err != nil {
		return nil, err
	}
	if resp.Duplicate {
		return duplicateResult{}, nil
	}
	if err := statementErr(resp, len(stmts)); err != nil {
		return nil, err
	}
	last := resp.Results[len(resp.Results)-1]
	return result{lastInsertID: last.LastInsertID, rowsAffected: last.RowsAffected}, nil
}

// QueryContext runs one statement and returns its rows (see the package
// doc); inside a transaction it reads on the read-only endpoint.
func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.query(ctx, api.Split(query), args)
}

// query runs the statement of a query, split (parts), with args.
func (c *conn) query(ctx context.Context, parts []string, args []driver.NamedValue) (driver.Rows, error) {
	o := c.takeOptions()
	stmts, err := statements(parts, args)
	if err != nil {
		return nil, err
	}
	if len(stmts) != 1 {
		return nil, fmt.Errorf("nqsql: Query takes one statement, got %d: run the others with Exec", len(stmts))
	}
	var mode sendMode
	if t := c.tx; t != nil {
		if len(t.stmts) > 0 {
			return nil, ErrQueryAfterWrite
		}
		mode = sendMode{readOnly: true, inTx: true, txSeq: t.afterSeq}
		if o.id != "" {
			return nil, errors.New("nqsql: IdempotencyKey does not apply to a Query in a transaction")
		}
	}
	resp, err := c.c.send(ctx, stmts, o, mode)
	if err != nil {
		if c.tx != nil && api.ErrorCode(err) == api.CodeForbidden {
			return nil, fmt.Errorf("nqsql: Query in a transaction only reads, on %s (writes go through Exec and are sent at Commit): %w", api.ReadSubject(c.c.settings.db), err)
		}
		return nil, err
	}
	if resp.Duplicate {
		return nil, ErrDuplicate
	}
	if err := statementErr(resp, 1); err != nil {
		return nil, err
	}
	res := resp.Results[0]
	return newRows(res.Columns, res.Types, res.Values), nil
}

// statements makes the statements of a query split by api.Split (parts)
// and binds args: positional (Params) or named (Named), not both. A call
// with arguments holds one statement.
func statements(parts []string, args []driver.NamedValue) ([]api.Statement, error) {
	if len(parts) == 0 {
		return nil, errors.New("nqsql: no SQL statement in the query")
	}
	if len(args) == 0 {
		stmts := make([]api.Statement, len(parts))
		for i, p := range parts {
			stmts[i] = api.Statement{SQL: p}
		}
		return stmts, nil
	}
	if len(parts) > 1 {
		return nil, fmt.Errorf("nqsql: the query holds %d statements and has arguments: pass one statement per call", len(parts))
	}
	st := api.Statement{SQL: parts[0]}
	for _, a := range args {
		if a.Name != "" {
			if st.Named == nil {
				st.Named = map[string]any{}
			}
			st.Named[a.Name] = a.Value
		} else {
			st.Params = append(st.Params, a.Value)
		}
	}
	if st.Named != nil && st.Params != nil {
		return nil, errors.New("nqsql: positional and named (sql.Named) arguments in one call: use one kind")
	}
	return []api.Statement{st}, nil
}

// statementErr returns the first failed statement of resp as a
// *StatementError, or an error if resp lacks results.
func statementErr(resp *api.Response, count int) error {
	for i, r := range resp.Results {
		if r.Error != "" {
			return &StatementError{Index: i, Count: count, Message: r.Error}
		}
	}
	if len(resp.Results) != count {
		return fmt.Errorf("nqsql: %d results for %d statements", len(resp.Results), count)
	}
	return nil
}

// sendMode says how send sends a request.
type sendMode struct {
	readOnly bool // to nqlite.read.<db>
	exec     bool // a call of Exec or Commit: no read level
	tx       bool // transaction: true
	inTx     bool // a read in a transaction: after txSeq, not the connector's sequence
	txSeq    uint64
}

// send sends statements with the connector's settings and the call's
// options o, and records the response's sequence. Every request carries
// the connector's sequence as after_seq, except the reads of a
// transaction, which carry the sequence the transaction began with.
func (cn *Connector) send(ctx context.Context, stmts []api.Statement, o callOptions, m sendMode) (*api.Response, error) {
	tr, err := cn.transport()
	if err != nil {
		return nil, err
	}
	s := cn.settings
	req := &api.Request{Statements: stmts, Format: api.FormatValues, ID: o.id, Transaction: m.tx}
	req.AfterSeq = max(cn.Seq(), o.afterSeq)
	if m.inTx {
		req.AfterSeq = max(m.txSeq, o.afterSeq)
	}
	if !m.exec {
		req.Level = s.level
		if o.level != "" {
			req.Level = o.level
		}
		if req.Level == api.LevelNone {
			req.Level = ""
		}
	}
	timeout := s.timeout
	if o.timeout > 0 {
		timeout = o.timeout
	}
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, ctx.Err()
		}
		if timeout == 0 || left < timeout {
			timeout = left
		}
	}
	if timeout > 0 {
		req.TimeoutMS = int(min((timeout+time.Millisecond-1)/time.Millisecond, api.MaxTimeoutMS))
	}
	ep := client.QueryEndpoint
	if m.readOnly || s.readOnly {
		ep = client.ReadEndpoint
	}
	resp, err := tr.Do(ctx, s.db, ep, req)
	if err != nil {
		if seq, ok := client.StoredSeq(err); ok {
			// Stored, not yet applied on that node: later requests wait
			// for it (read-your-writes), and the caller may too.
			cn.observe(seq)
			if o.seqOut != nil {
				*o.seqOut = Seq(seq)
			}
		}
		var pe *client.PayloadError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("nqsql: %w: send fewer statements or smaller values per call", err)
		}
		return nil, fmt.Errorf("nqsql: %w", err)
	}
	cn.observe(resp.Seq)
	if o.seqOut != nil {
		*o.seqOut = Seq(resp.Seq)
	}
	return resp, nil
}

// result is the Result of an Exec outside a transaction: the last
// statement's.
type result struct {
	lastInsertID, rowsAffected int64
}

// LastInsertId returns the rowid of the last row inserted by the
// statement (SQLite's last_insert_rowid()).
func (r result) LastInsertId() (int64, error) { return r.lastInsertID, nil }

// RowsAffected returns the rows the statement changed (SQLite's
// changes()).
func (r result) RowsAffected() (int64, error) { return r.rowsAffected, nil }

// duplicateResult is the Result of a write whose idempotency key matched
// an earlier one.
type duplicateResult struct{}

func (duplicateResult) LastInsertId() (int64, error) { return 0, ErrDuplicate }
func (duplicateResult) RowsAffected() (int64, error) { return 0, ErrDuplicate }

// stmt is a prepared statement: the SQL, split into statements, sent with
// each execution.
type stmt struct {
	c     *conn
	parts []string
}

// Close does nothing: nothing was prepared on a node.
func (s *stmt) Close() error { return nil }

// NumInput is -1: the node checks the parameters.
func (s *stmt) NumInput() int { return -1 }

// Exec runs the statement.
func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

// Query runs the statement.
func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

// ExecContext runs the statement as conn.ExecContext does.
func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.c.exec(ctx, s.parts, args)
}

// QueryContext runs the statement as conn.QueryContext does.
func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.c.query(ctx, s.parts, args)
}

func named(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}
