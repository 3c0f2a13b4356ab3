package apply

import (
	"context"
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

// forcedKey names statement stmt of request req (0 for the first) of the
// batch's message msg.
type forcedKey struct{ msg, req, stmt int }

// delivery is an outcome for a request waiting on this node.
type delivery struct {
	token string
	o     Outcome
}

// forcedStmt is a statement that undid the batch's transaction: in the
// replay it is not run but fails with msg, and charges the entry's budget
// what it took the first time, so the replay counts as the first run did.
type forcedStmt struct {
	msg     string
	cost    Budget // steps and bytes it took before it failed
	write   bool   // cost counts against the entry's budget (else its reads')
	exhaust bool   // it went over the budget: the rest of the entry fails
}

// txLost reports that a statement ended the enclosing SQLite transaction
// (ON CONFLICT ROLLBACK, RAISE(ROLLBACK), an I/O error, or an interrupt
// because it went over the entry's budget), undoing the whole batch; or
// that a statement went over the budget and must be undone.
type txLost struct {
	key forcedKey
	forcedStmt
}

// Error makes a *txLost travel as an error through applyRequests; it is
// never returned by ApplyBatch (the batch is replayed).
func (l *txLost) Error() string { return "transaction lost: " + l.msg }

// ApplyBatch applies msgs, which must follow the applied sequence in stream
// order, in one SQLite transaction that also stores the last sequence: the
// batch commits whole or not at all, so an entry is never applied twice or
// skipped. Messages that are not valid entries are logged and skipped;
// barriers (Barrier) are skipped silently. Either way their sequence is
// applied.
// An entry in a newer format (ErrUnknownVersion) is not skipped: the
// entries before it are committed and ApplyBatch returns an
// *IncompatibleError for it; it and the entries after it stay unapplied.
//
// Each entry is applied within its Budget (see Budget): a statement over it
// fails, on every node alike.
//
// Outcomes go to the requests waiting on this node (see Await).
//
// A statement that rolls back the enclosing transaction is replayed as a
// failure: the batch restarts and that statement is not run but reported
// with its error. The outcome therefore does not depend on how entries are
// grouped into batches, which differs between nodes.
//
// ctx bounds the batch: once it is done, the statement running is
// interrupted, the batch is rolled back and ApplyBatch returns ctx.Err()
// (the entries are applied again, exactly once, by the next call or after
// a restart). An interruption is never recorded as a statement's outcome.
// A load entry's fetch runs under ctx too.
func (db *DB) ApplyBatch(ctx context.Context, msgs []Msg) error {
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	if db.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	db.actx = ctx
	defer func() { db.actx = nil }()
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
	var incompatible error
	for i, m := range msgs {
		if IsBarrier(m.Data) {
			continue // entries[i] nil: nothing to run
		}
		entries[i], decodeErrs[i] = DecodeEntry(m.Data)
		if errors.Is(decodeErrs[i], ErrUnknownVersion) {
			incompatible = &IncompatibleError{Seq: m.Seq, Version: m.Data[2]}
			msgs, entries, decodeErrs = msgs[:i], entries[:i], decodeErrs[:i]
			break
		}
		if db.mutate != nil && entries[i] != nil {
			db.mutate(m.Seq, entries[i])
		}
	}
	if err := db.applyDecoded(msgs, entries, decodeErrs); err != nil {
		return err
	}
	return incompatible
}

// applyDecoded applies decoded messages (nil entries are skipped).
func (db *DB) applyDecoded(msgs []Msg, entries []*Entry, decodeErrs []error) error {
	if len(msgs) == 0 {
		return nil
	}
	// A load entry replaces the database: the entries before it commit
	// first, the ones after it apply to the loaded database.
	start := 0
	for i, e := range entries {
		if e == nil || e.Load == nil {
			continue
		}
		if i > start {
			if err := db.applySegment(msgs[start:i], entries[start:i], decodeErrs[start:i]); err != nil {
				return err
			}
		}
		if err := db.applyLoad(msgs[i].Seq, e, msgs[i].Data); err != nil {
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
	for len(msgs) > 0 && msgs[0].Seq <= db.applied.Load() {
		// In the snapshot a load entry before them restored (see Loader).
		msgs, entries, decodeErrs = msgs[1:], entries[1:], decodeErrs[1:]
	}
	if len(msgs) == 0 {
		return nil
	}
	if k := db.pinCut(msgs); k >= 0 {
		// ContentHashAt waits for the sequence of msgs[k]: the batch stops
		// there, so the hash can read the database as of it.
		if err := db.applySegment(msgs[:k+1], entries[:k+1], decodeErrs[:k+1]); err != nil {
			return err
		}
		return db.applySegment(msgs[k+1:], entries[k+1:], decodeErrs[k+1:])
	}
	forced := map[forcedKey]forcedStmt{}
	for {
		outcomes, costs, delta, digests, lost, err := db.tryBatch(msgs, entries, forced)
		if err != nil {
			return err
		}
		if lost != nil {
			if _, dup := forced[lost.key]; dup {
				return fmt.Errorf("apply entry %d: statement %d keeps rolling back the transaction: %s", msgs[lost.key.msg].Seq, lost.key.stmt+1, lost.msg)
			}
			forced[lost.key] = lost.forcedStmt
			continue
		}
		last := msgs[len(msgs)-1].Seq
		if delta != nil {
			db.countsMu.Lock()
			db.counts.Resets += delta.Resets
			for t, k := range delta.Tables {
				db.counts.Tables[t] += k
			}
			db.countsMu.Unlock()
		}
		seqs := make([]uint64, len(msgs))
		for i := range msgs {
			seqs[i] = msgs[i].Seq
		}
		db.commitDigests(seqs, digests)
		if db.ckpt != nil {
			db.ckpt.wrote(db.w)
		}
		db.setApplied(last)
		db.releaseSnapshots()
		for i, e := range entries {
			if decodeErrs[i] != nil {
				db.skipped.Add(1)
				db.log.Warn("skipped stream message that is not a valid entry", "seq", msgs[i].Seq, "err", decodeErrs[i])
				continue
			}
			if e == nil {
				continue // a barrier
			}
			db.noteSQLite(msgs[i].Seq, e)
			if db.traceCost != nil {
				db.traceCost(msgs[i].Seq, costs[i])
			}
			for _, d := range outcomes[i] {
				db.deliver(d.token, d.o)
			}
		}
		return nil
	}
}

// tryBatch runs the batch once; it returns each entry's results (for
// entries with a waiter here), what each entry spent of its budget, the
// change counts the batch added (nil when it changed no rows), and the
// running digest after each message (committed with the batch).
func (db *DB) tryBatch(msgs []Msg, entries []*Entry, forced map[forcedKey]forcedStmt) (outcomes [][]delivery, costs []Budget, delta *ChangeCounts, digests []Digest, lost *txLost, err error) {
	w := db.w
	// Stopping interrupts the statement running (an endless one included);
	// the interrupt is lifted before the rollback.
	w.c.SetInterrupt(db.actx.Done())
	defer w.c.SetInterrupt(nil)
	if err := w.exec("BEGIN IMMEDIATE"); err != nil {
		return nil, nil, nil, nil, nil, fmt.Errorf("apply entry %d: %w", msgs[0].Seq, err)
	}
	countsExisted, requestsExisted := db.countsExist, db.requestsExist
	rollback := func(w *conn) {
		rollback(w)
		// A CREATE of the counts or request ids table is undone too.
		db.countsExist, db.requestsExist = countsExisted, requestsExisted
	}
	if err := db.flushFirstFrame(msgs[len(msgs)-1].Seq); err != nil {
		rollback(w)
		return nil, nil, nil, nil, nil, fmt.Errorf("apply entry %d: %w", msgs[0].Seq, err)
	}
	outcomes = make([][]delivery, len(msgs))
	costs = make([]Budget, len(msgs))
	digests = make([]Digest, len(msgs))
	prev := db.dstate.Digest // under applyMu: only the apply writes it
	var changed []EntryChanges
	for i, e := range entries {
		if e == nil {
			prev = db.dig.step(prev, msgs[i].Seq, digestInvalid)
			digests[i] = prev
			continue
		}
		res, changes, cost, err := db.applyRequests(msgs[i], i, e, prev, forced)
		if cerr := db.actx.Err(); cerr != nil {
			// Interrupted by the caller: whatever the statements reported
			// is not their outcome. Undo the batch; it is applied again
			// later.
			err = cerr
		}
		if err != nil {
			rollback(w)
			var lost *txLost
			if errors.As(err, &lost) {
				return nil, nil, nil, nil, lost, nil
			}
			return nil, nil, nil, nil, nil, fmt.Errorf("apply entry %d: %w", msgs[i].Seq, err)
		}
		costs[i] = cost
		prev = db.dig.sum()
		digests[i] = prev
		outcomes[i] = res
		if counted(msgs[i].Data) && len(changes) > 0 {
			changed = append(changed, EntryChanges{Seq: msgs[i].Seq, Time: e.Time, Node: e.Node, Changes: changes})
		}
	}
	last := msgs[len(msgs)-1].Seq
	if err := db.actx.Err(); err != nil {
		rollback(w)
		return nil, nil, nil, nil, nil, err
	}
	delta, err = db.commitChanges(changed)
	if err != nil {
		rollback(w)
		if cerr := db.actx.Err(); cerr != nil {
			return nil, nil, nil, nil, nil, cerr
		}
		return nil, nil, nil, nil, nil, fmt.Errorf("apply entries %d-%d: %w", msgs[0].Seq, last, err)
	}
	// The applied sequence (last) was stored by flushFirstFrame, in this
	// transaction: storing it again would only write its page a second
	// time into the WAL.
	if err := w.exec(storeDigestSQL, prev[:]); err != nil {
		rollback(w)
		return nil, nil, nil, nil, nil, fmt.Errorf("apply entry %d: store the running digest: %w", last, err)
	}
	if err := w.exec("COMMIT"); err != nil {
		rollback(w)
		return nil, nil, nil, nil, nil, fmt.Errorf("apply entries %d-%d: commit: %w", msgs[0].Seq, last, err)
	}
	return outcomes, costs, delta, digests, nil, nil
}

// counted reports whether an entry's changes count (format version 3 or
// later; see ChangeCounts).
func counted(data []byte) bool { return len(data) >= 3 && data[2] >= 3 }

// valuesCharged reports whether an entry's large allocations count toward
// its step budget (format version 5 or later; valuemem.go).
func valuesCharged(data []byte) bool { return len(data) >= 3 && data[2] >= 5 }

// loadKeepsRequests reports whether a load entry's new file holds the
// request ids of the database it replaces (format version 6 or later;
// requests.go).
func loadKeepsRequests(data []byte) bool { return len(data) >= 3 && data[2] >= 6 }

// commitChanges hands the batch's changes to OnChanges, inside the
// batch's transaction, and returns the counts they add (nil for none).
func (db *DB) commitChanges(changed []EntryChanges) (*ChangeCounts, error) {
	if len(changed) == 0 {
		return nil, nil
	}
	if db.onChanges != nil {
		if err := db.onChanges(db.actx, db.counts, changed); err != nil {
			return nil, fmt.Errorf("changes: %w", err)
		}
	}
	delta := &ChangeCounts{Tables: map[string]uint64{}}
	for i := range changed {
		delta.add(&changed[i])
	}
	return delta, nil
}

// applyRequests applies the requests of entry e (message m, index mi in
// the batch) inside the batch transaction, each as if it were an entry of
// its own: connection state reset, its own savepoint (Tx), budget and
// forced statements; in format version 4, a request whose id is recorded
// is skipped as a duplicate, and the others' ids are recorded. It returns
// the outcomes for the requests waiting here, the entry's row changes (in
// request order), what its requests spent of their budgets, and leaves
// the entry's digest in db.dig (sum). A *txLost error: a statement undid
// the batch's transaction.
func (db *DB) applyRequests(m Msg, mi int, e *Entry, prev Digest, forced map[forcedKey]forcedStmt) ([]delivery, []Change, Budget, error) {
	v4 := len(m.Data) >= 3 && m.Data[2] >= 4
	if v4 {
		if err := db.pruneRequests(e.Time); err != nil {
			return nil, nil, Budget{}, err
		}
	}
	db.dig.begin(prev, m.Seq)
	var one [1]Request
	reqs := one[:]
	if len(e.More) == 0 {
		one[0] = Request{Token: e.Token, ID: e.ID, Seed: e.Seed, Tx: e.Tx, Statements: e.Statements}
	} else {
		reqs = e.Requests()
	}
	var (
		out     []delivery
		changes []Change
		spent   Budget
	)
	for k := range reqs {
		rq := &reqs[k]
		collect := e.Node == db.node && db.node != "" && db.hasWaiter(rq.Token)
		if v4 && rq.ID != "" {
			seq, dup, err := db.requestSeq(rq.ID)
			if err != nil {
				return nil, nil, Budget{}, err
			}
			if dup {
				db.dig.request(0, nil, nil, nil)
				if collect {
					out = append(out, delivery{rq.Token, Outcome{Seq: seq, Results: []api.Result{}, Duplicate: true}})
				}
				continue
			}
		}
		r := &entryRun{e: e, rq: rq, mi: mi, ri: k, forced: forced, budget: e.Budget.orBase(),
			collect: collect, counted: counted(m.Data), values: valuesCharged(m.Data),
			enc: db.denc[:0], ends: db.dends[:0], reads: db.dreads[:0]}
		res, lost, err := db.applyEntry(r)
		if err == nil && lost != nil {
			err = lost
		}
		if err != nil {
			return nil, nil, Budget{}, err
		}
		db.dig.request(len(r.ends), r.enc, res, r.reads)
		db.denc, db.dends, db.dreads = r.enc, r.ends, r.reads // reused by the next request
		spent.Steps += r.spent.Steps
		spent.Bytes += r.spent.Bytes
		if len(reqs) == 1 {
			changes = r.changes
		} else {
			changes = append(changes, r.changes...)
		}
		if v4 && rq.ID != "" {
			if err := db.recordRequest(rq.ID, m.Seq, e.Time+2*e.Keep); err != nil {
				return nil, nil, Budget{}, err
			}
		}
		if collect {
			out = append(out, delivery{rq.Token, Outcome{Seq: m.Seq, Results: res}})
		}
	}
	if err := db.countEntry(counted(m.Data), changes); err != nil {
		return nil, nil, Budget{}, err
	}
	return out, changes, spent, nil
}

// entryRun is the state of one request of an entry being applied.
type entryRun struct {
	e       *Entry
	rq      *Request // the request (see Entry.Requests)
	mi      int      // the entry's index in the batch
	ri      int      // the request's index in the entry
	collect bool
	counted bool // format version 3 or later: its changes count (ChangeCounts)
	values  bool // format version 5 or later: large allocations count as steps
	forced  map[forcedKey]forcedStmt
	budget  Budget // the entry's, both fields set
	// spent is what the entry's statements took of its budget so far; read
	// what reads took of theirs (only on the node that runs them).
	spent Budget
	read  uint64
	// exhausted is the budget error once the entry went over its budget:
	// every later statement fails with it.
	exhausted string
	stack     []string // open user savepoints; "nqlite_user" for BEGIN
	// changes are the row changes the entry's statements made so far and
	// that stay (see changes.go); marks[k] is len(changes) when stack[k]
	// was opened, so rolling back to it drops what followed.
	changes []Change
	marks   []int
	// enc is the digest encoding of changes, ends[i] where changes[i]'s
	// ends in it (see capture); reads[j]: statement j ran as a read, whose
	// result is the answering node's alone and enters the digest as a
	// marker.
	enc   []byte
	ends  []int
	reads []bool
	// readFailed: the last statement is a read that failed while running.
	// Reads run only on the node that answers the request, so such a
	// failure must not decide anything the other nodes do.
	readFailed bool
	// isRead: the last statement is a read (set once it is classified).
	isRead bool
}

// keep appends the changes the statement just run made (and that stay)
// to the entry's.
func (r *entryRun) keep(c *capture) {
	base := len(r.enc)
	r.changes = append(r.changes, c.changes...)
	r.enc = append(r.enc, c.enc...)
	for _, e := range c.ends {
		r.ends = append(r.ends, base+e)
	}
}

// truncate drops the entry's changes after the first n (a rollback).
func (r *entryRun) truncate(n int) {
	r.changes, r.ends = r.changes[:n], r.ends[:n]
	if n == 0 {
		r.enc = r.enc[:0]
	} else {
		r.enc = r.enc[:r.ends[n-1]]
	}
}

// charge adds what a statement took to the entry's budget (write) or its
// reads' (!write), and marks the entry exhausted past its budget.
func (r *entryRun) charge(cost Budget, write bool) {
	if !write {
		r.read += cost.Steps
		return
	}
	r.spent.Steps += cost.Steps
	r.spent.Bytes += cost.Bytes
	switch {
	case r.exhausted != "":
	case r.spent.Steps > r.budget.Steps:
		r.exhausted = stepsError(r.budget.Steps)
	case r.spent.Bytes > r.budget.Bytes:
		r.exhausted = bytesError(r.budget.Bytes)
	}
}

// rollback lifts the interrupt of w and rolls back its open transaction.
func rollback(w *conn) {
	w.c.SetInterrupt(nil)
	if !w.c.AutocommitEnabled() {
		w.exec("ROLLBACK")
	}
	// A rolled-back batch may have created or dropped a virtual table:
	// read which exist again at the next entry.
	w.vtabsKnown = false
}

// quoteIdent quotes a SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// applyEntry runs one request's statements (r.rq, one request of r.e)
// inside the batch transaction. Statements that succeed stay applied,
// statements that fail are undone by SQLite's statement journal; with Tx,
// the first failure undoes the request. User BEGIN/COMMIT/ROLLBACK become
// savepoints, and a transaction or savepoint the request leaves open is
// rolled back at its end.
func (db *DB) applyEntry(r *entryRun) ([]api.Result, *txLost, error) {
	w, e := db.w, r.rq
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
	failed := false
	for j := range e.Statements {
		db.beginStatement(r.e.Time, e.Seed, j)
		res := &results[j]
		r.readFailed, r.isRead = false, false
		lost, err := db.applyStatement(r, j, res)
		r.reads = append(r.reads, r.isRead)
		if eerr := db.endStatement(); err == nil {
			err = eerr
		}
		if err != nil || lost != nil {
			return nil, lost, err
		}
		if res.Error != "" && e.Tx && !r.readFailed {
			failed = true
			results = results[:j+1]
			break
		}
	}
	stack := r.stack
	if failed {
		// All or nothing: undo the entry, user savepoints included.
		if err := w.exec("ROLLBACK TO nqlite_tx"); err != nil {
			return nil, nil, err
		}
		r.truncate(0)
	} else if len(stack) > 0 {
		// An entry never leaves a transaction open.
		if err := w.exec("ROLLBACK TO " + quoteIdent(stack[0])); err != nil {
			return nil, nil, err
		}
		r.truncate(r.marks[0])
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

func (db *DB) applyStatement(r *entryRun, j int, res *api.Result) (*txLost, error) {
	w := db.w
	key := forcedKey{r.mi, r.ri, j}
	if f, ok := r.forced[key]; ok {
		res.Error = f.msg
		// A read that undid the transaction ran on this node alone: as any
		// read's failure, it must not fail a Tx entry here only.
		r.isRead, r.readFailed = !f.write, !f.write
		r.charge(f.cost, f.write)
		if f.exhaust && r.exhausted == "" {
			r.exhausted = f.msg
		}
		return nil, nil
	}
	if r.exhausted != "" {
		res.Error = r.exhausted
		return nil, nil
	}
	stack := &r.stack
	st := &r.rq.Statements[j]
	cs, err := w.prepare(st.SQL)
	if errors.Is(err, ErrLocal) {
		return nil, err
	}
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
			r.marks = append(r.marks, len(r.changes))
		case len(*stack) == 0:
			res.Error = fmt.Sprintf("cannot %s - %v", strings.ToLower(info.txOp), errNoTx)
		case info.txOp == "COMMIT":
			if err := w.exec("RELEASE " + quoteIdent((*stack)[0])); err != nil {
				return nil, err
			}
			*stack, r.marks = nil, nil
		default: // ROLLBACK
			if err := w.exec("ROLLBACK TO " + quoteIdent((*stack)[0])); err != nil {
				return nil, err
			}
			if err := w.exec("RELEASE " + quoteIdent((*stack)[0])); err != nil {
				return nil, err
			}
			r.truncate(r.marks[0])
			*stack, r.marks = nil, nil
		}
		return nil, nil
	}
	r.isRead = !info.write
	if err := bind(cs.stmt, st); err != nil {
		res.Error = errorText(err)
		return nil, nil
	}
	if !info.write && !r.collect {
		// A read inside an entry changes nothing: only the node that
		// answers the request needs its rows.
		return nil, nil
	}
	if !info.write && r.read > r.budget.Steps {
		res.Error = stepsError(r.budget.Steps)
		r.readFailed = true
		return nil, nil
	}
	m := db.meter
	if info.write {
		m.arm(cs, r.spent.Steps, r.budget.Steps, true, r.spent.Bytes, r.budget.Bytes, r.values)
	} else {
		m.arm(cs, r.read, r.budget.Steps, false, 0, 0, r.values)
	}
	var (
		stepErr error
		kept    bool // the statement failed and SQLite kept its changes (OR FAIL)
		step    = cs.stmt.Step
	)
	if info.write {
		step = func() (bool, error) {
			row, k, err := w.stepWrite(cs, db.actx.Done())
			kept = k
			return row, err
		}
	}
	if r.collect {
		stepErr = readRows(w, cs, res, nil, step)
	} else {
		for {
			row, err := step()
			if err != nil || !row {
				stepErr = err
				break
			}
		}
	}
	steps, over := m.disarm(cs)
	cost := Budget{Steps: steps}
	if info.write {
		cost.Bytes = m.bytes - r.spent.Bytes
	}
	if over != "" {
		*res = api.Result{Error: over}
		if info.write {
			// Undo it (an interrupted write has already rolled back the
			// whole SQLite transaction; one that finished over the byte
			// budget on its last row has not) and replay the batch with
			// it failed, as any statement that ends the transaction.
			return &txLost{key: key, forcedStmt: forcedStmt{msg: over, cost: cost, write: true, exhaust: true}}, nil
		}
		r.read = max(r.read+steps, r.budget.Steps+1) // later reads fail at once
		r.readFailed = true
		return nil, nil
	}
	if stepErr != nil && localFailure(stepErr) {
		// Not the statement's outcome: this node's disk, file or memory.
		return nil, localError(j, stepErr)
	}
	if stepErr != nil {
		msg := sqlErrorText(stepErr, st.SQL)
		*res = api.Result{Error: msg}
		if w.c.AutocommitEnabled() {
			return &txLost{key: key, forcedStmt: forcedStmt{msg: msg, cost: cost, write: info.write}}, nil
		}
		r.charge(cost, info.write)
		r.readFailed = !info.write
		if kept {
			// OR FAIL: the rows changed before the failure stay.
			r.keep(&m.capture)
		}
		return nil, nil
	}
	r.charge(cost, info.write)
	r.keep(&m.capture)
	if info.savepoint {
		switch info.spOp {
		case "BEGIN":
			*stack = append(*stack, info.spName)
			r.marks = append(r.marks, len(r.changes))
		case "RELEASE":
			for k := len(*stack) - 1; k >= 0; k-- {
				if strings.EqualFold((*stack)[k], info.spName) {
					*stack, r.marks = (*stack)[:k], r.marks[:k]
					break
				}
			}
		case "ROLLBACK":
			// ROLLBACK TO: back to just after SAVEPOINT name, which stays
			// open; the savepoints opened after it are gone.
			for k := len(*stack) - 1; k >= 0; k-- {
				if strings.EqualFold((*stack)[k], info.spName) {
					r.truncate(r.marks[k])
					*stack, r.marks = (*stack)[:k+1], r.marks[:k+1]
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
