package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/nqlite/nqlite/service/api"
)

// shell runs the interactive shell and scripts (standard input, .read):
// SQL statements, which may span lines and end with ';', and dot-commands
// like the sqlite3 shell's.
type shell struct {
	s   *session
	env *env
	lr  lineReader

	// bail stops a script at the first failed statement (.bail on); a
	// script always stops at a failed request.
	bail bool
	// echo prints each command of a script before running it.
	echo bool
	// failed: a statement or command failed (exit code 1 at the end).
	failed bool
	// connFailed: a request could not reach any node (exit code 3).
	connFailed bool
	// exitCode is set by .exit.
	exitCode *int
	// nstmts numbers the statements of the top-level input.
	nstmts int
	depth  int // .read nesting
	// width returns the terminal width for table output, 0 when unknown.
	width func() int
	// history is the history file, for .status.
	history string
	// req are the request options of a script's statements (nqctl exec);
	// with a transaction or an idempotency key the statements are sent in
	// one request, not in chunks.
	req reqOptions
}

// prompts returns the primary and continuation prompts; the primary shows
// the database.
func (sh *shell) prompts() (string, string) {
	p := "nqlite:" + sh.s.db + "> "
	return p, strings.Repeat(" ", max(0, len(p)-5)) + "...> "
}

// applyWidth sets the printer's width for the next output.
func (sh *shell) applyWidth() {
	if sh.width != nil {
		sh.s.p.maxWidth = sh.width()
	}
}

// runInteractive reads commands from the line reader until EOF or .exit.
func (sh *shell) runInteractive(ctx context.Context) error {
	out := sh.env.stderr
	fmt.Fprintf(out, "nqctl: database %s at %s; .help for help, Ctrl-D to leave\n",
		sh.s.db, sh.s.nc.ConnectedUrlRedacted())
	var (
		sc      api.Scanner
		pending strings.Builder
		lines   []string
	)
	reset := func() {
		sc.Reset()
		pending.Reset()
		lines = lines[:0]
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		primary, cont := sh.prompts()
		prompt := primary
		if pending.Len() > 0 {
			prompt = cont
		}
		line, err := sh.lr.readLine(prompt)
		if errors.Is(err, errInterrupted) {
			reset()
			continue
		}
		if err == io.EOF {
			if pending.Len() > 0 && !sc.Idle() {
				fmt.Fprintln(out, "\n(the unfinished statement was not run)")
			}
			fmt.Fprintln(out)
			return nil
		}
		if err != nil {
			return failedf("read input: %v", err)
		}
		if pending.Len() == 0 && sc.Idle() {
			if t := strings.TrimSpace(line); strings.HasPrefix(t, ".") {
				sh.lr.addHistory(t)
				sh.command(ctx, func(ctx context.Context) { sh.dot(ctx, t) })
				if sh.exitCode != nil {
					return nil
				}
				continue
			}
		}
		pending.WriteString(line)
		pending.WriteByte('\n')
		lines = append(lines, line)
		sc.Feed(line + "\n")
		if sc.Idle() && !sc.Ended() {
			// Only white space and comments so far.
			reset()
			continue
		}
		if !sc.Complete() {
			continue
		}
		for _, e := range historyEntries(lines) {
			sh.lr.addHistory(e)
		}
		stmts := splitStmts(pending.String(), 1)
		reset()
		if len(stmts) == 0 {
			continue
		}
		sh.command(ctx, func(ctx context.Context) {
			sh.applyWidth()
			sh.note(sh.s.run(ctx, stmts, runOptions{chunked: true}))
		})
	}
}

// command runs f with a context that Ctrl-C cancels, without leaving the
// shell.
func (sh *shell) command(ctx context.Context, f func(context.Context)) {
	cctx, cancel := context.WithCancel(ctx)
	restore := onInterrupt(cancel)
	sh.s.p.n = 0 // no blank line before the command's first result
	defer func() {
		restore()
		cancel()
	}()
	f(cctx)
	sh.s.out.Flush()
}

// note records the outcome of a command for the exit code.
func (sh *shell) note(err error) {
	if err == nil {
		return
	}
	if exitCode(err) == exitConn {
		sh.connFailed = true
	}
	sh.failed = true
	if msg := errorMessage(err); msg != "" {
		sh.s.errorf("%s", msg)
	}
}

// historyEntries turns the lines of a statement into history entries:
// one line joined with spaces, or, when a line comment would swallow what
// follows it, each line on its own.
func historyEntries(lines []string) []string {
	for i, l := range lines {
		if i < len(lines)-1 && strings.Contains(l, "--") {
			return append([]string(nil), lines...)
		}
	}
	parts := make([]string, 0, len(lines))
	for _, l := range lines {
		if t := strings.TrimSpace(l); t != "" {
			parts = append(parts, t)
		}
	}
	return []string{strings.Join(parts, " ")}
}

