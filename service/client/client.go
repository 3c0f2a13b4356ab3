// Package client is nqlite's Go client: every endpoint of the wire
// contract in service/api, over an existing NATS connection.
//
//   - Query and Read send requests to nqlite.query.<db> and the read-only
//     nqlite.read.<db>, and decode the responses (Send also returns the
//     raw body);
//   - Snapshot asks a node for a fresh snapshot, Download copies it from
//     the Object Store; Load uploads a SQLite file or SQL dump and makes it
//     the database on every node;
//   - Stats collects the micro STATS replies of every node;
//   - ConnConfig connects to NATS as the nats CLI does (flags, NATS_*
//     variables, nats contexts).
//
// It imports no SQLite package (go list -deps shows none), so applications
// and nqctl stay light. The database/sql driver is in service/client/nqsql.
//
//	c := client.New(nc)
//	resp, err := c.Query(ctx, "main", client.Request{Statements: []api.Statement{{SQL: "SELECT 1"}}})
//
// Request-level failures come back as *api.Error carrying the number
// (400, 403, 408, 413, 500, 503, 504), the machine-readable kind and, for
// a stored write, its sequence; errors.Is with ErrNotStored, ErrStored,
// ErrUnknown and the other kind sentinels (errors.go) tells a client what
// to do. Statement errors are in Result.Error. No node serving the
// database is ErrNoNode; no reply within the deadline is a *NoReplyError
// (which matches ErrUnknown).
package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
)

// Client sends requests to nqlite nodes.
type Client struct {
	nc *nats.Conn
}

// New returns a client using nc.
func New(nc *nats.Conn) *Client { return &Client{nc: nc} }

// Request is a request in the object form: api.Request, whose Encode
// gives the JSON body. Zero fields are omitted and take the server's
// defaults.
type Request = api.Request

// ErrNoNode is returned (wrapped, with the database's name) when no node
// serves the database: NATS reported no responders on its subject, or no
// node answered micro STATS.
var ErrNoNode = errors.New("no nqlite node serves this database")

// PayloadError is a request larger than the NATS connection's max
// payload: it was not sent.
type PayloadError struct {
	Size int   // bytes of the request
	Max  int64 // the server's max payload
}

func (e *PayloadError) Error() string {
	return fmt.Sprintf("the request is %d bytes, over the NATS max payload of %d bytes", e.Size, e.Max)
}

// NoReplyError is a request sent but not answered: the context's deadline
// passed (Wait is how long the request waited) or it was cancelled. A
// write may or may not have been applied; retry it with the same
// idempotency key (Request.ID) to be safe: errors.Is(err, ErrUnknown) is
// true, as for a node's answer of kind unknown. It unwraps to the
// context's error.
type NoReplyError struct {
	Wait time.Duration
	Err  error
}

func (e *NoReplyError) Error() string {
	if errors.Is(e.Err, context.Canceled) {
		return "interrupted: the request may or may not have been applied"
	}
	return fmt.Sprintf("no response within %v: the request may or may not have been applied", e.Wait)
}

