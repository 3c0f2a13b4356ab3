package apply

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nqlite/nqlite/service/api"
)

// Msg is one stream message to apply: its stream sequence and body.
type Msg struct {
	Seq  uint64
	Data []byte
}

// forcedKey names statement stmt of the batch's message msg.
type forcedKey struct{ msg, stmt int }

// txLost reports that a statement ended the enclosing SQLite transaction
// (ON CONFLICT ROLLBACK, RAISE(ROLLBACK), or an I/O error), undoing the
// whole batch.
type txLost struct {
	key forcedKey
	msg string
}

// ApplyBatch applies msgs, which must follow the applied sequence in stream
// order, in one SQLite transaction that also stores the last sequence: the
// batch commits whole or not at all, so an entry is never applied twice or
// skipped. Messages that are not valid entries are logged and skipped.
//
// Outcomes go to the requests waiting on this node (see Await).
//
// A statement that rolls back the enclosing transaction is replayed as a
// failure: the batch restarts and that statement is not run but reported
// with its error. The outcome therefore does not depend on how entries are
// grouped into batches, which differs between nodes.
func (db *DB) ApplyBatch(msgs []Msg) error {
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	if db.closed.Load() {
		return ErrClosed
	}
	applied := db.applied.Load()
	start := 0
	for start < len(msgs) && msgs[start].Seq <= applied {
		start++ // redelivered: already committed
	}
	msgs = msgs[start:]
	if len(msgs) == 0 {
		return nil
	}
	entries := make([]*Entry, len(msgs))
	decodeErrs := make([]error, len(msgs))
	for i, m := range msgs {
		entries[i], decodeErrs[i] = DecodeEntry(m.Data)
	}
	// A load entry replaces the database: the entries before it commit
	// first, the ones after it apply to the loaded database.
	start = 0
	for i, e := range entries {
		if e == nil || e.Load == nil {
			continue
		}
		if i > start {
			if err := db.applySegment(msgs[start:i], entries[start:i], decodeErrs[start:i]); err != nil {
				return err
			}
		}
		if err := db.applyLoad(msgs[i].Seq, e); err != nil {
			return err
		}
		start = i + 1
	}
	if start == len(msgs) {
		return nil
	}
	return db.applySegment(msgs[start:], entries[start:], decodeErrs[start:])
}

// applySegment applies entries without loads in one transaction.
func (db *DB) applySegment(msgs []Msg, entries []*Entry, decodeErrs []error) error {
	forced := map[forcedKey]string{}
	for {
		outcomes, lost, err := db.tryBatch(msgs, entries, forced)
		if err != nil {
			return err
		}
		if lost != nil {
			if _, dup := forced[lost.key]; dup {
				return fmt.Errorf("apply entry %d: statement %d keeps rolling back the transaction: %s", msgs[lost.key.msg].Seq, lost.key.stmt+1, lost.msg)
			}
			forced[lost.key] = lost.msg
			continue
		}
		last := msgs[len(msgs)-1].Seq
		db.setApplied(last)
		for i, e := range entries {
			if decodeErrs[i] != nil {
				db.skipped.Add(1)
				db.log.Warn("skipped stream message that is not a valid entry", "seq", msgs[i].Seq, "err", decodeErrs[i])
				continue
			}
			if outcomes[i] != nil {
				db.deliver(e.Token, Outcome{Seq: msgs[i].Seq, Results: outcomes[i]})
			}
		}
		return nil
	}
}

func (db *DB) tryBatch(msgs []Msg, entries []*Entry, forced map[forcedKey]string) ([][]api.Result, *txLost, error) {
	w := db.w
	if err := w.exec("BEGIN IMMEDIATE"); err != nil {
		return nil, nil, fmt.Errorf("apply entry %d: %w", msgs[0].Seq, err)
	}
	if err := db.flushFirstFrame(msgs[len(msgs)-1].Seq); err != nil {
		w.exec("ROLLBACK")
		return nil, nil, fmt.Errorf("apply entry %d: %w", msgs[0].Seq, err)
	}
	outcomes := make([][]api.Result, len(msgs))
	for i, e := range entries {
		if e == nil {
			continue
		}
		collect := e.Node == db.node && db.node != "" && db.hasWaiter(e.Token)
		res, lost, err := db.applyEntry(i, e, collect, forced)
		if err != nil || lost != nil {
			if !w.c.AutocommitEnabled() {
				w.exec("ROLLBACK")
			}
			if err != nil {
				err = fmt.Errorf("apply entry %d: %w", msgs[i].Seq, err)
			}
			return nil, lost, err
		}
		if collect {
			outcomes[i] = res
		}
	}
	last := msgs[len(msgs)-1].Seq
	if err := w.exec("UPDATE _nqlite_meta SET value = ? WHERE key = 'applied_seq'", int64(last)); err != nil {
		w.exec("ROLLBACK")
		return nil, nil, fmt.Errorf("apply entry %d: store applied sequence: %w", last, err)
	}
	if err := w.exec("COMMIT"); err != nil {
		if !w.c.AutocommitEnabled() {
			w.exec("ROLLBACK")
		}
		return nil, nil, fmt.Errorf("apply entries %d-%d: commit: %w", msgs[0].Seq, last, err)
	}
	return outcomes, nil, nil
}