// splitStmts splits SQL text into statements, with the line each starts
// on (firstLine is the line number of the text's first line).
func splitStmts(text string, firstLine int) []stmt {
	parts := api.Split(text)
	out := make([]stmt, len(parts))
	off := 0
	line := firstLine
	for i, p := range parts {
		if j := strings.Index(text[off:], p); j >= 0 {
			line += strings.Count(text[off:off+j], "\n")
			out[i] = stmt{sql: p, line: line}
			line += strings.Count(p, "\n")
			off += j + len(p)
		} else {
			out[i] = stmt{sql: p}
		}
	}
	return out
}

// scriptItem is a piece of a script: a dot-command, or a run of
// statements between dot-commands.
type scriptItem struct {
	dot   string
	line  int
	stmts []stmt
}

// parseScript divides a script into dot-commands and runs of statements.
// A dot-command is a line starting with '.' where no statement is
// pending, as in the sqlite3 shell. It returns the items and the number
// of statements.
func parseScript(text string) ([]scriptItem, int) {
	var (
		items   []scriptItem
		sc      api.Scanner
		pending strings.Builder
		start   int // line of pending's first line
		n       int
	)
	addStmts := func() {
		if pending.Len() == 0 {
			return
		}
		sts := splitStmts(pending.String(), start)
		pending.Reset()
		sc.Reset()
		if len(sts) == 0 {
			return
		}
		n += len(sts)
		if k := len(items); k > 0 && items[k-1].dot == "" {
			items[k-1].stmts = append(items[k-1].stmts, sts...)
			return
		}
		items = append(items, scriptItem{stmts: sts, line: sts[0].line})
	}
	lineNo := 0
	for len(text) > 0 {
		lineNo++
		line, rest, _ := strings.Cut(text, "\n")
		text = rest
		if sc.Idle() {
			if t := strings.TrimSpace(line); strings.HasPrefix(t, ".") {
				pending.Reset() // comments only
				sc.Reset()
				items = append(items, scriptItem{dot: t, line: lineNo})
				continue
			}
		}
		if pending.Len() == 0 {
			start = lineNo
		}
		pending.WriteString(line)
		pending.WriteByte('\n')
		sc.Feed(line + "\n")
		if sc.Complete() {
			addStmts()
		}
	}
	addStmts()
	return items, n
}

// runScript runs a script: its statements in chunks, its dot-commands in
// order. source names a file for error lines ("" for standard input).
// The top-level script numbers statements from 1 across the input.
func (sh *shell) runScript(ctx context.Context, items []scriptItem, total int, source string) {
	for _, it := range items {
		if sh.exitCode != nil || ctx.Err() != nil {
			return
		}
		if sh.connFailed || (sh.bail && sh.failed) {
			return
		}
		if it.dot != "" {
			if sh.echo {
				fmt.Fprintln(sh.s.out, it.dot)
			}
			sh.dot(ctx, it.dot)
			sh.s.out.Flush()
			continue
		}
		if sh.echo {
			for _, st := range it.stmts {
				fmt.Fprintln(sh.s.out, st.sql+";")
			}
		}
		o := runOptions{chunked: true, numbered: true, bail: true, bailStatements: sh.bail, source: source, req: sh.req}
		if sh.req.transaction || sh.req.id != "" {
			o.chunked = false
		}
		if sh.depth == 0 {
			o.first, o.total = sh.nstmts, total
		}
		sh.applyWidth()
		err := sh.s.run(ctx, it.stmts, o)
		if sh.depth == 0 {
			sh.nstmts += len(it.stmts)
		}
		if err != nil {
			sh.note(err)
			if errors.Is(err, errRequestFailed) || exitCode(err) == exitConn {
				return
			}
		}
	}
}

// readScript reads a script file (or standard input when name is "-"),
// drops a byte order mark and checks that it is UTF-8.
func readScript(r io.Reader, name string) (string, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return "", failedf("read %s: %v", name, err)
	}
	text := strings.TrimPrefix(string(data), "\uFEFF") // a byte order mark is not SQL
	if !utf8.ValidString(text) {
		return "", failedf("the SQL in %s is not valid UTF-8: convert it first (e.g. with iconv)", name)
	}
	return text, nil
}

// readFile runs .read FILE.
func (sh *shell) readFile(ctx context.Context, name string) error {
	if sh.depth >= 16 {
		return failedf(".read %s: nested too deep (16 levels)", name)
	}
	f, err := os.Open(name)
	if err != nil {
		return failedf(".read: %v", err)
	}
	text, err := readScript(f, name)
	f.Close()
	if err != nil {
		return err
	}
	items, n := parseScript(text)
	sh.depth++
	bail := sh.bail
	defer func() { sh.depth--; sh.bail = bail }()
	sh.runScript(ctx, items, n, name)
	return nil
}
