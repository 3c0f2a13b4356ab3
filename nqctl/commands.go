package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// command is a subcommand of nqctl. Each has its own FlagSet, with the
// connection flags (whose values given before the command carry over).
type command interface {
	// Run parses args (the arguments after the command's name) and runs
	// the command. Its error maps to the exit code (see exitCode).
	Run(ctx context.Context, args []string) error
}

// commandInfo names a command for dispatch and help.
type commandInfo struct {
	name    string
	summary string
	make    func(*env) command
}

// commandList holds nqctl's commands (set in init: help refers to it).
var commandList []commandInfo

func init() {
	commandList = []commandInfo{
		{"shell", "the interactive shell (the default with no SQL on a terminal)", func(e *env) command { return &shellCommand{e} }},
		{"query", "run SQL and print the rows", func(e *env) command { return &queryCommand{env: e, name: "query"} }},
		{"exec", "run SQL from arguments, a file or stdin (in chunks); transactions, idempotency keys", func(e *env) command { return &queryCommand{env: e, name: "exec"} }},
		{"dump", "print the database as SQL, like sqlite3's .dump", func(e *env) command { return &dumpCommand{e} }},
		{"import", "import a CSV file into a table", func(e *env) command { return &importCommand{e} }},
		{"nodes", "list every node: version, applied sequence, lag, uptime", func(e *env) command { return &nodesCommand{e} }},
		{"check", "check that every node holds the same content (a hash per node at one sequence; exit 1 if any differs)", func(e *env) command { return &checkCommand{e} }},
		{"bench", "measure inserts and reads against a running cluster", func(e *env) command { return &benchCommand{e} }},
		{"backup", "write a consistent SQLite file of the database (from a fresh snapshot)", func(e *env) command { return &backupCommand{e} }},
		{"restore", "replace the database on every node with a SQLite file or SQL dump", func(e *env) command { return &restoreCommand{e} }},
		{"migrate", "apply the pending NNNN_name.sql migrations of a directory, once each (--status lists them)", func(e *env) command { return &migrateCommand{e} }},
		{"watch", "print the change feed (every committed row change) as it arrives", func(e *env) command { return &watchCommand{e} }},
		{"help", "help on nqctl or a command", func(e *env) command { return &helpCommand{e} }},
	}
}

// findCommand returns the command called name, or nil. No SQL statement
// is a single word like these, so they do not shadow SQL arguments.
func findCommand(name string) *commandInfo {
	for i := range commandList {
		if commandList[i].name == name {
			return &commandList[i]
		}
	}
	return nil
}

// helpCommand is "nqctl help [COMMAND]".
type helpCommand struct{ env *env }

// Run prints the help of nqctl or of a command.
func (c *helpCommand) Run(ctx context.Context, args []string) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if cmd := findCommand(args[0]); cmd != nil && cmd.name != "help" {
			return cmd.make(c.env).Run(ctx, []string{"--help"})
		}
		return usageErrorf("help %s: no such command", args[0])
	}
	return c.env.main(ctx, []string{"--help"})
}

// shellCommand is "nqctl shell".
type shellCommand struct{ env *env }

// Run starts the shell: interactive when standard input is a terminal,
// else it runs the script on standard input.
func (c *shellCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	fs := e.flagSet("shell", "", `The interactive shell: SQL statements ending with ';' (over several lines if
need be), dot-commands (.help lists them), line editing and history in
~/.nqctl_history ($NQCTL_HISTORY). With standard input not a terminal it
runs the SQL and dot-commands read from it, without prompts.`)
	e.opts.conn.register(fs)
	e.opts.registerOutput(fs)
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("shell takes no arguments (got %q): use nqctl query to run SQL", rest[0])
	}
	mode, err := e.opts.outputMode(modeTable)
	if err != nil {
		return err
	}
	if err := e.opts.conn.validate(); err != nil {
		return err
	}
	return e.shell(ctx, mode, isTerminal(e.stdin))
}

// queryCommand is "nqctl query" and "nqctl exec".
type queryCommand struct {
	env  *env
	name string
}

