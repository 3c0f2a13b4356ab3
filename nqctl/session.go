package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// chunkLimit bounds the JSON-encoded SQL of one request made from a
// script: well under NATS's default max payload of 1 MiB, leaving room for
// the server's own encoding of the stream entry.
const chunkLimit = 256 << 10

// session is a connection to one database and the state that carries from
// request to request: the database, the read level, the sequence to read
// after, and how results print.
type session struct {
	nc       *nats.Conn
	conn     *connOptions
	db       string
	level    string
	timeout  time.Duration
	afterSeq uint64

	out  *bufio.Writer
	errw io.Writer
	p    *printer

	// timer prints the node's time and the round trip after each request.
	timer bool
	// errPrefix starts every error line: "nqctl: " or, in the shell,
	// "Error: ".
	errPrefix string
	// caret shows the statement and a caret under the error position.
	caret bool
}

// newSession returns a session on nc for the options.
func newSession(nc *nats.Conn, conn *connOptions, out *bufio.Writer, errw io.Writer, mode string) *session {
	return &session{
		nc: nc, conn: conn, db: conn.db, level: api.LevelNone, timeout: conn.timeout,
		out: out, errw: errw, p: newPrinter(out, mode), errPrefix: "nqctl: ",
	}
}

// errorf prints an error line to stderr, after flushing stdout so that the
// two stay in order on a terminal.
func (s *session) errorf(format string, args ...any) {
	s.out.Flush()
	fmt.Fprintf(s.errw, s.errPrefix+format+"\n", args...)
}

// request returns the request for statements with the session's options.
func (s *session) request(stmts []api.Statement, ro reqOptions) *client.Request {
	format := api.FormatValues // keeps the column order
	if s.p.raw() {
		format = api.FormatRows
	}
	req := &client.Request{
		Statements:  stmts,
		Format:      format,
		TimeoutMS:   int(s.timeout / time.Millisecond),
		AfterSeq:    s.afterSeq, // read what earlier requests wrote, whichever node answers
		Transaction: ro.transaction,
		ID:          ro.id,
		Queue:       ro.queue,
	}
	if s.level == api.LevelStrong {
		req.Level = api.LevelStrong
	}
	return req
}

// do sends one request and returns the raw body, its decoding and the
// round trip time. It advances afterSeq.
func (s *session) do(ctx context.Context, req *client.Request) ([]byte, *api.Response, time.Duration, error) {
	start := time.Now()
	raw, resp, err := send(ctx, s.nc, s.db, req, s.timeout+time.Second)
	rtt := time.Since(start)
	if err != nil {
		return nil, nil, rtt, err
	}
	s.afterSeq = max(s.afterSeq, resp.Seq)
	return raw, resp, rtt, nil
}

// query runs one request of SQL text statements and returns the
// response, for the shell's own queries (.tables, .dump...). A statement
// error is returned as an error.
func (s *session) query(ctx context.Context, stmts ...api.Statement) (*api.Response, error) {
	req := s.request(stmts, reqOptions{})
	req.Format = api.FormatValues
	_, resp, _, err := s.do(ctx, req)
	if err != nil {
		return nil, err
	}
	for i, r := range resp.Results {
		if r.Error != "" {
			return nil, fmt.Errorf("%s: %s", snippet(stmts[i].SQL), r.Error)
		}
	}
	if len(resp.Results) != len(stmts) {
		return nil, fmt.Errorf("%d results for %d statements", len(resp.Results), len(stmts))
	}
	return resp, nil
}

// reqOptions are the request options of exec.
type reqOptions struct {
	transaction bool
	id          string
	queue       bool
}

// stmt is a statement of the input and where it started.
type stmt struct {
	sql  string
	line int // 1-based line in its source, 0 when unknown
}

// runOptions say how run sends and reports a run of statements.
type runOptions struct {
	// chunked sends the statements in requests of at most chunkLimit
	// bytes; otherwise in one request.
	chunked bool
	// first is the number of statements of the input before these; total
	// is the number in the whole input (for "not sent" messages), 0 when
	// unknown.
	first, total int
	// numbered always names the failed statement by its number; otherwise
	// only when the request held several.
	numbered bool
	// bail stops at a failed request and reports what was not sent.
	bail bool
	// bailStatements sends one statement (or one transaction) per request
	// and stops at the first failed statement (the shell's .bail on).
	bailStatements bool
	// source names the file the statements come from, for error lines.
	source string
	req    reqOptions
}

