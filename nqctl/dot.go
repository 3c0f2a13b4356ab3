package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-runewidth"

	"github.com/nqlite/nqlite/service/api"
)

// dotCmd is a shell dot-command.
type dotCmd struct {
	name string // with the dot
	args string // argument synopsis
	help string
	run  func(sh *shell, ctx context.Context, args []string) error
}

// dotCmds lists the dot-commands, sorted by name (set in init: .help
// refers to it).
var dotCmds []dotCmd

func init() {
	dotCmds = []dotCmd{
		{".backup", "FILE", "write a consistent SQLite file of the database to FILE (fresh snapshot)", (*shell).dotBackup},
		{".bail", "on|off", "stop a script at the first failed statement", (*shell).dotBail},
		{".changes", "on|off", `print "N rows affected" after writes`, (*shell).dotChanges},
		{".databases", "", "list the databases the nodes serve", (*shell).dotDatabases},
		{".db", "[NAME]", "show or switch the database", (*shell).dotDB},
		{".dump", "[--data-only] [--no-transaction] [TABLE...]", "print the database (or the tables matching) as SQL", (*shell).dotDump},
		{".echo", "on|off", "print each command of a script", (*shell).dotEcho},
		{".exit", "[CODE]", "leave the shell (with exit code CODE)", (*shell).dotExit},
		{".headers", "on|off", "show column names (default on)", (*shell).dotHeaders},
		{".help", "[COMMAND]", "show this help (of one command)", (*shell).dotHelp},
		{".import", "[--skip N] FILE TABLE", "import CSV from FILE into TABLE", (*shell).dotImport},
		{".indexes", "[TABLE]", "list the indexes (of the tables matching)", (*shell).dotIndexes},
		{".level", "[none|strong]", "show or set the read consistency", (*shell).dotLevel},
		{".mode", "[MODE]", "show or set the output mode: " + strings.Join(modes, ", "), (*shell).dotMode},
		{".nodes", "[-v]", "list every node: version, applied seq, lag, uptime", (*shell).dotNodes},
		{".nullvalue", "TEXT", `print NULL as TEXT (default "NULL")`, (*shell).dotNullValue},
		{".quit", "", "leave the shell", (*shell).dotExit},
		{".read", "FILE", "run the SQL and dot-commands in FILE", (*shell).dotRead},
		{".restore", "FILE", "replace the database on every node with FILE (SQLite file or SQL dump)", (*shell).dotRestore},
		{".schema", "[PATTERN]", "show the CREATE statements (of the tables matching)", (*shell).dotSchema},
		{".separator", "TEXT", `set the separator of list mode`, (*shell).dotSeparator},
		{".show", "", "same as .status", (*shell).dotStatus},
		{".status", "", "show the connection, database, nodes and settings", (*shell).dotStatus},
		{".tables", "[PATTERN]", "list the tables and views (matching)", (*shell).dotTables},
		{".timeout", "DURATION", "set the timeout of each request, e.g. 30s", (*shell).dotTimeout},
		{".timer", "on|off", "print the node's time and the round trip", (*shell).dotTimer},
	}
}

