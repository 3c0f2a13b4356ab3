package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/nqlite/nqlite/service/api"
)

// Migrations: files NNNN_name.sql in a directory, applied once each, in
// version order. Each one goes as one request with transaction: true that
// holds, in order,
//
//	CREATE TABLE IF NOT EXISTS <table>(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)
//	INSERT INTO <table>(version, name, applied_at) VALUES(N, 'name', <the entry's time>)
//	the file's statements
//
// so the migration and its record commit together on every node, or not
// at all. Two runs at the same time are ordered by the stream: the second
// one's INSERT fails on the primary key, its whole transaction is rolled
// back, and it finds the version recorded and reports "already applied".

// defaultMigrationsTable is the tracking table's default name.
const defaultMigrationsTable = "_migrations"

// migrationFileRE is a migration file's name: a version, "_", a name.
var migrationFileRE = regexp.MustCompile(`^([0-9]+)_(.+)\.sql$`)

// identRE is a table name nqctl accepts for the tracking table.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// migration is one migration file.
type migration struct {
	version int64
	name    string // the file name without the directory: 0001_init.sql
	path    string
}

// appliedMigration is a row of the tracking table.
type appliedMigration struct {
	name      string
	appliedAt string
}

// migrateOptions are the flags of migrate.
type migrateOptions struct {
	dir    string
	table  string
	status bool
}

// migrateCommand is "nqctl migrate".
type migrateCommand struct{ env *env }

// Run applies the pending migrations of DIR, or lists them with --status.
func (c *migrateCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	fs := e.flagSet("migrate", "DIR", `Applies the migrations in DIR that the database has not applied yet, in
version order: files named NNNN_name.sql (NNNN a version number). Each one
is sent as one request with transaction: true that also records it in the
tracking table (--table, default _migrations: version INTEGER PRIMARY KEY,
name, applied_at), so a migration commits on every node together with its
record, or not at all. Two runs at the same time are safe: the stream
orders them, the second one's record fails on the primary key, its
transaction is rolled back, and it reports the migration as already
applied. It stops at the first migration that fails (exit 1). --status
lists every migration, applied or pending, and changes nothing.`)
	e.opts.conn.register(fs)
	e.opts.registerOutput(fs)
	var o migrateOptions
	fs.BoolVar(&o.status, "status", false, "list applied and pending migrations; apply nothing")
	fs.StringVar(&o.table, "table", defaultMigrationsTable, "the tracking table")
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		fs.Usage()
		return errUsagePrinted
	}
	o.dir = rest[0]
	if !identRE.MatchString(o.table) {
		return usageErrorf("--table %q: give a table name of letters, digits and _", o.table)
	}
	if lower := strings.ToLower(o.table); strings.HasPrefix(lower, "_nqlite_") || strings.HasPrefix(lower, "sqlite_") {
		return usageErrorf("--table %q: names starting with _nqlite_ or sqlite_ are reserved", o.table)
	}
	migs, err := readMigrations(o.dir)
	if err != nil {
		return err
	}
	mode, err := e.opts.outputMode(modeColumn)
	if err != nil {
		return err
	}
	return e.withSession(mode, func(s *session, out *bufio.Writer) error {
		if o.status {
			return migrateStatus(ctx, s, o.table, migs)
		}
		return migrate(ctx, s, out, o.table, migs)
	})
}

// readMigrations lists the migration files of dir in version order. A
// .sql file with another name, or two files of one version, is a usage
// error: nothing is skipped silently.
func readMigrations(dir string) ([]migration, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, usageErrorf("migrate: %v", err)
	}
	var migs []migration
	seen := map[int64]string{}
	for _, ent := range entries {
		name := ent.Name()
		if ent.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		m := migrationFileRE.FindStringSubmatch(name)
		if m == nil {
			return nil, usageErrorf("migrate: %s: name migration files NNNN_name.sql (a version number, _, a name)", filepath.Join(dir, name))
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return nil, usageErrorf("migrate: %s: version %s is too large", filepath.Join(dir, name), m[1])
		}
		if other, dup := seen[v]; dup {
			return nil, usageErrorf("migrate: %s and %s have the same version %d", other, name, v)
		}
		seen[v] = name
		migs = append(migs, migration{version: v, name: name, path: filepath.Join(dir, name)})
	}
	if len(migs) == 0 {
		return nil, usageErrorf("migrate: %s holds no migration files (NNNN_name.sql)", dir)
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	return migs, nil
}

// appliedMigrations reads the tracking table (none when it does not
// exist).
func appliedMigrations(ctx context.Context, s *session, table string) (map[int64]appliedMigration, error) {
	resp, err := s.query(ctx, api.Statement{SQL: "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?", Params: []any{table}})
	if err != nil {
		return nil, err
	}
	applied := map[int64]appliedMigration{}
	if n, _ := resp.Results[0].Values[0][0].(int64); n == 0 {
		return applied, nil
	}
	resp, err = s.query(ctx, api.Statement{SQL: "SELECT version, name, applied_at FROM " + table + " ORDER BY version"})
	if err != nil {
		return nil, err
	}
	for _, row := range resp.Results[0].Values {
		v, ok := row[0].(int64)
		if !ok {
			return nil, failedf("migrate: table %s holds version %v, not an integer", table, row[0])
		}
		name, _ := row[1].(string)
		at, _ := row[2].(string)
		applied[v] = appliedMigration{name: name, appliedAt: at}
	}
	return applied, nil
}