// Run runs the SQL of the arguments, --file or standard input.
func (c *queryCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	exec := c.name == "exec"
	about := `Runs the SQL given as arguments (joined with spaces) in one request and
prints the rows. Without arguments it reads SQL (and dot-commands) from
--file or standard input and sends the statements in order, in chunks of
whole statements. -p binds positional parameters (?, ?NNN) of a single
statement: a JSON value (5, 1.5, "text", null, {"base64": "..."}), or
else the text as it is.`
	synopsis := "[SQL ...]"
	if exec {
		about = `Runs SQL: the arguments (joined with spaces, one request), --file or
standard input (statements sent in order, in chunks of whole statements),
and prints what it changed and any rows. --transaction makes all the
statements commit or none (one request); --id sends an idempotency key
(a retry within the stream's duplicate window is applied once); --queue
answers once the write is stored, before it is applied.`
	}
	fs := e.flagSet(c.name, synopsis, about)
	e.opts.conn.register(fs)
	e.opts.registerOutput(fs)
	var r sqlRun
	fs.Func("p", "a positional parameter, repeatable: a JSON value, or else text", func(s string) error {
		r.params = append(r.params, paramValue(s))
		return nil
	})
	fs.StringVar(&r.file, "file", "", "read the SQL from this file ('-': standard input)")
	fs.StringVar(&r.file, "f", "", "short for --file")
	quiet := false
	if exec {
		fs.BoolVar(&r.req.transaction, "transaction", false, "all statements commit or none (sent in one request)")
		fs.StringVar(&r.req.id, "id", "", "idempotency key (Nats-Msg-Id): a retry within 2 minutes is applied once")
		fs.BoolVar(&r.req.queue, "queue", false, "answer once JetStream stored the write, before it is applied")
		fs.BoolVar(&quiet, "quiet", false, `do not print "N rows affected"`)
	}
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if r.file != "" && len(rest) > 0 {
		return usageErrorf("give SQL as arguments or --file, not both")
	}
	if quiet {
		off := false
		r.changes = &off
	}
	mode, err := e.opts.outputMode(modeColumn)
	if err != nil {
		return err
	}
	if err := e.opts.conn.validate(); err != nil {
		return err
	}
	if len(rest) == 0 && r.file == "" && isTerminal(e.stdin) {
		return usageErrorf("no SQL given: pass it as arguments, with --file or on standard input")
	}
	return e.runSQL(ctx, rest, mode, r)
}

// paramValue reads a -p value: a JSON value as in the API, else text.
func paramValue(s string) any {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err == nil && !dec.More() {
		if val, err := api.ValueFromJSON(v); err == nil {
			return val
		}
	}
	return s
}

// dumpCommand is "nqctl dump".
type dumpCommand struct{ env *env }

// Run prints the database as SQL.
func (c *dumpCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	fs := e.flagSet("dump", "[TABLE ...]", `Prints the database (or the tables whose names match the LIKE patterns,
with their indexes and triggers) as SQL, like sqlite3's .dump, wrapped in
BEGIN TRANSACTION/COMMIT. Load it with sqlite3, or with nqctl (a dump
larger than one request needs --no-transaction to load in chunks).`)
	e.opts.conn.register(fs)
	var o dumpOptions
	fs.BoolVar(&o.dataOnly, "data-only", false, "only the rows, no CREATE statements")
	fs.BoolVar(&o.noTransaction, "no-transaction", false, "no BEGIN TRANSACTION/COMMIT around the dump")
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	o.patterns = rest
	return e.withSession(modeColumn, func(s *session, out *bufio.Writer) error { return dump(ctx, s, out, o) })
}

// importCommand is "nqctl import".
type importCommand struct{ env *env }

// Run imports a CSV file.
func (c *importCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	fs := e.flagSet("import", "FILE TABLE", `Imports CSV data from FILE ('-': standard input) into TABLE, like sqlite3's
.import: a missing table is created from the header row (TEXT columns);
into an existing table every row is data (--skip 1 drops a header). Rows
are sent in batches of parameterized INSERTs of at most 256 KiB each,
with a progress bar on a terminal.`)
	e.opts.conn.register(fs)
	var o importOptions
	fs.IntVar(&o.skip, "skip", 0, "skip the first N rows")
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 2 {
		fs.Usage()
		return errUsagePrinted
	}
	o.file, o.table = rest[0], rest[1]
	o.stdin = e.stdin
	o.progress = isTerminal(e.stderr)
	return e.withSession(modeColumn, func(s *session, _ *bufio.Writer) error { return importCSV(ctx, s, e.stderr, o) })
}

// nodesCommand is "nqctl nodes".
type nodesCommand struct{ env *env }

