package nqsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// DriverName is the name the driver is registered under with
// database/sql.
const DriverName = "nqlite"

func init() { sql.Register(DriverName, Driver{}) }

// Driver is the database/sql driver for nqlite (see the package doc for
// the DSN).
type Driver struct{}

// Open returns a connection for dsn, with a connector of its own (and so a
// NATS connection of its own, closed with the connection). database/sql
// uses OpenConnector instead, which shares one NATS connection among the
// pool.
func (d Driver) Open(dsn string) (driver.Conn, error) {
	c, err := d.OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	cn, err := c.Connect(context.Background())
	if err != nil {
		c.(*Connector).Close()
		return nil, err
	}
	cn.(*conn).ownsConnector = true
	return cn, nil
}

// OpenConnector parses dsn (see the package doc). It does not dial: the
// connector dials NATS on its first Connect.
func (Driver) OpenConnector(dsn string) (driver.Connector, error) {
	cfg, s, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return &Connector{settings: s, dial: cfg}, nil
}

// settings are a connector's defaults for every request.
type settings struct {
	db       string
	level    string
	timeout  time.Duration
	readOnly bool
}

// Option configures a Connector made by NewConnector.
type Option func(*settings) error

// WithDB selects the database (default "main"): 1-64 of A-Z a-z 0-9 _ -.
func WithDB(name string) Option {
	return func(s *settings) error {
		if !api.ValidDBName(name) {
			return fmt.Errorf("nqsql: database name %q: use 1-64 of A-Z a-z 0-9 _ -", name)
		}
		s.db = name
		return nil
	}
}

// WithLevel sets the read consistency of every Query: api.LevelNone (the
// default) or api.LevelStrong (wait until the node has applied everything
// the stream held when the request arrived).
func WithLevel(level string) Option {
	return func(s *settings) error {
		switch level {
		case api.LevelNone, api.LevelStrong:
			s.level = level
			return nil
		}
		return fmt.Errorf("nqsql: level %q: use none or strong", level)
	}
}

// WithTimeout bounds every request (sent as timeout_ms; default the
// server's 5 s; at most 10 minutes). A context deadline that comes sooner
// wins.
func WithTimeout(d time.Duration) Option {
	return func(s *settings) error {
		if d < time.Millisecond || d > api.MaxTimeoutMS*time.Millisecond {
			return fmt.Errorf("nqsql: timeout %v: give 1ms to 10m", d)
		}
		s.timeout = d
		return nil
	}
}

// WithReadOnly sends every request to the read-only endpoint
// nqlite.read.<db>: writes are refused with 403 before anything is
// published. Use it for NATS users allowed only nqlite.read.>.
func WithReadOnly() Option {
	return func(s *settings) error {
		s.readOnly = true
		return nil
	}
}

// Connector makes connections to one nqlite database. All its connections
// share one Transport (by default one NATS connection) and one stream
// position (Seq), which gives read-your-writes across the pool of a
// *sql.DB. Use it with sql.OpenDB.
type Connector struct {
	settings settings
	dial     *client.ConnConfig // nil: nc or a transport was given

	mu     sync.Mutex
	nc     *nats.Conn
	owned  bool // nc was dialed here: Close closes it
	tr     Transport
	closed bool

	seq atomic.Uint64
}

// ErrClosed is returned by a connection whose connector was closed (with
// its *sql.DB).
var ErrClosed = errors.New("nqsql: the connector is closed")

// Transport carries the driver's requests to a node and brings back the
// responses: the NATS client by default (NewConnector, a DSN), or anything
// else given to NewTransportConnector, such as an embedded replica that
// runs requests on its own node in-process (service/replica).
//
// Do sends req to database db, on the endpoint ep: client.QueryEndpoint
// (nqlite.query.<db>) or client.ReadEndpoint (nqlite.read.<db>, where a
// writing statement is refused with 403 before anything is published),
// and returns the decoded response, as client.Client.Query and Read do.
// The driver fills req as the wire request: Format api.FormatValues,
// Level "" (none) or api.LevelStrong, TimeoutMS 0 for the node's default.
// Do must not change or keep req after it returns; the response becomes
// the driver's. Request-level failures are *api.Error with the node's
// code. Do is called from many goroutines at once.
type Transport interface {
	Do(ctx context.Context, db string, ep client.Endpoint, req *api.Request) (*api.Response, error)
}

// natsTransport is the Transport over NATS: client.Client's Query and
// Read, the request encoded as the JSON object form.
type natsTransport struct{ cl *client.Client }

func (t natsTransport) Do(ctx context.Context, db string, ep client.Endpoint, req *api.Request) (*api.Response, error) {
	// The node's checks, before encoding: JSON would turn text that is
	// not UTF-8 into U+FFFD silently, where the node refuses it.
	checked := *req
	if err := api.CheckRequest(&checked); err != nil {
		return nil, err
	}
	r := client.Request{Statements: req.Statements, Transaction: req.Transaction, Level: req.Level, AfterSeq: req.AfterSeq,
		Queue: req.Queue, ID: req.ID, Format: req.Format, TimeoutMS: req.TimeoutMS}
	if r.Level == api.LevelNone {
		r.Level = ""
	}
	if ep == client.ReadEndpoint {
		return t.cl.Read(ctx, db, r)
	}
	return t.cl.Query(ctx, db, r)
}