// run sends statements, prints their results and reports errors. It
// returns errFailedPrinted when a statement or request failed (exit 1),
// or an exitError with exitConn when no node could be reached.
func (s *session) run(ctx context.Context, stmts []stmt, o runOptions) error {
	texts := make([]string, len(stmts))
	for i, st := range stmts {
		texts[i] = st.sql
	}
	var chunks []chunk
	switch {
	case o.chunked && o.bailStatements:
		chunks = splitChunks(texts, 1)
	case o.chunked:
		chunks = splitChunks(texts, chunkLimit)
	default:
		chunks = []chunk{{stmts: texts}}
	}
	failed := false
	for _, ch := range chunks {
		sts := make([]api.Statement, len(ch.stmts))
		for i, t := range ch.stmts {
			sts[i] = api.Statement{SQL: t}
		}
		raw, resp, rtt, err := s.do(ctx, s.request(sts, o.req))
		if err != nil {
			s.requestErrorf(err, requestError(err, ch, o.first, len(chunks) > 1))
			if o.bail {
				from := o.first + ch.first + len(ch.stmts) + 1
				to := o.first + len(stmts)
				if o.total > 0 {
					to = o.total
				}
				if from <= to {
					s.errorf("stopped: statements %d-%d were not sent", from, to)
				}
			}
			if isConnError(err) {
				return &exitError{code: exitConn}
			}
			if o.bail {
				return errRequestFailed
			}
			failed = true
			continue
		}
		sub := runOptions{numbered: o.numbered, first: o.first + ch.first, source: o.source}
		if len(ch.stmts) > 1 {
			sub.numbered = true
		}
		if err := s.print(raw, resp, rtt, stmts[ch.first:ch.first+len(ch.stmts)], sub); err != nil {
			if !errors.Is(err, errFailedPrinted) {
				return err
			}
			failed = true
			if o.bailStatements {
				return errRequestFailed
			}
		}
	}
	if failed {
		return errFailedPrinted
	}
	return nil
}

// runParams runs one statement with positional parameters.
func (s *session) runParams(ctx context.Context, st stmt, params []any, ro reqOptions) error {
	req := s.request([]api.Statement{{SQL: st.sql, Params: params}}, ro)
	raw, resp, rtt, err := s.do(ctx, req)
	if err != nil {
		s.requestErrorf(err, requestError(err, chunk{stmts: []string{st.sql}}, 0, false))
		if isConnError(err) {
			return &exitError{code: exitConn}
		}
		return errFailedPrinted
	}
	return s.print(raw, resp, rtt, []stmt{st}, runOptions{numbered: true})
}

// print prints the response to a request of stmts (the statements
// numbered from o.first+1) and reports failed statements. It returns
// errFailedPrinted when a statement failed.
func (s *session) print(raw []byte, resp *api.Response, rtt time.Duration, stmts []stmt, o runOptions) error {
	if s.p.raw() {
		s.p.rawResponse(raw)
	}
	failed := false
	for i, st := range stmts {
		n := o.first + i + 1
		if i >= len(resp.Results) {
			if resp.Duplicate || resp.Queued {
				break
			}
			s.errorf("statement %d (%s): no result: the server did not run it", n, snippet(st.sql))
			failed = true
			continue
		}
		res := &resp.Results[i]
		if res.Error != "" {
			s.stmtError(n, st, res.Error, o)
			failed = true
			continue
		}
		if !s.p.raw() {
			s.p.result(res)
		}
	}
	if !s.p.raw() {
		if resp.Duplicate {
			fmt.Fprintf(s.out, "duplicate of entry %d: not applied again\n", resp.Seq)
		} else if resp.Queued {
			fmt.Fprintf(s.out, "queued as entry %d\n", resp.Seq)
		}
	}
	if s.timer {
		fmt.Fprintf(s.out, "Run Time: node %.3f ms, round trip %.3f ms\n", resp.Time, float64(rtt.Microseconds())/1000)
	}
	if err := s.out.Flush(); err != nil {
		return failedf("write output: %v", err)
	}
	if failed {
		return errFailedPrinted
	}
	return nil
}

