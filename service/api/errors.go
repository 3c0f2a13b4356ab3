package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Error is a request-level failure, as every endpoint (query, read,
// snapshot, load) answers it:
//
//	headers  Nats-Service-Error-Code: <Code>, Nats-Service-Error: <Message>,
//	         Nqlite-Error-Code: <Kind>
//	body     {"error": "<Message>", "code": "<Kind>", "node": "<Node>", "seq": <Seq>}
//
// Code is the HTTP-like number micro and the nats CLI show; Kind is the
// stable machine-readable code (one of the Kind* constants, a closed set,
// the README's request-level errors table) that tells a client what to
// do, in particular whether a write is stored. "seq" is in the body only
// when not 0.
//
// errors.Is(err, ErrStored) (and each Err* sentinel of a kind) matches an
// *Error of that kind anywhere in err's chain.
type Error struct {
	// Code is the HTTP-like number (CodeBadRequest...), the
	// Nats-Service-Error-Code header.
	Code int
	// Kind is the machine-readable code, the body's "code" (and the
	// Nqlite-Error-Code header). An answer of a node older than the codes
	// has none: DecodeError then derives it from Code where Code says it
	// alone (400, 403, 413, 500) and leaves it empty otherwise (408, 503).
	Kind ErrorKind
	// Message is the text a person can act on.
	Message string
	// Node is the id of the node that answered, when known.
	Node string
	// Seq, when not 0, is the stream sequence at which the request's
	// entry is stored: the write must not be sent again (for KindStored,
	// read with after_seq Seq to see it).
	Seq uint64
}

func (e *Error) Error() string { return e.Message }

// Is reports whether target is the sentinel of e's kind (ErrNotStored,
// ErrStored...), so errors.Is works on the kind.
func (e *Error) Is(target error) bool {
	s, ok := target.(kindError)
	return ok && e.Kind != "" && ErrorKind(s) == e.Kind
}

// HTTP-like numbers of request-level errors, as sent in the
// Nats-Service-Error-Code header. Each kind has one number (ErrorKind.Code);
// a number may stand for several kinds, so a client decides by the kind.
const (
	CodeBadRequest = 400
	CodeForbidden  = 403
	// CodeTimeout (408) is only ever a write that is stored and was not
	// applied on the answering node within timeout_ms (KindStored).
	CodeTimeout  = 408
	CodeTooLarge = 413
	CodeInternal = 500
	// CodeUnavailable (503): nothing was done, retry later or on another
	// node (KindNotStored, KindUnavailable, KindRestoring,
	// KindIncompatible, KindDiverged).
	CodeUnavailable = 503
	// CodeGatewayTimeout (504): timeout_ms passed before the request was
	// published (KindNotReached, KindReadTimeout) or before JetStream
	// acknowledged it (KindUnknown): retrying with the same idempotency
	// key is always safe.
	CodeGatewayTimeout = 504
)

// ErrorKind is the machine-readable code of a request-level error (the
// body's "code"). The set is closed: these constants are every kind a node
// sends. A client meeting a kind it does not know (a newer node) goes by
// the number.
type ErrorKind string

// The kinds, with their numbers and what a client should do (see the
// README's request-level errors table).
const (
	// KindBadRequest (400): the request cannot be decoded, has bad
	// options, or holds a statement that would differ between nodes.
	// Nothing changed: fix the request.
	KindBadRequest ErrorKind = "bad_request"
	// KindForbidden (403): refused by nqlite's SQL policy, or a write on
	// nqlite.read.<db>. Nothing changed; do not retry.
	KindForbidden ErrorKind = "forbidden"
	// KindTooLarge (413): the request as an entry, or the response, is
	// over the NATS max payload. Nothing was published, unless Seq is set:
	// then the write was applied as entry Seq and only its response was
	// too large (do not retry).
	KindTooLarge ErrorKind = "too_large"
	// KindStored (408): the write is stored as entry Seq and will be
	// applied on every node, but the answering node did not apply it
	// within timeout_ms. Do not retry; read with after_seq Seq.
	KindStored ErrorKind = "stored"
	// KindNotStored (503): JetStream certainly did not store the write
	// (no JetStream server reachable, or the stream refused it). Safe to
	// retry.
	KindNotStored ErrorKind = "not_stored"
	// KindUnknown (504): JetStream did not acknowledge the write in time
	// (or the connection dropped before the ack and the node did not
	// apply it): it may or may not be stored. Retry with the same id
	// within the stream's duplicate window.
	KindUnknown ErrorKind = "unknown"
	// KindNotReached (504): the node did not apply the sequence the
	// request waits for (level strong, after_seq, or catching up to
	// classify a statement) within timeout_ms. Nothing was published:
	// retry, with a longer timeout_ms or on another node.
	KindNotReached ErrorKind = "not_reached"
	// KindReadTimeout (504): timeout_ms passed while waiting for a free
	// read connection or while a read ran (it was interrupted). Nothing
	// was published: retry with a longer timeout_ms or a cheaper query.
	KindReadTimeout ErrorKind = "read_timeout"
	// KindUnavailable (503): the node cannot serve the request now
	// (JetStream unreachable for a strong read, another load or snapshot
	// in progress, the file being replaced). Nothing was published: retry
	// later.
	KindUnavailable ErrorKind = "unavailable"
	// KindRestoring (503): the node is replacing its database with a
	// snapshot. Nothing was published: retry shortly or on another node.
	KindRestoring ErrorKind = "restoring"
	// KindIncompatible (503): the node met an entry of a newer format and
	// stopped applying the database until upgraded. Nothing was
	// published: ask another node.
	KindIncompatible ErrorKind = "incompatible"
	// KindDiverged (503): the node's running digest differs from the one
	// the majority of the nodes reporting a checkpoint agree on: its copy
	// is not the cluster's, so it answers nothing until it healed from a
	// snapshot of an agreeing node (see Divergence in the README).
	// Nothing was published: ask another node.
	KindDiverged ErrorKind = "diverged"
	// KindInternal (500): a bug in nqlite; please report it.
	KindInternal ErrorKind = "internal"
)

// kinds holds every kind's number and its sentinel's text.
var kinds = map[ErrorKind]struct {
	code int
	text string
}{
	KindBadRequest:   {CodeBadRequest, "bad request"},
	KindForbidden:    {CodeForbidden, "forbidden"},
	KindTooLarge:     {CodeTooLarge, "too large for one NATS message"},
	KindStored:       {CodeTimeout, "the write is stored but was not applied within the timeout"},
	KindNotStored:    {CodeUnavailable, "the write was not stored"},
	KindUnknown:      {CodeGatewayTimeout, "the write may or may not be stored"},
	KindNotReached:   {CodeGatewayTimeout, "the node did not reach the sequence within the timeout"},
	KindReadTimeout:  {CodeGatewayTimeout, "the read timed out"},
	KindUnavailable:  {CodeUnavailable, "the node cannot serve the request now"},
	KindRestoring:    {CodeUnavailable, "the node is restoring its database from a snapshot"},
	KindIncompatible: {CodeUnavailable, "the node cannot apply a newer entry format"},
	KindDiverged:     {CodeUnavailable, "the node's copy differs from the cluster's"},
	KindInternal:     {CodeInternal, "internal error"},
}

// Kinds returns every kind a node sends, in the README's order.
func Kinds() []ErrorKind {
	return []ErrorKind{KindBadRequest, KindForbidden, KindTooLarge, KindStored, KindNotStored, KindUnknown,
		KindNotReached, KindReadTimeout, KindUnavailable, KindRestoring, KindIncompatible, KindDiverged, KindInternal}
}

// Code returns the HTTP-like number of kind k, CodeInternal for a kind
// not in the set.
func (k ErrorKind) Code() int {
	if info, ok := kinds[k]; ok {
		return info.code
	}
	return CodeInternal
}

// kindError is the type of the kind sentinels.
type kindError ErrorKind

func (k kindError) Error() string {
	return "nqlite " + string(k) + ": " + kinds[ErrorKind(k)].text
}

// Sentinels of the kinds, for errors.Is: errors.Is(err, ErrStored) is true
// when err holds an *Error of KindStored.
var (
	ErrBadRequest   error = kindError(KindBadRequest)
	ErrForbidden    error = kindError(KindForbidden)
	ErrTooLarge     error = kindError(KindTooLarge)
	ErrStored       error = kindError(KindStored)
	ErrNotStored    error = kindError(KindNotStored)
	ErrUnknown      error = kindError(KindUnknown)
	ErrNotReached   error = kindError(KindNotReached)
	ErrReadTimeout  error = kindError(KindReadTimeout)
	ErrUnavailable  error = kindError(KindUnavailable)
	ErrRestoring    error = kindError(KindRestoring)
	ErrIncompatible error = kindError(KindIncompatible)
	ErrDiverged     error = kindError(KindDiverged)
	ErrInternal     error = kindError(KindInternal)
)

// NewError returns an *Error of kind k, with k's number.
func NewError(k ErrorKind, format string, args ...any) *Error {
	return &Error{Code: k.Code(), Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Errorf returns an *Error with the given number and the kind that number
// stands for when it stands for one: 400 bad_request, 403 forbidden, 413
// too_large, 500 internal, 503 unavailable. Other numbers (408, 504) are
// shared by kinds that mean different things for a write: use NewError.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Kind: codeKind(code), Message: fmt.Sprintf(format, args...)}
}

func codeKind(code int) ErrorKind {
	switch code {
	case CodeBadRequest:
		return KindBadRequest
	case CodeForbidden:
		return KindForbidden
	case CodeTooLarge:
		return KindTooLarge
	case CodeInternal:
		return KindInternal
	case CodeUnavailable:
		return KindUnavailable
	}
	return ""
}

// ErrorCode returns the HTTP-like number of err: the Code of an *Error in
// its chain, or CodeInternal.
func ErrorCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// KindOf returns the kind of err: the Kind of an *Error in its chain
// (empty from a node older than the kinds, see Error.Kind), or
// KindInternal for any other error.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// Body returns the JSON body of e as a node sends it:
// {"error": "<Message>", "code": "<Kind>", "node": "<Node>"} and
// "seq": N when Seq is set.
func (e *Error) Body() []byte {
	b := append([]byte(`{"error":`), AppendString(nil, e.Message)...)
	b = append(b, `,"code":`...)
	b = AppendString(b, string(e.Kind))
	b = append(b, `,"node":`...)
	b = AppendString(b, e.Node)
	if e.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, e.Seq, 10)
	}
	return append(b, '}')
}