// Run lists the nodes.
func (c *nodesCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	fs := e.flagSet("nodes", "", `Lists every nqlite node and database: node id, version, applied stream
sequence, lag, uptime, requests served and the reply's round trip; with
-v (and in csv, json, list and raw modes) also the stream's last
sequence, skipped entries, requests waiting, errors, the micro instance
id and the start time. It sends one micro STATS
request ($SRV.STATS.nqlite) and collects the replies of all nodes until
none came for 300ms (or --expect N answered). With --db, only that database.`)
	e.opts.conn.register(fs)
	e.opts.registerOutput(fs)
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for the first reply")
	verbose := fs.Bool("v", false, "every field (always in csv, json, list and raw modes)")
	expect := fs.Int("expect", 0, "stop waiting once this many nodes answered (default: when none answered for 300ms)")
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("nodes takes no arguments")
	}
	mode, err := e.opts.outputMode(modeColumn)
	if err != nil {
		return err
	}
	nc, err := e.dial()
	if err != nil {
		return err
	}
	defer nc.Close()
	stats, err := collectStats(ctx, nc, *wait, statsQuiet, *expect)
	if err != nil {
		return connErrorf("%v", err)
	}
	if e.opts.conn.set["db"] {
		var kept []client.NodeStats
		for _, s := range stats {
			if s.DB == e.opts.conn.db {
				kept = append(kept, s)
			}
		}
		if len(kept) == 0 {
			return connErrorf("%v %q", client.ErrNoNode, e.opts.conn.db)
		}
		stats = kept
	}
	out := bufio.NewWriter(e.stdout)
	defer out.Flush()
	s := e.newSession(nc, out, mode)
	if mode == modeRaw {
		s.p.mode = modeJSON
	}
	s.p.result(nodesResult(stats, time.Now(), *verbose || machineMode(mode)))
	out.Flush()
	for _, h := range checkpointHints(stats) {
		fmt.Fprintln(e.stderr, h)
	}
	return nil
}

// checkpointHints says what an operator should do about nodes whose
// running digest differs from the others' (see Divergence in the README).
func checkpointHints(stats []client.NodeStats) []string {
	var out []string
	for _, s := range stats {
		switch {
		case s.State == "diverged":
			out = append(out, fmt.Sprintf("%s/%s is diverged (its digest differs from the majority's at checkpoint %d): it refuses requests and heals from an agreeing node's snapshot by itself", s.Node, s.DB, s.DivergedSeq))
		case s.CheckpointStatus == "split":
			out = append(out, fmt.Sprintf("%s/%s disagrees with other nodes at checkpoint %d and no majority holds one digest: no node heals by itself; run `nqctl check %s` to see which tables differ, decide which copy is wrong, stop that node, move its %s.sqlite aside and start it again (it rebuilds from the stored snapshot or the stream), then check again", s.Node, s.DB, s.CheckpointSeq, s.DB, s.DB))
		}
	}
	return out
}

// completer completes dot-commands at the start of a line, and SQL
// keywords and table names elsewhere.
func (sh *shell) completer(ctx context.Context) func(line string, pos int) (string, []string, string) {
	var (
		tables  []string
		fetched time.Time
	)
	return func(line string, pos int) (string, []string, string) {
		head, tail := line[:pos], line[pos:]
		i := strings.LastIndexAny(head, " \t(,")
		word := head[i+1:]
		head = head[:i+1]
		var cands []string
		if strings.HasPrefix(strings.TrimSpace(line), ".") && i < 0 {
			for _, c := range dotCmds {
				if strings.HasPrefix(c.name, strings.ToLower(word)) {
					cands = append(cands, c.name+" ")
				}
			}
			return head, cands, tail
		}
		if word == "" {
			return head, nil, tail
		}
		if time.Since(fetched) > 5*time.Second {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			names, err := sh.names(cctx, api.Statement{SQL: "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND " + userObjects})
			cancel()
			if err == nil {
				tables, fetched = names, time.Now()
			}
		}
		upper := strings.ToUpper(word)
		for _, t := range tables {
			if strings.HasPrefix(strings.ToUpper(t), upper) {
				cands = append(cands, t)
			}
		}
		for k := range sqlKeywords {
			if strings.HasPrefix(k, upper) {
				if word == strings.ToLower(word) {
					k = strings.ToLower(k)
				}
				cands = append(cands, k)
			}
		}
		sort.Strings(cands)
		return head, cands, tail
	}
}
