package nqsql

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/nqlite/nqlite/service/api"
)

// tx is a transaction: the statements Exec buffered, sent at Commit as one
// request with transaction: true (see the package doc, "Transactions").
type tx struct {
	c        *conn
	ctx      context.Context // BeginTx's: bounds the Commit request
	readOnly bool
	afterSeq uint64 // the connector's sequence at BeginTx: every read's after_seq
	stmts    []api.Statement

	// After Commit or Rollback.
	done bool
	resp *api.Response // a committed transaction's results
	err  error         // why there are none: the Commit's error, or ErrRolledBack
}

// exec buffers stmts and returns their pending Result.
func (t *tx) exec(stmts []api.Statement, o callOptions) (driver.Result, error) {
	if t.readOnly {
		return nil, ErrReadOnly
	}
	if o.set {
		return nil, errors.New("nqsql: per-call options do not apply to an Exec in a transaction: it is sent at Commit")
	}
	for _, st := range stmts {
		// database/sql lets callers reuse []byte arguments after the call.
		for i, p := range st.Params {
			if b, ok := p.([]byte); ok {
				st.Params[i] = append([]byte(nil), b...)
			}
		}
		for k, p := range st.Named {
			if b, ok := p.([]byte); ok {
				st.Named[k] = append([]byte(nil), b...)
			}
		}
		t.stmts = append(t.stmts, st)
	}
	return &txResult{t: t, i: len(t.stmts) - 1}, nil
}

// Commit sends the buffered statements as one request with transaction:
// true: all of them commit, on every node, or none does. A failed
// statement returns an error wrapping ErrRolledBack and the
// *StatementError. With nothing buffered, nothing is sent.
func (t *tx) Commit() error {
	if t.done {
		return errors.New("nqsql: the transaction is already committed or rolled back")
	}
	t.done = true
	t.c.tx = nil
	if len(t.stmts) == 0 {
		t.resp = &api.Response{}
		return nil
	}
	resp, err := t.c.c.send(t.ctx, t.stmts, callOptions{}, sendMode{exec: true, tx: true})
	if err != nil {
		// Refused (nothing applied), or no reply (it may or may not be).
		t.err = fmt.Errorf("nqsql: commit: %w", err)
		return t.err
	}
	if err := statementErr(resp, len(t.stmts)); err != nil {
		t.err = fmt.Errorf("%w: %w", ErrRolledBack, err)
		return t.err
	}
	t.resp = resp
	return nil
}

// Rollback discards the buffered statements: nothing was sent.
func (t *tx) Rollback() error {
	if t.done {
		return errors.New("nqsql: the transaction is already committed or rolled back")
	}
	t.done, t.err = true, ErrRolledBack
	t.c.tx = nil
	t.stmts = nil
	return nil
}

// txResult is the Result of an Exec in a transaction: the values of its
// last statement, known after Commit.
type txResult struct {
	t *tx
	i int
}

func (r *txResult) res() (*api.Result, error) {
	switch {
	case r.t.resp != nil:
		return &r.t.resp.Results[r.i], nil
	case r.t.done:
		return nil, r.t.err
	}
	return nil, ErrResultPending
}

// LastInsertId returns ErrResultPending before Commit, the statement's
// last_insert_rowid() after it, and after a Rollback or a failed Commit
// that error (wrapping ErrRolledBack when nqlite rolled it back).
func (r *txResult) LastInsertId() (int64, error) {
	res, err := r.res()
	if err != nil {
		return 0, err
	}
	return res.LastInsertID, nil
}

// RowsAffected returns ErrResultPending before Commit, the statement's
// changes() after it, and after a Rollback or a failed Commit that error.
func (r *txResult) RowsAffected() (int64, error) {
	res, err := r.res()
	if err != nil {
		return 0, err
	}
	return res.RowsAffected, nil
}
