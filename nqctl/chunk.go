package main

import (
	"strings"

	"github.com/nqlite/nqlite/service/api"
)

// chunk is a run of consecutive input statements sent as one request.
type chunk struct {
	// first is the index in the input of the chunk's first statement.
	first int
	stmts []string
	// tx is set when the chunk grew past the size limit to keep an open
	// transaction in one request.
	tx bool
}

// splitChunks groups statements, in order, into chunks whose JSON-encoded
// SQL is at most limit bytes. A statement larger than limit gets a chunk
// of its own. A chunk never ends while a transaction is open (after BEGIN
// until COMMIT, END or ROLLBACK; after an outer SAVEPOINT until its
// RELEASE), because nqlite rolls back what a request leaves open: such a
// chunk may exceed limit.
func splitChunks(stmts []string, limit int) []chunk {
	var (
		out  []chunk
		cur  chunk
		size int
		tx   txTracker
		buf  []byte
	)
	for i, s := range stmts {
		buf = api.AppendString(buf[:0], s)
		n := len(buf) + 1 // and a comma
		if len(cur.stmts) > 0 && size+n > limit {
			if tx.open() {
				cur.tx = true
			} else {
				out = append(out, cur)
				cur, size = chunk{first: i}, 0
			}
		}
		cur.stmts = append(cur.stmts, s)
		size += n
		tx.update(s)
	}
	if len(cur.stmts) > 0 {
		out = append(out, cur)
	}
	return out
}

// txTracker follows, from the leading keywords of each statement, whether
// a transaction is open. It is a heuristic over SQLite's grammar: BEGIN
// opens, COMMIT/END/ROLLBACK (not ROLLBACK TO) close, SAVEPOINT outside a
// transaction opens one that the RELEASE of that savepoint closes.
type txTracker struct {
	begun      bool
	savepoints []string
}

func (t *txTracker) open() bool { return t.begun || len(t.savepoints) > 0 }

func (t *txTracker) update(stmt string) {
	w := leadingWords(stmt, 4)
	switch w[0] {
	case "BEGIN":
		t.begun = true
	case "COMMIT", "END":
		t.begun, t.savepoints = false, nil
	case "ROLLBACK":
		if w[1] == "TO" || (w[1] == "TRANSACTION" && w[2] == "TO") {
			return
		}
		t.begun, t.savepoints = false, nil
	case "SAVEPOINT":
		if w[1] != "" {
			t.savepoints = append(t.savepoints, w[1])
		}
	case "RELEASE":
		name := w[1]
		if name == "SAVEPOINT" {
			name = w[2]
		}
		for i := len(t.savepoints) - 1; i >= 0; i-- {
			if t.savepoints[i] == name {
				t.savepoints = t.savepoints[:i]
				break
			}
		}
	}
}

// leadingWords returns the first n words of stmt, upper-cased and without
// identifier quotes; missing words are "".
func leadingWords(stmt string, n int) []string {
	words := make([]string, n)
	f := strings.Fields(stmt)
	for i := 0; i < n && i < len(f); i++ {
		words[i] = strings.ToUpper(strings.Trim(f[i], "\"'`[];"))
	}
	return words
}
