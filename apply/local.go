package apply

import (
	"errors"
	"fmt"

	"zombiezen.com/go/sqlite"
)

// ErrLocal is wrapped by ApplyBatch's errors when applying failed for a
// reason of this node's, not of the entry's: a full disk, an I/O error, a
// file locked by another process, corruption, memory. Such a failure
// differs between nodes, so it is never recorded as a statement's outcome:
// the batch is rolled back and ApplyBatch returns an error wrapping
// ErrLocal; the caller retries (the entry is applied, exactly once, when
// the cause is gone) and never moves past it.
var ErrLocal = errors.New("this node cannot apply entries")

// localFailure reports whether a SQLite error comes from this node's
// environment rather than from the statement
// (https://sqlite.org/rescode.html): every node given the same entry and
// the same database gets the same result for the others.
func localFailure(err error) bool {
	code := sqlite.ErrCode(err)
	var se *stepError
	if errors.As(err, &se) {
		code = se.code
	}
	switch code.ToPrimary() {
	case sqlite.ResultFull, sqlite.ResultIOErr, sqlite.ResultNoMem, sqlite.ResultCorrupt, sqlite.ResultNotADB,
		sqlite.ResultCantOpen, sqlite.ResultBusy, sqlite.ResultLocked, sqlite.ResultReadOnly, sqlite.ResultProtocol,
		sqlite.ResultPerm:
		return true
	}
	return false
}

// localError wraps a local failure of statement j.
func localError(j int, err error) error {
	return fmt.Errorf("%w: statement %d: %s", ErrLocal, j+1, sqlErrorText(err, ""))
}
