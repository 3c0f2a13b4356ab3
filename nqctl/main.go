// Command nqctl is nqlite's shell and operations tool: it runs SQL on an
// nqlite database over NATS, interactively like the sqlite3 shell or from
// scripts.
//
//	nqctl [flags] [SQL ...]          run SQL; with no SQL and a terminal, the shell
//	nqctl shell|query|exec|dump|import|nodes|bench|backup|restore|migrate|watch [flags] [args]
//
// SQL given as arguments is joined with spaces and sent as one request.
// With no arguments and standard input a terminal, nqctl is an
// interactive shell (line editing, history in ~/.nqctl_history,
// multi-line statements ending with ';', sqlite3-like dot-commands and
// output modes). With standard input not a terminal, nqctl runs what is
// piped: SQL statements, sent in order in requests of whole statements of
// at most 256 KiB each (so a script larger than the NATS max payload
// loads too), and dot-commands. A BEGIN ... COMMIT block (or an outer
// SAVEPOINT ... RELEASE) is never split between requests, because nqlite
// rolls back a transaction that a request leaves open.
//
// Connection flags follow the nats CLI: --server, --creds, --context and
// the others, the NATS_URL, NATS_CREDS, NATS_CONTEXT... variables, and the
// nats CLI's selected context.
//
// Exit codes: 0 success; 1 a statement or request failed (the error goes
// to stderr with SQLite's message and position; after a failed request the
// rest of a script is not sent, after a failed statement it is); 2 usage
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
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"golang.org/x/term"

	"github.com/nqlite/nqlite/service/api"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for sig := range sigs {
			if sig == os.Interrupt && interrupt() {
				continue // the shell cancelled its running command
			}
			cancel()
		}
	}()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	signal.Stop(sigs)
	cancel()
	os.Exit(code)
}

// interrupts routes SIGINT to the shell's running command, when there is
// one, instead of ending nqctl.
var interrupts struct {
	sync.Mutex
	f func()
}

// onInterrupt makes SIGINT call f until restore is called.
func onInterrupt(f func()) (restore func()) {
	interrupts.Lock()
	prev := interrupts.f
	interrupts.f = f
	interrupts.Unlock()
	return func() {
		interrupts.Lock()
		interrupts.f = prev
		interrupts.Unlock()
	}
}

// interrupt calls the current interrupt handler and reports whether there
// was one.
func interrupt() bool {
	interrupts.Lock()
	f := interrupts.f
	interrupts.Unlock()
	if f == nil {
		return false
	}
	f()
	return true
}

// options are the flags shared by nqctl and its commands.
type options struct {
	conn connOptions
	// mode is the output mode; "" chooses the command's default.
	mode string
	// format is the flag of nqctl's first version: table (column mode) or
	// json (the server's responses, mode raw).
	format    string
	headers   bool
	nullValue *string
	level     string
	timer     bool
}

// registerOutput adds the output flags to fs.
func (o *options) registerOutput(fs *flag.FlagSet) {
	fs.StringVar(&o.mode, "mode", o.mode, "output mode: "+strings.Join(modes, ", ")+" (default table in the shell, column otherwise)")
	fs.StringVar(&o.format, "format", o.format, "table (mode column) or json (mode raw: the server's response, one JSON document per request)")
	fs.BoolVar(&o.headers, "headers", o.headers, "print column names")
	fs.Func("nullvalue", `text printed for NULL (default "NULL"; an empty field in csv)`, func(s string) error {
		o.nullValue = &s
		return nil
	})
	fs.StringVar(&o.level, "level", o.level, "read consistency of every request: none or strong")
	fs.BoolVar(&o.timer, "timer", o.timer, "print the node's time and the round trip after each request")
}

// outputMode returns the mode chosen by --mode or --format, else def.
func (o *options) outputMode(def string) (string, error) {
	mode := def
	switch o.format {
	case "":
	case "table":
		mode = modeColumn
	case "json":
		mode = modeRaw
	default:
		return "", usageErrorf("--format %q: use table or json", o.format)
	}
	if o.mode != "" {
		mode = strings.ToLower(o.mode)
		if mode == "columns" {
			mode = modeColumn
		}
		if !validMode(mode) {
			return "", usageErrorf("--mode %q: use one of %s", o.mode, strings.Join(modes, ", "))
		}
	}
	switch o.level {
	case "", api.LevelNone, api.LevelStrong:
	default:
		return "", usageErrorf("--level %q: use none or strong", o.level)
	}
	return mode, nil
}

