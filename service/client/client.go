// Package client is a small Go client for nqlite: it sends requests to
// nqlite.query.<db> over an existing NATS connection and decodes the
// responses. It imports no SQLite package (go list -deps shows none), so
// applications and nqctl stay light.
//
//	c := client.New(nc)
//	resp, err := c.Query(ctx, "main", client.Request{Statements: []api.Statement{{SQL: "SELECT 1"}}})
//
// Request-level failures come back as *api.Error carrying the micro error
// code (400, 403, 408, 413, 500, 503); statement errors are in
// Result.Error.
package client

import (
	"bytes"
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

// Request is a request in the object form. Zero fields are omitted and
// take the server's defaults.
type Request struct {
	Statements  []api.Statement
	Transaction bool
	Level       string // api.LevelNone or api.LevelStrong
	AfterSeq    uint64
	Queue       bool
	ID          string // idempotency key
	Format      string // api.FormatRows or api.FormatValues
	TimeoutMS   int
}

// Encode returns the JSON object form of r.
func (r *Request) Encode() []byte {
	var b bytes.Buffer
	b.WriteString(`{"statements":[`)
	for i, st := range r.Statements {
		if i > 0 {
			b.WriteByte(',')
		}
		if st.Params == nil && st.Named == nil {
			b.Write(api.AppendString(nil, st.SQL))
			continue
		}
		b.WriteByte('[')
		b.Write(api.AppendString(nil, st.SQL))
		if st.Named != nil {
			b.WriteString(",{")
			j := 0
			for k, v := range st.Named {
				if j > 0 {
					b.WriteByte(',')
				}
				j++
				b.Write(api.AppendString(nil, ":"+k))
				b.WriteByte(':')
				b.Write(api.AppendValue(nil, v))
			}
			b.WriteByte('}')
		}
		for _, v := range st.Params {
			b.WriteByte(',')
			b.Write(api.AppendValue(nil, v))
		}
		b.WriteByte(']')
	}
	b.WriteByte(']')
	if r.Transaction {
		b.WriteString(`,"transaction":true`)
	}
	if r.Level != "" {
		b.WriteString(`,"level":`)
		b.Write(api.AppendString(nil, r.Level))
	}
	if r.AfterSeq != 0 {
		b.WriteString(`,"after_seq":` + strconv.FormatUint(r.AfterSeq, 10))
	}
	if r.Queue {
		b.WriteString(`,"queue":true`)
	}
	if r.ID != "" {
		b.WriteString(`,"id":`)
		b.Write(api.AppendString(nil, r.ID))
	}
	if r.Format != "" {
		b.WriteString(`,"format":`)
		b.Write(api.AppendString(nil, r.Format))
	}
	if r.TimeoutMS != 0 {
		b.WriteString(`,"timeout_ms":` + strconv.Itoa(r.TimeoutMS))
	}
	b.WriteByte('}')
	return b.Bytes()
}

// ErrNoNode is returned when no node serves the database (NATS reported
// no responders on nqlite.query.<db>).
var ErrNoNode = errors.New("no nqlite node serves this database")

// Query sends r to database db and waits for the response. Without a
// deadline in ctx it waits r.TimeoutMS (or the server default) plus one
// second.
func (c *Client) Query(ctx context.Context, db string, r Request) (*api.Response, error) {
	return c.Do(ctx, db, r.Encode(), r.TimeoutMS)
}

// QueryString sends SQL text (possibly several statements) to database db.
func (c *Client) QueryString(ctx context.Context, db, sql string) (*api.Response, error) {
	return c.Do(ctx, db, []byte(sql), 0)
}

// Do sends a raw request payload (any of the three forms) and decodes the
// response. timeoutMS is the request's timeout_ms, used to bound the wait
// when ctx has no deadline (0: the server default).
func (c *Client) Do(ctx context.Context, db string, payload []byte, timeoutMS int) (*api.Response, error) {
	if !api.ValidDBName(db) {
		return nil, fmt.Errorf("database name %q: use 1-64 of A-Z a-z 0-9 _ -", db)
	}
	if _, ok := ctx.Deadline(); !ok {
		if timeoutMS <= 0 {
			timeoutMS = api.DefaultTimeoutMS
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeoutMS)*time.Millisecond+time.Second)
		defer cancel()
	}
	msg, err := c.nc.RequestWithContext(ctx, "nqlite.query."+db, payload)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%w %q", ErrNoNode, db)
		}
		return nil, err
	}
	code := 0
	if h := msg.Header.Get("Nats-Service-Error-Code"); h != "" {
		code, _ = strconv.Atoi(h)
	}
	return api.DecodeResponse(msg.Data, code)
}
