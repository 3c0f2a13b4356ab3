// Command nqctl runs SQL against an nqlite database over NATS and prints
// the results as aligned tables or as the server's JSON.
//
//	nqctl [--server URL] [--creds FILE] [--db main] [--format table|json] [--timeout 10s] [SQL ...]
//
// SQL given as arguments is joined with spaces and sent as one request.
// Without arguments nqctl reads SQL from standard input, splits it into
// statements and sends them, in order, in requests of whole statements of
// at most 256 KiB each, so a script larger than the NATS max payload (1 MB
// by default) loads too. A BEGIN ... COMMIT block (or an outer SAVEPOINT
// ... RELEASE) is never split between requests, because nqlite rolls back
// a transaction that a request leaves open.
//
// Exit codes: 0 success; 1 a statement or request failed (the error goes
// to stderr with the statement's number; after a failed request the rest
// of the input is not sent, after a failed statement it is); 2 usage
// error; 3 NATS unreachable or no node serves the database.
//
// nqctl imports no SQLite package: it only speaks the wire protocol of
// service/api.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// Exit codes of nqctl.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
	exitConn   = 3
)

// chunkLimit bounds the JSON-encoded SQL of one request made from standard
// input: well under NATS's default max payload of 1 MiB, leaving room for
// the server's own encoding of the stream entry.
const chunkLimit = 256 << 10

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are nqctl's parsed flags.
type options struct {
	server  string
	creds   string
	db      string
	format  string
	timeout time.Duration
}

// errHelp reports that -h or --help was given: usage was printed, exit 0.
var errHelp = errors.New("help requested")

// errPrinted reports a flag error the flag package has already printed.
var errPrinted = errors.New("usage error")

func parseFlags(args []string, stderr io.Writer) (*options, []string, error) {
	o := &options{}
	fs := flag.NewFlagSet("nqctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.server, "server", envOr("NATS_URL", nats.DefaultURL), "NATS server URL, or several separated by commas ($NATS_URL if set)")
	fs.StringVar(&o.creds, "creds", os.Getenv("NATS_CREDS"), "NATS user credentials file ($NATS_CREDS if set)")
	fs.StringVar(&o.db, "db", "main", "database to query")
	fs.StringVar(&o.format, "format", "table", "output format: table or json (the server's response, one JSON document per request)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout of each request (sent to the server as timeout_ms; at most 10m)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: nqctl [flags] [SQL ...]

Runs SQL on an nqlite database and prints the results. SQL given as
arguments is sent as one request; without arguments SQL is read from
standard input and sent in chunks of whole statements, in order.
Flags come before the SQL.

Exit codes: 0 ok, 1 a statement or request failed, 2 usage error,
3 cannot reach NATS or no node serves the database.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, errHelp
		}
		return nil, nil, errPrinted
	}
	switch o.format {
	case "table", "json":
	default:
		return nil, nil, fmt.Errorf("--format %q: use table or json", o.format)
	}
	if !api.ValidDBName(o.db) {
		return nil, nil, fmt.Errorf("--db %q: use 1-64 of A-Z a-z 0-9 _ -", o.db)
	}
	if o.timeout < time.Millisecond || o.timeout > api.MaxTimeoutMS*time.Millisecond {
		return nil, nil, fmt.Errorf("--timeout %v: give 1ms to 10m", o.timeout)
	}
	if strings.TrimSpace(o.server) == "" {
		return nil, nil, errors.New("--server is empty: give a NATS URL such as nats://127.0.0.1:4222")
	}
	if o.creds != "" {
		if _, err := os.Stat(o.creds); err != nil {
			return nil, nil, fmt.Errorf("--creds: %w", err)
		}
	}
	return o, fs.Args(), nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// run is nqctl without the process around it: it parses args, reads SQL
// from args or stdin, sends it and writes results to stdout and errors to
// stderr. It returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, rest, err := parseFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		if !errors.Is(err, errPrinted) {
			fmt.Fprintf(stderr, "nqctl: %v\n", err)
		}
		return exitUsage
	}

	var sql string
	fromArgs := len(rest) > 0
	if fromArgs {
		sql = strings.Join(rest, " ")
	} else {
		if f, ok := stdin.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(stderr, "nqctl: reading SQL from the terminal; end with Ctrl-D (or pass SQL as arguments, see --help)")
			}
		}
		data, err := io.ReadAll(stdin)
		if err != nil {
			fmt.Fprintf(stderr, "nqctl: read stdin: %v\n", err)
			return exitFailed
		}
		sql = string(data)
	}
	sql = strings.TrimPrefix(sql, "\uFEFF") // a byte order mark is not SQL
	if !utf8.ValidString(sql) {
		fmt.Fprintln(stderr, "nqctl: the SQL is not valid UTF-8: convert it first (e.g. with iconv)")
		return exitFailed
	}
	stmts := api.Split(sql)
	if len(stmts) == 0 {
		fmt.Fprintln(stderr, "nqctl: no SQL statement given: pass SQL as arguments or on standard input (see --help)")
		return exitUsage
	}
	var chunks []chunk
	if fromArgs {
		chunks = []chunk{{stmts: stmts}}
	} else {
		chunks = splitChunks(stmts, chunkLimit)
	}

	nopts := []nats.Option{nats.Name("nqctl"), nats.Timeout(min(o.timeout, 5*time.Second))}
	if o.creds != "" {
		nopts = append(nopts, nats.UserCredentials(o.creds))
	}
	nc, err := nats.Connect(o.server, nopts...)
	if err != nil {
		fmt.Fprintf(stderr, "nqctl: connect to %s: %v\n", redactURLs(o.server), err)
		return exitConn
	}
	defer nc.Close()

	out := bufio.NewWriter(stdout)
	defer out.Flush()
	p := &printer{w: out, json: o.format == "json"}
	format := api.FormatValues // keeps the column order for tables
	if p.json {
		format = api.FormatRows
	}
	failed := false
	var afterSeq uint64
	for ci, ch := range chunks {
		req := client.Request{
			Statements: make([]api.Statement, len(ch.stmts)),
			Format:     format,
			TimeoutMS:  int(o.timeout / time.Millisecond),
			// Read what earlier requests wrote even if another node answers.
			AfterSeq: afterSeq,
		}
		for i, s := range ch.stmts {
			req.Statements[i] = api.Statement{SQL: s}
		}
		raw, resp, err := send(ctx, nc, o.db, &req, o.timeout+time.Second)
		if err != nil {
			out.Flush()
			fmt.Fprintf(stderr, "nqctl: %s\n", requestError(err, ch, len(chunks) > 1))
			if ci+1 < len(chunks) {
				fmt.Fprintf(stderr, "nqctl: stopped: statements %d-%d were not sent\n", chunks[ci+1].first+1, len(stmts))
			}
			if errors.Is(err, errNoNode) || errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrNoServers) {
				return exitConn
			}
			return exitFailed
		}
		afterSeq = max(afterSeq, resp.Seq)
		if p.json {
			p.raw(raw)
		}
		for i, s := range ch.stmts {
			n := ch.first + i + 1
			if i >= len(resp.Results) {
				out.Flush()
				fmt.Fprintf(stderr, "nqctl: statement %d (%s): no result: the server did not run it\n", n, snippet(s))
				failed = true
				continue
			}
			res := &resp.Results[i]
			if res.Error != "" {
				out.Flush()
				fmt.Fprintf(stderr, "nqctl: statement %d (%s): %s\n", n, snippet(s), res.Error)
				failed = true
				continue
			}
			if !p.json {
				p.result(res)
			}
		}
		if err := out.Flush(); err != nil {
			fmt.Fprintf(stderr, "nqctl: write output: %v\n", err)
			return exitFailed
		}
	}
	if failed {
		return exitFailed
	}
	return exitOK
}