// env is one run of nqctl: its standard streams and options.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	opts           options
}

// run is nqctl without the process around it: it parses args, runs the
// command and writes results to stdout and errors to stderr. It returns
// the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	e.opts.conn = defaultConnOptions()
	e.opts.headers = true
	err := e.main(ctx, args)
	if err != nil && !errors.Is(err, errHelp) {
		if msg := errorMessage(err); msg != "" {
			fmt.Fprintf(stderr, "nqctl: %s\n", msg)
		}
	}
	return exitCode(err)
}

// main dispatches to a command or runs nqctl's SQL mode.
func (e *env) main(ctx context.Context, args []string) error {
	if len(args) > 0 {
		if c := findCommand(args[0]); c != nil {
			return c.make(e).Run(ctx, args[1:])
		}
	}
	fs := e.flagSet("", "[SQL ...]", "")
	e.opts.conn.register(fs)
	e.opts.registerOutput(fs)
	fs.Usage = func() { e.mainUsage(fs) }
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		if c := findCommand(rest[0]); c != nil {
			return c.make(e).Run(ctx, rest[1:])
		}
	}
	mode, err := e.opts.outputMode(modeColumn)
	if err != nil {
		return err
	}
	if err := e.opts.conn.validate(); err != nil {
		return err
	}
	if len(rest) == 0 && isTerminal(e.stdin) {
		if e.opts.mode == "" && e.opts.format == "" {
			mode = modeTable
		}
		return e.shell(ctx, mode, true)
	}
	return e.runSQL(ctx, rest, mode, sqlRun{})
}

// sqlRun are the options of runSQL.
type sqlRun struct {
	params  []any
	file    string
	req     reqOptions
	changes *bool
}

// runSQL runs SQL from args (one request) or, without args, the script on
// stdin or in r.file (statements in chunks, dot-commands too).
func (e *env) runSQL(ctx context.Context, args []string, mode string, r sqlRun) error {
	var (
		items []scriptItem
		total int
		src   string
	)
	if len(args) > 0 {
		sql := strings.TrimPrefix(strings.Join(args, " "), "\uFEFF")
		if !utf8.ValidString(sql) {
			return failedf("the SQL is not valid UTF-8: convert it first (e.g. with iconv)")
		}
		sts := splitStmts(sql, 1)
		if len(sts) > 0 {
			items = []scriptItem{{stmts: sts}}
			total = len(sts)
		}
	} else {
		in, name := e.stdin, "standard input"
		if r.file != "" && r.file != "-" {
			f, err := os.Open(r.file)
			if err != nil {
				return usageErrorf("%v", err)
			}
			defer f.Close()
			in, name, src = f, r.file, r.file
		}
		text, err := readScript(in, name)
		if err != nil {
			return err
		}
		items, total = parseScript(text)
	}
	if len(items) == 0 {
		return usageErrorf("no SQL statement given: pass SQL as arguments or on standard input (see --help)")
	}
	if len(r.params) > 0 && (len(items) != 1 || len(items[0].stmts) != 1) {
		return usageErrorf("parameters (-p) need exactly one SQL statement, got %d", total)
	}

	return e.withSession(mode, func(s *session, _ *bufio.Writer) error {
		if r.changes != nil {
			s.p.changes = r.changes
		}
		if len(args) > 0 {
			sts := items[0].stmts
			if len(r.params) > 0 {
				return s.runParams(ctx, sts[0], r.params, r.req)
			}
			return s.run(ctx, sts, runOptions{numbered: true, total: total, req: r.req})
		}
		sh := &shell{s: s, env: e, req: r.req, width: terminalWidth(e.stdout)}
		sh.runScript(ctx, items, total, src)
		return sh.result()
	})
}

// newSession connects the options to a session printing to out.
func (e *env) newSession(nc *nats.Conn, out *bufio.Writer, mode string) *session {
	s := newSession(nc, &e.opts.conn, out, e.stderr, mode)
	s.p.headers = e.opts.headers
	s.p.nullValue = e.opts.nullValue
	s.p.color = colorOutput(e.stdout)
	s.timer = e.opts.timer
	if e.opts.level != "" {
		s.level = e.opts.level
	}
	s.caret = isTerminal(e.stderr)
	if w := terminalWidth(e.stdout); w != nil {
		s.p.maxWidth = w()
	}
	return s
}