// migrateStatus prints every migration: version, name, state (applied,
// pending, or applied with its file missing) and when it was applied.
func migrateStatus(ctx context.Context, s *session, table string, migs []migration) error {
	applied, err := appliedMigrations(ctx, s, table)
	if err != nil {
		return wrapErr("migrate --status", err)
	}
	res := &api.Result{Columns: []string{"version", "name", "state", "applied_at"}}
	inDir := map[int64]bool{}
	for _, m := range migs {
		inDir[m.version] = true
		if a, ok := applied[m.version]; ok {
			res.Values = append(res.Values, []any{m.version, m.name, "applied", a.appliedAt})
		} else {
			res.Values = append(res.Values, []any{m.version, m.name, "pending", nil})
		}
	}
	for v, a := range applied {
		if !inDir[v] {
			res.Values = append(res.Values, []any{v, a.name, "applied, file missing", a.appliedAt})
		}
	}
	sort.SliceStable(res.Values, func(i, j int) bool { return res.Values[i][0].(int64) < res.Values[j][0].(int64) })
	s.p.result(res)
	return nil
}

// migrate applies the pending migrations in order, printing one line for
// each, and stops at the first that fails.
func migrate(ctx context.Context, s *session, out io.Writer, table string, migs []migration) error {
	applied, err := appliedMigrations(ctx, s, table)
	if err != nil {
		return wrapErr("migrate", err)
	}
	var done, already int
	for _, m := range migs {
		if _, ok := applied[m.version]; ok {
			continue
		}
		outcome, err := applyMigration(ctx, s, table, m)
		if err != nil {
			fmt.Fprintf(out, "%d applied, %d already applied; stopped at %s\n", done, already, m.name)
			return err
		}
		if outcome.already {
			already++
			fmt.Fprintf(out, "%s: already applied (by another run)\n", m.name)
		} else {
			done++
			fmt.Fprintf(out, "%s: applied (entry %d)\n", m.name, outcome.seq)
		}
	}
	if done == 0 && already == 0 {
		fmt.Fprintf(out, "up to date: %d migrations applied\n", len(migs))
		return nil
	}
	fmt.Fprintf(out, "%d applied, %d already applied\n", done, already)
	return nil
}

// migrationOutcome is how applyMigration ended.
type migrationOutcome struct {
	seq     uint64 // the stream entry of the migration
	already bool   // another run had recorded it: nothing was applied
}

// applyMigration sends migration m as one transaction with its record in
// table. When the transaction fails, it reads the record: if the version
// is there, another run applied it first (the record's primary key made
// this transaction fail and roll back), and that is not an error.
func applyMigration(ctx context.Context, s *session, table string, m migration) (migrationOutcome, error) {
	f, err := os.Open(m.path)
	if err != nil {
		return migrationOutcome{}, failedf("migrate: %v", err)
	}
	text, err := readScript(f, m.path)
	f.Close()
	if err != nil {
		return migrationOutcome{}, err
	}
	body := splitStmts(text, 1)
	const head = 2 // the CREATE TABLE and the INSERT before the file's statements
	stmts := []api.Statement{
		{SQL: "CREATE TABLE IF NOT EXISTS " + table + "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"},
		{SQL: "INSERT INTO " + table + "(version, name, applied_at) VALUES(?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now'))", Params: []any{m.version, m.name}},
	}
	for _, st := range body {
		stmts = append(stmts, api.Statement{SQL: st.sql})
	}
	_, resp, _, err := s.do(ctx, s.request(stmts, reqOptions{transaction: true}))
	if err != nil {
		msg := withKind(err, requestError(err, chunk{stmts: make([]string, len(stmts))}, 0, false))
		if isConnError(err) {
			return migrationOutcome{}, connErrorf("migrate: %s: %s", m.name, msg)
		}
		return migrationOutcome{}, failedf("migrate: %s: %s", m.name, msg)
	}
	failed := -1
	for i, r := range resp.Results {
		if r.Error != "" {
			failed = i
			break
		}
	}
	if failed < 0 {
		if len(resp.Results) != len(stmts) {
			return migrationOutcome{}, failedf("migrate: %s: %d results for %d statements", m.name, len(resp.Results), len(stmts))
		}
		return migrationOutcome{seq: resp.Seq}, nil
	}
	// The transaction was rolled back. Recorded meanwhile by another run?
	// (The session reads after this response's sequence.)
	check, err := s.query(ctx, api.Statement{SQL: "SELECT count(*) FROM " + table + " WHERE version = ?", Params: []any{m.version}})
	if err == nil {
		if n, _ := check.Results[0].Values[0][0].(int64); n > 0 {
			return migrationOutcome{seq: resp.Seq, already: true}, nil
		}
	}
	msg := resp.Results[failed].Error
	where := m.path
	if failed >= head {
		st := body[failed-head]
		if st.line > 0 {
			where += ":" + strconv.Itoa(st.line)
		}
		msg = fmt.Sprintf("statement %d (%s): %s", failed-head+1, snippet(st.sql), msg)
	} else {
		msg = fmt.Sprintf("recording it in %s: %s", table, msg)
	}
	return migrationOutcome{}, &exitError{code: exitFailed, msg: fmt.Sprintf("migrate: %s: %s; the migration was rolled back: nothing of it was applied", where, msg)}
}
