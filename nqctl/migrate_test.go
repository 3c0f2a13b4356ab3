package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/servicetest"
)

// writeMigrations writes files (name -> SQL) into a new directory.
func writeMigrations(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, sql := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sql), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var testMigrations = map[string]string{
	"0001_users.sql": "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);\nINSERT INTO users(name) VALUES('root');\n",
	"0002_email.sql": "ALTER TABLE users ADD COLUMN email TEXT;\n",
	"0010_log.sql":   "BEGIN;\nCREATE TABLE log(msg TEXT);\nINSERT INTO log VALUES('from 10');\nCOMMIT;\n",
	"README.md":      "not a migration",
}

func TestMigrate(t *testing.T) {
	url := startNode(t)
	dir := writeMigrations(t, testMigrations)

	o := mustRun(t, nil, "migrate", "--server", url, "--status", "--mode", "csv", dir)
	if want := "version,name,state,applied_at\n1,0001_users.sql,pending,\n2,0002_email.sql,pending,\n10,0010_log.sql,pending,\n"; o.stdout != want {
		t.Errorf("status before: got\n%s\nwant\n%s", o.stdout, want)
	}
	o = mustRun(t, nil, "migrate", "--server", url, dir)
	for _, want := range []string{"0001_users.sql: applied (entry ", "0002_email.sql: applied", "0010_log.sql: applied", "3 applied, 0 already applied\n"} {
		if !strings.Contains(o.stdout, want) {
			t.Errorf("migrate: %q lacks %q", o.stdout, want)
		}
	}
	// Applied once: a second run changes nothing.
	o = mustRun(t, nil, "migrate", "--server", url, dir)
	if o.stdout != "up to date: 3 migrations applied\n" {
		t.Errorf("second run: %q", o.stdout)
	}
	if v := scalar(t, url, "SELECT count(*) || ',' || group_concat(name) AS v FROM users"); v != "1,root" {
		t.Errorf("users: %v", v)
	}
	if v := scalar(t, url, "SELECT group_concat(version || ':' || name) AS v FROM _migrations"); v != "1:0001_users.sql,2:0002_email.sql,10:0010_log.sql" {
		t.Errorf("tracking table: %v", v)
	}
	o = mustRun(t, nil, "migrate", "--server", url, "--status", "--mode", "list", "--headers=false", dir)
	if lines := strings.Split(strings.TrimSpace(o.stdout), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[2], "10|0010_log.sql|applied|20") {
		t.Errorf("status after: %q", o.stdout)
	}

	// A new migration that fails: rolled back whole, record included; exit 1.
	os.WriteFile(filepath.Join(dir, "0011_bad.sql"), []byte("INSERT INTO log VALUES('11');\n\nINSERT INTO nope VALUES(1);\n"), 0o644)
	o = nqctl(t, nil, "migrate", "--server", url, dir)
	if o.code != exitFailed || !strings.Contains(o.stderr, "0011_bad.sql:3: statement 2 (INSERT INTO nope VALUES(1)): no such table: nope") || !strings.Contains(o.stderr, "rolled back") {
		t.Errorf("failed migration: exit %d, stderr %q", o.code, o.stderr)
	}
	if v := scalar(t, url, "SELECT count(*) AS v FROM log"); v != int64(1) {
		t.Errorf("the failed migration's first statement stayed: %v rows in log", v)
	}
	o = mustRun(t, nil, "migrate", "--server", url, "--status", "--mode", "csv", dir)
	if !strings.Contains(o.stdout, "11,0011_bad.sql,pending,") {
		t.Errorf("status after a failure: %q", o.stdout)
	}

	// A recorded version whose file is gone.
	os.Remove(filepath.Join(dir, "0011_bad.sql"))
	os.Remove(filepath.Join(dir, "0002_email.sql"))
	o = mustRun(t, nil, "migrate", "--server", url, "--status", "--mode", "csv", dir)
	if !strings.Contains(o.stdout, "2,0002_email.sql,\"applied, file missing\",") {
		t.Errorf("status with a file missing: %q", o.stdout)
	}
}