// shell runs the shell: interactive on a terminal, else the script on
// stdin.
func (e *env) shell(ctx context.Context, mode string, interactive bool) error {
	if !interactive {
		return e.runSQL(ctx, nil, mode, sqlRun{})
	}
	return e.interactive(ctx, mode, func(sh *shell) lineReader {
		if !isTerminal(e.stdout) {
			// Output redirected: prompts go to stderr, no line editing.
			return &promptReader{r: bufio.NewReader(e.stdin), w: e.stderr}
		}
		sh.history = historyFile()
		return newLinerReader(sh.history, e.stderr, sh.completer(ctx))
	})
}

// dial checks the connection options and connects to NATS.
func (e *env) dial() (*nats.Conn, error) {
	if err := e.opts.conn.validate(); err != nil {
		return nil, err
	}
	return e.opts.conn.connect()
}

// withSession dials NATS and runs f with a session in mode writing to a
// buffered stdout, flushed and closed afterwards.
func (e *env) withSession(mode string, f func(s *session, out *bufio.Writer) error) error {
	nc, err := e.dial()
	if err != nil {
		return err
	}
	defer nc.Close()
	out := bufio.NewWriter(e.stdout)
	defer out.Flush()
	return f(e.newSession(nc, out, mode), out)
}

// interactive runs the interactive shell reading lines from the reader
// newReader returns.
func (e *env) interactive(ctx context.Context, mode string, newReader func(*shell) lineReader) error {
	return e.withSession(mode, func(s *session, _ *bufio.Writer) error {
		s.errPrefix = "Error: "
		s.caret = true
		sh := &shell{s: s, env: e, width: terminalWidth(e.stdout)}
		sh.lr = newReader(sh)
		defer sh.lr.close()
		if err := sh.runInteractive(ctx); err != nil {
			return err
		}
		return sh.result()
	})
}

// result is the shell's outcome as an error for the exit code.
func (sh *shell) result() error {
	switch {
	case sh.exitCode != nil:
		if *sh.exitCode == 0 {
			return nil
		}
		return &exitError{code: *sh.exitCode}
	case sh.connFailed:
		return &exitError{code: exitConn}
	case sh.failed:
		return errFailedPrinted
	}
	return nil
}

// flagSet returns a FlagSet for a command whose usage prints synopsis and
// about.
func (e *env) flagSet(name, synopsis, about string) *flag.FlagSet {
	full := "nqctl"
	if name != "" {
		full += " " + name
	}
	fs := flag.NewFlagSet(full, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags] %s\n\n", full, synopsis)
		if about != "" {
			fmt.Fprintf(fs.Output(), "%s\n\n", strings.TrimSpace(about))
		}
		fmt.Fprintln(fs.Output(), "Flags:")
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args with fs and records the connection flags given.
func (e *env) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, errUsagePrinted
	}
	e.opts.conn.noteSet(fs)
	return fs.Args(), nil
}

func (e *env) mainUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprint(w, `Usage: nqctl [flags] [SQL ...]
       nqctl COMMAND [flags] [args]

Runs SQL on an nqlite database and prints the results. SQL given as
arguments is sent as one request. Without arguments, on a terminal nqctl
is an interactive shell (enter .help there); otherwise it runs the SQL
and dot-commands on standard input, sending statements in order in chunks
of whole statements. Flags come before the SQL.

Commands (nqctl COMMAND --help for each):
`)
	for _, c := range commandList {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Exit codes: 0 ok, 1 a statement or request failed, 2 usage error,
3 cannot reach NATS or no node serves the database.

Flags:
`)
	fs.PrintDefaults()
}

// isTerminal reports whether f is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// terminalWidth returns a function reading the width of the terminal w,
// or nil when w is not a terminal.
func terminalWidth(w io.Writer) func() int {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func() int {
		width, _, err := term.GetSize(int(f.Fd()))
		if err != nil {
			return 0
		}
		return width
	}
}

// colorOutput reports whether w is a terminal that may get colors.
func colorOutput(w io.Writer) bool {
	return isTerminal(w) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
}
