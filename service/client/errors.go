package client

import (
	"errors"

	"github.com/nqlite/nqlite/service/api"
)

// The kinds of request-level errors, for errors.Is on any error of this
// package (and of the database/sql driver nqsql, which passes them
// through). They are api's sentinels; an *api.Error (errors.As) carries
// the number, the kind, the message, the node and, for a stored write,
// Seq. What a client should do for each is in the README's request-level
// errors table; in short, for a write:
//
//   - ErrNotStored: JetStream did not store it: safe to retry;
//   - ErrStored: it is stored as entry Seq and will be applied, this node
//     did not apply it in time: do not retry; read with AfterSeq Seq;
//   - ErrUnknown: it may or may not be stored (also a *NoReplyError):
//     retry with the same Request.ID.
//
// Every other kind means nothing was published (except ErrTooLarge with
// a Seq: the write was applied, its response did not fit).
var (
	ErrBadRequest   = api.ErrBadRequest
	ErrForbidden    = api.ErrForbidden
	ErrTooLarge     = api.ErrTooLarge
	ErrStored       = api.ErrStored
	ErrNotStored    = api.ErrNotStored
	ErrUnknown      = api.ErrUnknown
	ErrNotReached   = api.ErrNotReached
	ErrReadTimeout  = api.ErrReadTimeout
	ErrUnavailable  = api.ErrUnavailable
	ErrRestoring    = api.ErrRestoring
	ErrIncompatible = api.ErrIncompatible
	ErrDiverged     = api.ErrDiverged
	ErrInternal     = api.ErrInternal
)

// StoredSeq returns the stream sequence at which the write that failed
// with err is stored (an *api.Error with Seq set: kind stored, or
// too_large for a write applied whose response did not fit), and whether
// there is one. A write with a sequence must not be sent again.
func StoredSeq(err error) (uint64, bool) {
	var e *api.Error
	if errors.As(err, &e) && e.Seq != 0 {
		return e.Seq, true
	}
	return 0, false
}