func (e *NoReplyError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUnknown: without an answer, a write may
// or may not be stored.
func (e *NoReplyError) Is(target error) bool { return target == ErrUnknown }

// Endpoint chooses which request subject of a database a request goes to.
type Endpoint int

const (
	// QueryEndpoint is nqlite.query.<db>: reads and writes.
	QueryEndpoint Endpoint = iota
	// ReadEndpoint is nqlite.read.<db>: a request that would write is
	// refused with 403 before anything is published.
	ReadEndpoint
)

// Subject returns the subject of endpoint ep of database db.
func (ep Endpoint) Subject(db string) string {
	if ep == ReadEndpoint {
		return api.ReadSubject(db)
	}
	return api.QuerySubject(db)
}

// Query sends r to nqlite.query.<db> and waits for the response. Without a
// deadline in ctx it waits r.TimeoutMS (or the server default) plus one
// second.
func (c *Client) Query(ctx context.Context, db string, r Request) (*api.Response, error) {
	_, resp, err := c.Send(ctx, db, QueryEndpoint, r.Encode(), r.TimeoutMS)
	return resp, err
}

// Read sends r to the read-only nqlite.read.<db>: a statement that would
// write fails the request with 403 and nothing is published.
func (c *Client) Read(ctx context.Context, db string, r Request) (*api.Response, error) {
	_, resp, err := c.Send(ctx, db, ReadEndpoint, r.Encode(), r.TimeoutMS)
	return resp, err
}

// QueryString sends SQL text (possibly several statements) to database db.
func (c *Client) QueryString(ctx context.Context, db, sql string) (*api.Response, error) {
	return c.Do(ctx, db, []byte(sql), 0)
}

// Do sends a raw request payload (any of the three forms) to
// nqlite.query.<db> and decodes the response. timeoutMS is the request's
// timeout_ms, used to bound the wait when ctx has no deadline (0: the
// server default).
func (c *Client) Do(ctx context.Context, db string, payload []byte, timeoutMS int) (*api.Response, error) {
	_, resp, err := c.Send(ctx, db, QueryEndpoint, payload, timeoutMS)
	return resp, err
}

// Send sends a raw request payload to endpoint ep of database db and
// returns the response body as received and its decoding (values exact:
// INTEGER int64, REAL float64, BLOB []byte; see api.DecodeResponse).
// Without a deadline in ctx it waits timeoutMS (0: the server default)
// plus one second.
//
// Errors: a payload over the connection's max payload is a *PayloadError
// (not sent); no node serving db wraps ErrNoNode; no reply in time is a
// *NoReplyError; a request-level failure is an *api.Error with the number
// and kind (see api.Error and errors.go).
func (c *Client) Send(ctx context.Context, db string, ep Endpoint, payload []byte, timeoutMS int) ([]byte, *api.Response, error) {
	if !api.ValidDBName(db) {
		return nil, nil, fmt.Errorf("database name %q: use 1-64 of A-Z a-z 0-9 _ -", db)
	}
	if limit := c.nc.MaxPayload(); limit > 0 && int64(len(payload)) > limit {
		return nil, nil, &PayloadError{Size: len(payload), Max: limit}
	}
	if timeoutMS <= 0 {
		timeoutMS = api.DefaultTimeoutMS
	}
	msg, err := c.request(ctx, db, ep.Subject(db), payload, time.Duration(timeoutMS)*time.Millisecond+time.Second)
	if err != nil {
		return nil, nil, err
	}
	resp, err := api.DecodeResponse(msg.Data, errorCode(msg))
	if err != nil {
		return nil, nil, err
	}
	return msg.Data, resp, nil
}

// request sends payload to subject and waits for the reply, at most wait
// when ctx has no deadline. It maps NATS's errors to ErrNoNode and
// *NoReplyError.
func (c *Client) request(ctx context.Context, db, subject string, payload []byte, wait time.Duration) (*nats.Msg, error) {
	if deadline, ok := ctx.Deadline(); ok {
		wait = time.Until(deadline).Round(time.Millisecond)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	msg, err := c.nc.RequestWithContext(ctx, subject, payload)
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("%w %q (no responders on %s): is a node running with --db %s?", ErrNoNode, db, subject, db)
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
			return nil, &NoReplyError{Wait: wait, Err: err}
		}
		return nil, fmt.Errorf("request %s: %w", subject, err)
	}
	return msg, nil
}

// errorCode returns the micro error code of a reply (0: none).
func errorCode(msg *nats.Msg) int {
	code := 0
	if h := msg.Header.Get(api.ErrorCodeHeader); h != "" {
		code, _ = strconv.Atoi(h)
		if code == 0 {
			code = api.CodeInternal
		}
	}
	return code
}

// replyError returns the request-level error of a reply to one of the
// admin endpoints (snapshot, load) as an *api.Error, or nil.
func replyError(msg *nats.Msg) error {
	code := errorCode(msg)
	if code == 0 {
		return nil
	}
	e := api.DecodeError(msg.Data, code, msg.Header.Get(api.ErrorHeader))
	if e.Kind == "" {
		e.Kind = api.ErrorKind(msg.Header.Get(api.ErrorKindHeader))
	}
	return e
}