// errNoNode is returned by send when NATS has no responder for the
// database's subject.
var errNoNode = errors.New("no nqlite node serves this database")

// send makes one request to nqlite.query.<db> and returns the raw
// response body and its decoding. wait bounds the whole exchange.
func send(ctx context.Context, nc *nats.Conn, db string, req *client.Request, wait time.Duration) ([]byte, *api.Response, error) {
	payload := req.Encode()
	if max := nc.MaxPayload(); max > 0 && int64(len(payload)) > max {
		return nil, nil, &payloadError{size: len(payload), max: max}
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, "nqlite.query."+db, payload)
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, nil, fmt.Errorf("%w %q (no responders on nqlite.query.%s): is a node running with --db %s?", errNoNode, db, db, db)
		case errors.Is(err, context.DeadlineExceeded):
			return nil, nil, fmt.Errorf("no response within %v: the request may or may not have been applied", wait)
		}
		return nil, nil, fmt.Errorf("request: %w", err)
	}
	code := 0
	if h := msg.Header.Get("Nats-Service-Error-Code"); h != "" {
		code, _ = strconv.Atoi(h)
	}
	resp, err := api.DecodeResponse(msg.Data, code)
	if err != nil {
		return nil, nil, err
	}
	return msg.Data, resp, nil
}

// payloadError is a request too large for the NATS connection.
type payloadError struct {
	size int
	max  int64
}

func (e *payloadError) Error() string {
	return fmt.Sprintf("the request is %d bytes, over the NATS max payload of %d bytes", e.size, e.max)
}

// requestError words a request-level failure for the person running
// nqctl: it names the statements the request held when the input was
// sent in several requests, and renumbers the server's "statement N:"
// (counted within the request) to count within the whole input.
func requestError(err error, ch chunk, several bool) string {
	msg := err.Error()
	var ae *api.Error
	if errors.As(err, &ae) && ch.first > 0 {
		if rest, ok := strings.CutPrefix(msg, "statement "); ok {
			if num, tail, ok := strings.Cut(rest, ":"); ok {
				if n, err := strconv.Atoi(num); err == nil {
					msg = fmt.Sprintf("statement %d:%s", ch.first+n, tail)
				}
			}
		}
	}
	if ae != nil && ae.Code != 0 {
		msg = fmt.Sprintf("%s (code %d)", msg, ae.Code)
	}
	var pe *payloadError
	if errors.As(err, &pe) {
		if ch.tx {
			msg += ": the statements form one transaction (BEGIN ... COMMIT), which nqctl sends as one request; split the transaction, or remove BEGIN and COMMIT to load in chunks"
		} else {
			msg += ": split the SQL into smaller statements, or pipe it on standard input to send it in chunks"
		}
	}
	if several {
		return fmt.Sprintf("statements %d-%d: %s", ch.first+1, ch.first+len(ch.stmts), msg)
	}
	return msg
}

// snippet is a statement shortened to one line for error messages.
func snippet(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const maxRunes = 48
	if utf8.RuneCountInString(s) <= maxRunes {
		return s
	}
	r := []rune(s)
	return string(r[:maxRunes]) + "..."
}

// redactURLs hides passwords in a comma-separated list of NATS URLs.
func redactURLs(servers string) string {
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, ok := u.User.Password(); !ok {
				u.User = url.User("xxxxx") // a token
			}
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