// dotMore is the longer help of some dot-commands (.help COMMAND).
var dotMore = map[string]string{
	".backup": `A node takes a fresh snapshot (after this shell's last write) into the
JetStream Object Store and nqctl downloads it, digest checked: a consistent
SQLite file. Needs nodes with snapshots enabled.`,
	".restore": `FILE is a SQLite database in any journal mode (a non-empty FILE-wal is
uploaded with it and merged by the node), or SQL text such as a .dump.
Every node switches to it at the same stream sequence; user_version and
application_id are kept. A file the nodes cannot use (not SQLite, corrupt,
encrypted, a -wal or -journal file, a dump with a failing statement) is
refused with the reason, and nothing changes.`,
	".bail":    "A failed request always stops a script; with .bail on a failed statement does too\n(statements are then sent one request each).",
	".changes": "Default on, except in the csv, json, list and raw modes.",
	".dump": `Like sqlite3's .dump: BEGIN TRANSACTION, each table's CREATE and INSERTs, the
AUTOINCREMENT counters, then indexes, triggers and views, and COMMIT. SQLite's
and nqlite's own tables are left out, and so is "PRAGMA foreign_keys=OFF"
(nqlite refuses it). --data-only prints only the INSERTs; --no-transaction
leaves out BEGIN/COMMIT so that nqctl can load a large dump in chunks.`,
	".import": `CSV (RFC 4180). A missing TABLE is created from the header row, with TEXT
columns; into an existing table every row is data (--skip 1 drops a header).
Short rows are filled with NULL, extra fields dropped. Rows are sent in
batches of INSERTs of at most 256 KiB; a row that fails is reported with its
line and the others are kept. FILE "-" is standard input.`,
	".level": "none: read what the answering node has applied (after this shell's own writes);\nstrong: first wait until that node has applied everything the stream held.",
	".mode":  "table and box are bordered tables, column the aligned table of plain nqctl; csv is\nRFC 4180 (NULL an empty field, '' a quoted \"\"); json an array of objects per result;\nline one \"column = value\" per line; list values separated by .separator; raw the\nserver's JSON responses. Wide values are cut to the terminal's width.",
	".nodes": "Sends one micro STATS request and collects the replies of all nodes until none\ncame for 300ms. -v (and the machine modes) show every field.",
	".timer": "Run Time: node N ms (the node's time on the request), round trip N ms.",
}

// dot runs one dot-command line.
func (sh *shell) dot(ctx context.Context, line string) {
	args, err := dotArgs(line)
	if err != nil {
		sh.note(failedf("%v", err))
		return
	}
	if len(args) == 0 {
		return
	}
	cmd, err := findDot(args[0])
	if err != nil {
		sh.note(err)
		return
	}
	sh.note(cmd.run(sh, ctx, args[1:]))
}

// findDot finds a dot-command by name or unique prefix.
func findDot(name string) (*dotCmd, error) {
	name = strings.ToLower(name)
	var found *dotCmd
	for i := range dotCmds {
		c := &dotCmds[i]
		if c.name == name {
			return c, nil
		}
		if strings.HasPrefix(c.name, name) && len(name) > 1 {
			if found != nil {
				return nil, failedf("%s is ambiguous: it may be %s or %s", name, found.name, c.name)
			}
			found = c
		}
	}
	if found == nil {
		return nil, failedf("unknown command %s: enter .help for the list", name)
	}
	return found, nil
}

// dotArgs splits a dot-command line into words; '...' and "..." quote a
// word with spaces.
func dotArgs(line string) ([]string, error) {
	var (
		args []string
		cur  strings.Builder
		in   bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		case (c == '\'' || c == '"') && !in:
			j := strings.IndexByte(line[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated %c in %s", c, line)
			}
			args = append(args, line[i+1:i+1+j])
			i += j + 1
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		args = append(args, cur.String())
	}
	return args, nil
}

// usage returns the usage error of a dot-command.
func dotUsage(name string) error {
	c, err := findDot(name)
	if err != nil {
		return err
	}
	return failedf("usage: %s %s", c.name, c.args)
}

// parseBool reads on/off.
func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "on", "yes", "true", "1":
		return true, true
	case "off", "no", "false", "0":
		return false, true
	}
	return false, false
}

// onOff sets *v from a one-argument on|off command.
func onOff(name string, args []string, v *bool) error {
	if len(args) != 1 {
		return dotUsage(name)
	}
	b, ok := parseBool(args[0])
	if !ok {
		return dotUsage(name)
	}
	*v = b
	return nil
}

func (sh *shell) dotBail(_ context.Context, args []string) error {
	return onOff(".bail", args, &sh.bail)
}

func (sh *shell) dotChanges(_ context.Context, args []string) error {
	var b bool
	if err := onOff(".changes", args, &b); err != nil {
		return err
	}
	sh.s.p.changes = &b
	return nil
}

func (sh *shell) dotEcho(_ context.Context, args []string) error {
	return onOff(".echo", args, &sh.echo)
}

func (sh *shell) dotHeaders(_ context.Context, args []string) error {
	return onOff(".headers", args, &sh.s.p.headers)
}

func (sh *shell) dotTimer(_ context.Context, args []string) error {
	return onOff(".timer", args, &sh.s.timer)
}