// NewConnector returns a connector using nc, which stays the caller's (the
// connector never closes it). Options: WithDB, WithLevel, WithTimeout,
// WithReadOnly.
func NewConnector(nc *nats.Conn, opts ...Option) (*Connector, error) {
	if nc == nil {
		return nil, errors.New("nqsql: NewConnector: nil NATS connection")
	}
	s := settings{db: "main"}
	for _, o := range opts {
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	return &Connector{settings: s, nc: nc, tr: natsTransport{client.New(nc)}}, nil
}

// NewTransportConnector returns a connector whose requests go through t
// instead of NATS (see Transport); everything else (options, per-call
// options, read-your-writes, transactions, values, errors) is as with
// NewConnector. Closing the connector does not close t. Options: WithDB,
// WithLevel, WithTimeout, WithReadOnly.
func NewTransportConnector(t Transport, opts ...Option) (*Connector, error) {
	if t == nil {
		return nil, errors.New("nqsql: NewTransportConnector: nil Transport")
	}
	s := settings{db: "main"}
	for _, o := range opts {
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	return &Connector{settings: s, tr: t}, nil
}

// Connect returns a connection, dialing NATS first if this connector has
// not yet (a DSN connector). It implements driver.Connector.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	if _, err := c.transport(); err != nil {
		return nil, err
	}
	return &conn{c: c}, nil
}

// Driver returns the nqlite Driver.
func (c *Connector) Driver() driver.Driver { return Driver{} }

// Close closes the NATS connection if the connector dialed it (a DSN
// connector); database/sql calls it from (*sql.DB).Close.
func (c *Connector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.owned && c.nc != nil {
		c.nc.Close()
	}
	return nil
}

// Seq returns the highest stream sequence seen in any response through
// this connector: every request carries it as after_seq. Pass it to
// another program (AfterSeq) to let it read what this one wrote.
func (c *Connector) Seq() uint64 { return c.seq.Load() }

// observe raises Seq to seq.
func (c *Connector) observe(seq uint64) {
	for {
		cur := c.seq.Load()
		if seq <= cur || c.seq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// transport returns the transport, dialing NATS the first time (a DSN
// connector).
func (c *Connector) transport() (Transport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.tr != nil {
		return c.tr, nil
	}
	opts, err := c.dial.Options()
	if err != nil {
		return nil, fmt.Errorf("nqsql: %w", err)
	}
	opts = append(opts, nats.MaxReconnects(-1))
	nc, err := nats.Connect(c.dial.Servers, opts...)
	if err != nil {
		where := redact(c.dial.Servers)
		if c.dial.Context != "" {
			where += " (nats context " + c.dial.Context + ")"
		}
		return nil, fmt.Errorf("nqsql: connect to %s: %w", where, err)
	}
	c.nc, c.owned, c.tr = nc, true, natsTransport{client.New(nc)}
	return c.tr, nil
}

// dsnParams are the DSN's parameters, for the error on an unknown one.
var dsnParams = []string{"db", "level", "timeout", "readonly", "creds", "nkey", "user", "password", "token",
	"tls_cert", "tls_key", "tls_ca", "tls_first", "inbox_prefix", "context", "name"}

// parseDSN parses a DSN (see the package doc) into the NATS connection it
// names, resolved (contexts and, without servers, the environment), and
// the connector's settings. It reads context files but dials nothing.
func parseDSN(dsn string) (*client.ConnConfig, settings, error) {
	s := settings{db: "main"}
	servers, query, _ := strings.Cut(strings.TrimSpace(dsn), "?")
	values, err := url.ParseQuery(query)
	if err != nil {
		return nil, s, fmt.Errorf("nqsql: DSN parameters: %w", err)
	}
	cfg := &client.ConnConfig{Servers: servers, Name: "nqsql"}
	str := map[string]*string{
		"creds": &cfg.Creds, "nkey": &cfg.NKey, "user": &cfg.User, "password": &cfg.Password, "token": &cfg.Token,
		"tls_cert": &cfg.TLSCert, "tls_key": &cfg.TLSKey, "tls_ca": &cfg.TLSCA, "inbox_prefix": &cfg.InboxPrefix,
		"context": &cfg.Context, "name": &cfg.Name,
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vs := values[k]
		if len(vs) > 1 {
			return nil, s, fmt.Errorf("nqsql: DSN parameter %s given %d times", k, len(vs))
		}
		v := vs[0]
		var opt Option
		switch k {
		case "db":
			opt = WithDB(v)
		case "level":
			opt = WithLevel(v)
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, s, fmt.Errorf("nqsql: DSN timeout %q: give a duration such as 5s", v)
			}
			opt = WithTimeout(d)
		case "readonly", "tls_first":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, s, fmt.Errorf("nqsql: DSN %s %q: give true or false", k, v)
			}
			if k == "readonly" {
				s.readOnly = b
			} else {
				cfg.TLSFirst = b
			}
			continue
		default:
			p, ok := str[k]
			if !ok {
				return nil, s, fmt.Errorf("nqsql: unknown DSN parameter %q (known: %s)", k, strings.Join(dsnParams, ", "))
			}
			*p = v
			continue
		}
		if err := opt(&s); err != nil {
			return nil, s, err
		}
	}
	getenv := os.Getenv
	if strings.TrimSpace(servers) != "" {
		getenv = nil // a DSN naming its servers is self-contained
	}
	if err := cfg.Resolve(getenv); err != nil {
		return nil, s, fmt.Errorf("nqsql: %w", err)
	}
	return cfg, s, nil
}

// redact hides passwords and tokens in a comma-separated list of URLs.
func redact(servers string) string {
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, ok := u.User.Password(); !ok {
				u.User = url.User("xxxxx")
			}
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