// TestMigrate_AlreadyApplied sends a migration that another run recorded
// after this one read the tracking table: the record's primary key fails
// the transaction, nothing is applied twice, and it is reported as
// already applied, not as an error.
func TestMigrate_AlreadyApplied(t *testing.T) {
	url := startNode(t)
	dir := writeMigrations(t, map[string]string{"0001_once.sql": "CREATE TABLE IF NOT EXISTS c(n);\nINSERT INTO c VALUES(1);\n"})
	mustRun(t, nil, "migrate", "--server", url, dir)

	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	e.opts.conn = defaultConnOptions()
	e.opts.conn.server = url
	var got migrationOutcome
	err := e.withSession(modeColumn, func(s *session, _ *bufio.Writer) error {
		var err error
		got, err = applyMigration(context.Background(), s, defaultMigrationsTable, migration{version: 1, name: "0001_once.sql", path: filepath.Join(dir, "0001_once.sql")})
		return err
	})
	if err != nil || !got.already {
		t.Fatalf("second apply: %+v %v, want already applied", got, err)
	}
	if v := scalar(t, url, "SELECT count(*) AS v FROM c"); v != int64(1) {
		t.Errorf("the migration ran twice: %v rows", v)
	}
}

// TestMigrate_Concurrent runs migrate from two processes' worth of
// sessions at once, on two nodes: every migration is applied exactly once.
func TestMigrate_Concurrent(t *testing.T) {
	ns := servicetest.StartServer(t)
	servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1"})
	servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n2"})
	url := ns.ClientURL()
	files := map[string]string{}
	for i := 1; i <= 8; i++ {
		files[strings.Replace("000N_step.sql", "N", string(rune('0'+i)), 1)] = "CREATE TABLE IF NOT EXISTS steps(n);\nINSERT INTO steps VALUES(" + string(rune('0'+i)) + ");\n"
	}
	dir := writeMigrations(t, files)
	var wg sync.WaitGroup
	outs := make([]outcome, 3)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var out, errOut strings.Builder
			code := run(ctx, []string{"migrate", "--server", url, dir}, strings.NewReader(""), &out, &errOut)
			outs[i] = outcome{code: code, stdout: out.String(), stderr: errOut.String()}
		}()
	}
	wg.Wait()
	applied := 0
	for _, o := range outs {
		if o.code != exitOK {
			t.Errorf("a run failed: exit %d\n%s%s", o.code, o.stdout, o.stderr)
		}
		applied += strings.Count(o.stdout, ": applied (entry")
	}
	if applied != 8 {
		t.Errorf("%d migrations applied in all, want 8:\n%s\n%s\n%s", applied, outs[0].stdout, outs[1].stdout, outs[2].stdout)
	}
	if v := scalar(t, url, "SELECT count(*) || ',' || count(DISTINCT n) AS v FROM steps"); v != "8,8" {
		t.Errorf("steps: %v, want each once", v)
	}
}

func TestMigrate_Usage(t *testing.T) {
	url := startNode(t)
	empty := t.TempDir()
	bad := writeMigrations(t, map[string]string{"init.sql": "SELECT 1"})
	dup := writeMigrations(t, map[string]string{"1_a.sql": "SELECT 1", "001_b.sql": "SELECT 1"})
	ok := writeMigrations(t, map[string]string{"1_a.sql": "SELECT 1"})
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--server", url}, "Usage: nqctl migrate"},
		{[]string{"migrate", "--server", url, filepath.Join(empty, "none")}, "no such file"},
		{[]string{"migrate", "--server", url, empty}, "holds no migration files"},
		{[]string{"migrate", "--server", url, bad}, "name migration files NNNN_name.sql"},
		{[]string{"migrate", "--server", url, dup}, "the same version 1"},
		{[]string{"migrate", "--server", url, "--table", "_nqlite_meta", ok}, "reserved"},
		{[]string{"migrate", "--server", url, "--table", "a b", ok}, "--table"},
	} {
		o := nqctl(t, nil, tt.args...)
		if o.code != exitUsage || !strings.Contains(o.stderr, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tt.args, o.code, o.stderr, tt.want)
		}
	}
	if o := nqctl(t, nil, "migrate", "--help"); o.code != exitOK || !strings.Contains(o.stderr, "--status") {
		t.Errorf("--help: exit %d, %q", o.code, o.stderr)
	}
	// No node for the database: exit 3.
	if o := nqctl(t, nil, "migrate", "--server", url, "--db", "other", ok); o.code != exitConn {
		t.Errorf("no node: exit %d, %q", o.code, o.stderr)
	}
}