func (sh *shell) dotExit(_ context.Context, args []string) error {
	code := 0
	if len(args) > 0 {
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 0 || n > 255 {
			return failedf("usage: .exit [CODE] (0-255)")
		}
		code = n
	}
	sh.exitCode = &code
	return nil
}

func (sh *shell) dotHelp(_ context.Context, args []string) error {
	w := sh.s.out
	if len(args) > 0 {
		name := args[0]
		if !strings.HasPrefix(name, ".") {
			name = "." + name
		}
		c, err := findDot(name)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s %s\n    %s\n", c.name, c.args, c.help)
		if more := dotMore[c.name]; more != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(more))
		}
		return nil
	}
	const col = 24
	for _, c := range dotCmds {
		syn := c.name
		if c.args != "" {
			syn += " " + c.args
		}
		if len(syn) > col {
			fmt.Fprintf(w, "%s\n%*s  %s\n", syn, col, "", c.help)
			continue
		}
		fmt.Fprintf(w, "%-*s  %s\n", col, syn, c.help)
	}
	fmt.Fprint(w, `
PATTERN and TABLE... are LIKE patterns. SQL statements end with ';' and
may span lines. Ctrl-C drops the line (or cancels the running request),
Ctrl-D leaves. History: ~/.nqctl_history ($NQCTL_HISTORY). Enter
".help COMMAND" for more on one command.
`)
	return nil
}

func (sh *shell) dotMode(_ context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintf(sh.s.out, "current output mode: %s\n", sh.s.p.mode)
		return nil
	}
	m := strings.ToLower(args[0])
	if m == "columns" {
		m = modeColumn
	}
	if len(args) != 1 || !validMode(m) {
		return failedf("usage: .mode %s", strings.Join(modes, "|"))
	}
	sh.s.p.mode = m
	return nil
}

func (sh *shell) dotNullValue(_ context.Context, args []string) error {
	if len(args) != 1 {
		return dotUsage(".nullvalue")
	}
	v := args[0]
	sh.s.p.nullValue = &v
	return nil
}

func (sh *shell) dotSeparator(_ context.Context, args []string) error {
	if len(args) != 1 {
		return dotUsage(".separator")
	}
	sh.s.p.separator = unescape(args[0])
	return nil
}