// DecodeError returns the *Error of an error answer: code is the
// Nats-Service-Error-Code header (0 when absent: CodeInternal), body its
// body, description the Nats-Service-Error header (the message when the
// body holds none). A body that is not an error body gives an *Error whose
// message is the body itself (or description). Kind comes from the body's
// "code"; a body without one (an older node) gets the kind code stands
// for alone (400, 403, 413, 500), or none (408, 503 meant several things).
func DecodeError(body []byte, code int, description string) *Error {
	if code == 0 {
		code = CodeInternal
	}
	e := &Error{Code: code, Message: description}
	var raw struct {
		Error *string `json:"error"`
		Code  string  `json:"code"`
		Node  string  `json:"node"`
		Seq   uint64  `json:"seq"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if dec.Decode(&raw) != nil || raw.Error == nil {
		if s := strings.TrimSpace(string(body)); s != "" && description == "" {
			e.Message = s
		}
	} else {
		e.Message, e.Node, e.Seq, e.Kind = *raw.Error, raw.Node, raw.Seq, ErrorKind(raw.Code)
	}
	if e.Kind == "" && code != CodeUnavailable {
		e.Kind = codeKind(code)
	}
	if strings.TrimSpace(e.Message) == "" {
		e.Message = fmt.Sprintf("request failed with code %d", code)
	}
	return e
}