// stmtError reports a failed statement: its number and a snippet when
// o.numbered, SQLite's message, and
// with caret the line of the statement with a caret under the position.
func (s *session) stmtError(n int, st stmt, msg string, o runOptions) {
	where := ""
	if o.source != "" {
		where = o.source + ":"
		if st.line > 0 {
			where += strconv.Itoa(st.line) + ":"
		}
		where += " "
	}
	if o.numbered {
		s.errorf("%sstatement %d (%s): %s", where, n, snippet(st.sql), msg)
	} else {
		s.errorf("%s%s", where, msg)
	}
	if s.caret {
		if l, c, ok := errorPosition(msg); ok {
			s.out.Flush()
			io.WriteString(s.errw, caretLines(st.sql, l, c))
		}
	}
}

var errPosRE = regexp.MustCompile(`\(line (\d+), column (\d+)\)$`)

// errorPosition extracts the "(line L, column C)" the server appends to
// SQLite's message.
func errorPosition(msg string) (line, col int, ok bool) {
	m := errPosRE.FindStringSubmatch(msg)
	if m == nil {
		return 0, 0, false
	}
	line, _ = strconv.Atoi(m[1])
	col, _ = strconv.Atoi(m[2])
	return line, col, line > 0 && col > 0
}

// caretLines shows line `line` of sql with a caret under column col (both
// 1-based; tabs count to the next multiple of 8, as the server counts):
//
//	SELECT * FROM nope
//	              ^--- error here
func caretLines(sql string, line, col int) string {
	lines := strings.Split(sql, "\n")
	if line > len(lines) {
		return ""
	}
	// Expand tabs so that the caret lines up.
	var b strings.Builder
	for _, r := range strings.TrimRight(lines[line-1], "\r") {
		if r == '\t' {
			b.WriteString(strings.Repeat(" ", 8-utf8.RuneCountInString(b.String())%8))
			continue
		}
		b.WriteRune(r)
	}
	text := []rune(b.String())
	pos := col - 1
	if pos > len(text) {
		pos = len(text)
	}
	// Keep long lines to a window around the position.
	const before, after = 50, 30
	prefix := ""
	if pos > before {
		text, pos, prefix = text[pos-before:], before, "..."
	}
	if len(text) > before+after {
		text = append(text[:before+after:before+after], []rune("...")...)
	}
	return "  " + prefix + escapeControl(string(text)) + "\n  " + strings.Repeat(" ", pos+len(prefix)) + "^--- error here\n"
}

// send makes one request to nqlite.query.<db> and returns the raw
// response body and its decoding. wait bounds the whole exchange.
func send(ctx context.Context, nc *nats.Conn, db string, req *client.Request, wait time.Duration) ([]byte, *api.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return client.New(nc).Send(ctx, db, client.QueryEndpoint, req.Encode(), req.TimeoutMS)
}

// requestErrorf prints msg, the words of request error err, naming err's
// code: "Error (not_stored): msg" in the shell, "nqctl: error
// (not_stored): msg" otherwise.
func (s *session) requestErrorf(err error, msg string) {
	tag := kindTag(err)
	switch {
	case tag == "":
		s.errorf("%s", msg)
	case strings.HasPrefix(s.errPrefix, "Error"):
		s.out.Flush()
		fmt.Fprintf(s.errw, "Error (%s): %s\n", tag, msg)
	default:
		s.errorf("error (%s): %s", tag, msg)
	}
}

// requestError words a request-level failure for the person running
// nqctl: it names the statements the request held when the input was
// sent in several requests, and renumbers the server's "statement N:"
// (counted within the request) to count within the whole input.
func requestError(err error, ch chunk, before int, several bool) string {
	msg := err.Error()
	first := before + ch.first
	var ae *api.Error
	if errors.As(err, &ae) && first > 0 {
		if rest, ok := strings.CutPrefix(msg, "statement "); ok {
			if num, tail, ok := strings.Cut(rest, ":"); ok {
				if n, err := strconv.Atoi(num); err == nil {
					msg = fmt.Sprintf("statement %d:%s", first+n, tail)
				}
			}
		}
	}
	var pe *client.PayloadError
	if errors.As(err, &pe) {
		if ch.tx {
			msg += ": the statements form one transaction (BEGIN ... COMMIT), which nqctl sends as one request; split the transaction, or remove BEGIN and COMMIT to load in chunks"
		} else {
			msg += ": split the SQL into smaller statements, or pipe it on standard input to send it in chunks"
		}
	}
	if several || before > 0 && len(ch.stmts) > 1 {
		return fmt.Sprintf("statements %d-%d: %s", first+1, first+len(ch.stmts), msg)
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