// unescape reads the C escapes \t, \n and \\ in a separator.
func unescape(s string) string {
	return strings.NewReplacer(`\t`, "\t", `\n`, "\n", `\r`, "\r", `\\`, `\`).Replace(s)
}

func (sh *shell) dotLevel(_ context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintf(sh.s.out, "current level: %s\n", sh.s.level)
		return nil
	}
	switch l := strings.ToLower(args[0]); l {
	case api.LevelNone, api.LevelStrong:
		sh.s.level = l
		return nil
	case "weak":
		sh.s.level = api.LevelNone
		return nil
	}
	return dotUsage(".level")
}

func (sh *shell) dotTimeout(_ context.Context, args []string) error {
	if len(args) != 1 {
		return dotUsage(".timeout")
	}
	d, err := time.ParseDuration(args[0])
	if err != nil {
		// sqlite3's .timeout takes milliseconds.
		ms, err2 := strconv.Atoi(args[0])
		if err2 != nil {
			return failedf(".timeout %s: give a duration such as 30s", args[0])
		}
		d = time.Duration(ms) * time.Millisecond
	}
	if d < time.Millisecond || d > api.MaxTimeoutMS*time.Millisecond {
		return failedf(".timeout %v: give 1ms to 10m", d)
	}
	sh.s.timeout = d
	return nil
}

func (sh *shell) dotDB(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintf(sh.s.out, "current database: %s\n", sh.s.db)
		return nil
	}
	if len(args) != 1 {
		return dotUsage(".db")
	}
	name := args[0]
	if !api.ValidDBName(name) {
		return failedf(".db %q: use 1-64 of A-Z a-z 0-9 _ -", name)
	}
	if name == sh.s.db {
		return nil
	}
	sh.s.db = name
	sh.s.afterSeq = 0 // sequences are per database stream
	// Say so at once when no node serves it (it may start later).
	_, err := sh.s.query(ctx, api.Statement{SQL: "SELECT 1"})
	if err != nil && isConnError(err) {
		fmt.Fprintf(sh.env.stderr, "warning: %v\n", err)
	}
	return nil
}

func (sh *shell) dotRead(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return dotUsage(".read")
	}
	return sh.readFile(ctx, args[0])
}

// userObjects is the condition that hides SQLite's and nqlite's own
// schema objects.
const userObjects = "name NOT GLOB 'sqlite_*' AND name NOT GLOB '_nqlite_*' AND tbl_name NOT GLOB '_nqlite_*'"

func (sh *shell) dotTables(ctx context.Context, args []string) error {
	names, err := sh.schemaNames(ctx, ".tables", args,
		"SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND "+userObjects,
		" AND name LIKE ?", "1")
	if err == nil {
		sh.columns(names)
	}
	return err
}

func (sh *shell) dotIndexes(ctx context.Context, args []string) error {
	names, err := sh.schemaNames(ctx, ".indexes", args,
		"SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name NOT GLOB '_nqlite_*'",
		" AND tbl_name LIKE ?", "1")
	if err == nil {
		sh.columns(names)
	}
	return err
}

func (sh *shell) dotSchema(ctx context.Context, args []string) error {
	names, err := sh.schemaNames(ctx, ".schema", args,
		"SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND "+userObjects,
		" AND (name LIKE ?1 OR tbl_name LIKE ?1)", "rowid")
	for _, s := range names {
		fmt.Fprintf(sh.s.out, "%s;\n", s)
	}
	return err
}

// schemaNames runs the listing query of dot-command cmd: query, plus
// filter (a LIKE of the one optional argument, bound to ?/?1) when args
// holds a pattern, ordered by orderBy. More than one argument is a usage
// error.
func (sh *shell) schemaNames(ctx context.Context, cmd string, args []string, query, filter, orderBy string) ([]string, error) {
	if len(args) > 1 {
		return nil, dotUsage(cmd)
	}
	q := api.Statement{SQL: query}
	if len(args) == 1 {
		q.SQL += filter
		q.Params = []any{args[0]}
	}
	q.SQL += " ORDER BY " + orderBy
	return sh.names(ctx, q)
}

// names runs a query of one text column.
func (sh *shell) names(ctx context.Context, q api.Statement) ([]string, error) {
	resp, err := sh.s.query(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, row := range resp.Results[0].Values {
		if s, ok := row[0].(string); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// columns prints names in columns across the terminal, like sqlite3's
// .tables.
func (sh *shell) columns(names []string) {
	if len(names) == 0 {
		return
	}
	w := 0
	for _, n := range names {
		w = max(w, runewidth.StringWidth(n))
	}
	w += 2
	total := 80
	if sh.width != nil {
		if tw := sh.width(); tw > 0 {
			total = tw
		}
	}
	ncols := max(1, total/w)
	nrows := (len(names) + ncols - 1) / ncols
	for r := 0; r < nrows; r++ {
		var line strings.Builder
		for c := 0; c < ncols; c++ {
			i := c*nrows + r
			if i >= len(names) {
				break
			}
			n := names[i]
			line.WriteString(n)
			if (c+1)*nrows+r < len(names) {
				line.WriteString(strings.Repeat(" ", w-runewidth.StringWidth(n)))
			}
		}
		fmt.Fprintln(sh.s.out, line.String())
	}
}

func (sh *shell) dotDatabases(ctx context.Context, args []string) error {
	stats, err := collectStats(ctx, sh.s.nc, sh.s.timeout, statsQuiet, 0)
	if err != nil {
		return err
	}
	seen := map[string][]string{}
	for _, st := range stats {
		seen[st.DB] = append(seen[st.DB], st.Node)
	}
	var dbs []string
	for db := range seen {
		dbs = append(dbs, db)
	}
	sort.Strings(dbs)
	for _, db := range dbs {
		mark := " "
		if db == sh.s.db {
			mark = "*"
		}
		fmt.Fprintf(sh.s.out, "%s %s: %s\n", mark, db, strings.Join(seen[db], ", "))
	}
	return nil
}

func (sh *shell) dotNodes(ctx context.Context, args []string) error {
	all := machineMode(sh.s.p.mode)
	for _, a := range args {
		if a != "-v" && a != "--verbose" {
			return dotUsage(".nodes")
		}
		all = true
	}
	stats, err := collectStats(ctx, sh.s.nc, sh.s.timeout, statsQuiet, 0)
	if err != nil {
		return err
	}
	sh.applyWidth()
	sh.s.p.result(nodesResult(stats, time.Now(), all))
	return nil
}

func (sh *shell) dotStatus(ctx context.Context, args []string) error {
	w := sh.s.out
	nc := sh.s.nc
	rtt, err := nc.RTT()
	rttText := "?"
	if err == nil {
		rttText = rtt.Round(time.Microsecond).String()
	}
	fmt.Fprintf(w, "server:    %s (%s, nats-server %s, rtt %s)\n", nc.ConnectedUrlRedacted(), nc.ConnectedServerName(), nc.ConnectedServerVersion(), rttText)
	ctxName := sh.s.conn.contextName
	if ctxName == "" {
		ctxName = "(none)"
	}
	fmt.Fprintf(w, "context:   %s\n", ctxName)
	fmt.Fprintf(w, "database:  %s (level %s, timeout %v, read after seq %d)\n", sh.s.db, sh.s.level, sh.s.timeout, sh.s.afterSeq)
	if stats, err := collectStats(ctx, nc, sh.s.timeout, statsQuiet, 0); err != nil {
		fmt.Fprintf(w, "nodes:     %v\n", err)
	} else {
		var names []string
		var maxLag uint64
		for _, st := range stats {
			if st.DB == sh.s.db {
				names = append(names, st.Node)
				maxLag = max(maxLag, st.Lag)
			}
		}
		fmt.Fprintf(w, "nodes:     %d serving %s (%s), max lag %d\n", len(names), sh.s.db, strings.Join(names, ", "), maxLag)
	}
	null := sh.s.p.null()
	fmt.Fprintf(w, "output:    mode %s, headers %s, nullvalue %q, changes %s, timer %s\n",
		sh.s.p.mode, onOffText(sh.s.p.headers), null, onOffText(sh.s.p.showChanges()), onOffText(sh.s.timer))
	if sh.history != "" {
		fmt.Fprintf(w, "history:   %s\n", sh.history)
	}
	return nil
}

func onOffText(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (sh *shell) dotDump(ctx context.Context, args []string) error {
	var o dumpOptions
	for _, a := range args {
		switch a {
		case "--data-only", "-data-only":
			o.dataOnly = true
		case "--no-transaction", "-no-transaction":
			o.noTransaction = true
		default:
			if strings.HasPrefix(a, "-") {
				return dotUsage(".dump")
			}
			o.patterns = append(o.patterns, a)
		}
	}
	return dump(ctx, sh.s, sh.s.out, o)
}

func (sh *shell) dotImport(ctx context.Context, args []string) error {
	var o importOptions
	var rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "--skip", "-skip":
			if i+1 >= len(args) {
				return dotUsage(".import")
			}
			n, err := strconv.Atoi(args[i+1])
			if err != nil || n < 0 {
				return dotUsage(".import")
			}
			o.skip = n
			i++
		case "--csv", "-csv":
		default:
			if strings.HasPrefix(a, "-") && a != "-" {
				return dotUsage(".import")
			}
			rest = append(rest, a)
		}
	}
	if len(rest) != 2 {
		return dotUsage(".import")
	}
	o.file, o.table = rest[0], rest[1]
	o.progress = isTerminal(sh.env.stderr)
	o.stdin = sh.env.stdin
	return importCSV(ctx, sh.s, sh.env.stderr, o)
}

func (sh *shell) dotBackup(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return dotUsage(".backup")
	}
	return backup(ctx, sh.s, args[0], sh.env.stderr, isTerminal(sh.env.stderr))
}

func (sh *shell) dotRestore(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return dotUsage(".restore")
	}
	return restore(ctx, sh.s, args[0], sh.env.stderr, isTerminal(sh.env.stderr))
}