// quoteIdent quotes a SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// applyEntry runs one entry's statements inside the batch transaction.
// Statements that succeed stay applied, statements that fail are undone by
// SQLite's statement journal; with Tx, the first failure undoes the entry.
// User BEGIN/COMMIT/ROLLBACK become savepoints, and a transaction or
// savepoint the entry leaves open is rolled back at its end.
func (db *DB) applyEntry(mi int, e *Entry, collect bool, forced map[forcedKey]string) ([]api.Result, *txLost, error) {
	w := db.w
	// Connection state that must not leak between entries: after a restart
	// last_insert_rowid() and changes() start at 0, so they do for every entry.
	if err := db.resetEntry(); err != nil {
		return nil, nil, err
	}
	if e.Tx {
		if err := w.exec("SAVEPOINT nqlite_tx"); err != nil {
			return nil, nil, err
		}
	}
	results := make([]api.Result, len(e.Statements))
	var stack []string // open user savepoints; "nqlite_user" for BEGIN
	failed := false
	for j := range e.Statements {
		db.beginStatement(e, j)
		res := &results[j]
		lost, err := db.applyStatement(e, j, mi, res, &stack, collect, forced)
		if eerr := db.endStatement(); err == nil {
			err = eerr
		}
		if err != nil || lost != nil {
			return nil, lost, err
		}
		if res.Error != "" && e.Tx {
			failed = true
			results = results[:j+1]
			break
		}
	}
	if failed {
		// All or nothing: undo the entry, user savepoints included.
		if err := w.exec("ROLLBACK TO nqlite_tx"); err != nil {
			return nil, nil, err
		}
	} else if len(stack) > 0 {
		// An entry never leaves a transaction open.
		if err := w.exec("ROLLBACK TO " + quoteIdent(stack[0])); err != nil {
			return nil, nil, err
		}
		if err := w.exec("RELEASE " + quoteIdent(stack[0])); err != nil {
			return nil, nil, err
		}
	}
	if e.Tx {
		if err := w.exec("RELEASE nqlite_tx"); err != nil {
			return nil, nil, err
		}
	}
	return results, nil, nil
}

var errNoTx = errors.New("no transaction is active")

func (db *DB) applyStatement(e *Entry, j, mi int, res *api.Result, stack *[]string, collect bool, forced map[forcedKey]string) (*txLost, error) {
	w := db.w
	if msg, ok := forced[forcedKey{mi, j}]; ok {
		res.Error = msg
		return nil, nil
	}
	st := &e.Statements[j]
	cs, err := w.prepare(st.SQL)
	if err != nil {
		res.Error = errorText(err)
		return nil, nil
	}
	defer cs.release()
	info := &cs.info
	if info.write && info.nondeterminism != "" {
		res.Error = info.nondeterminism
		return nil, nil
	}
	if info.txOp != "" {
		res.Write = true
		switch {
		case info.txOp == "BEGIN" && len(*stack) > 0:
			res.Error = "cannot start a transaction within a transaction"
		case info.txOp == "BEGIN":
			if err := w.exec("SAVEPOINT nqlite_user"); err != nil {
				return nil, err
			}
			*stack = append(*stack, "nqlite_user")
		case len(*stack) == 0:
			res.Error = fmt.Sprintf("cannot %s - %v", strings.ToLower(info.txOp), errNoTx)
		case info.txOp == "COMMIT":
			if err := w.exec("RELEASE " + quoteIdent((*stack)[0])); err != nil {
				return nil, err
			}
			*stack = nil
		default: // ROLLBACK
			if err := w.exec("ROLLBACK TO " + quoteIdent((*stack)[0])); err != nil {
				return nil, err
			}
			if err := w.exec("RELEASE " + quoteIdent((*stack)[0])); err != nil {
				return nil, err
			}
			*stack = nil
		}
		return nil, nil
	}
	if err := bind(cs.stmt, st); err != nil {
		res.Error = errorText(err)
		return nil, nil
	}
	if !info.write && !collect {
		// A read inside an entry changes nothing: only the node that
		// answers the request needs its rows.
		return nil, nil
	}
	var stepErr error
	if collect {
		stepErr = readRows(w, cs, res, nil)
	} else {
		for {
			row, err := cs.stmt.Step()
			if err != nil || !row {
				stepErr = err
				break
			}
		}
	}
	if stepErr != nil {
		msg := sqlErrorText(stepErr, st.SQL)
		*res = api.Result{Error: msg}
		if w.c.AutocommitEnabled() {
			return &txLost{key: forcedKey{mi, j}, msg: msg}, nil
		}
		return nil, nil
	}
	if info.savepoint {
		switch info.spOp {
		case "BEGIN":
			*stack = append(*stack, info.spName)
		case "RELEASE":
			for k := len(*stack) - 1; k >= 0; k-- {
				if strings.EqualFold((*stack)[k], info.spName) {
					*stack = (*stack)[:k]
					break
				}
			}
		}
	}
	if info.write {
		res.Write = true
		res.LastInsertID = w.c.LastInsertRowID()
		if info.dml {
			res.RowsAffected = int64(w.c.Changes())
		}
	}
	return nil, nil
}
