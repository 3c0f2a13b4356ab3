package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBackupRestore(t *testing.T) {
	url := startNode(t)
	dir := t.TempDir()
	mustRun(t, nil, "--server", url, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES('a'), ('b'), ('c')")
	file := filepath.Join(dir, "backup.db")
	o := mustRun(t, nil, "backup", "--server", url, file)
	if !strings.Contains(o.stderr, "backup of main as of sequence 1:") {
		t.Fatalf("backup: %s", o.stderr)
	}
	data, err := os.ReadFile(file)
	if err != nil || !bytes.HasPrefix(data, []byte("SQLite format 3\x00")) {
		t.Fatalf("backup file: %v, %d bytes", err, len(data))
	}
	dump := mustRun(t, nil, "dump", "--server", url).stdout
	mustRun(t, nil, "--server", url, "DELETE FROM t; CREATE TABLE later(x)")
	o = mustRun(t, nil, "restore", "--server", url, file)
	if !strings.Contains(o.stderr, "restored main from "+file+" (SQLite file") {
		t.Fatalf("restore: %s", o.stderr)
	}
	if got := mustRun(t, nil, "--server", url, "--mode", "list", "--headers=false", "SELECT group_concat(v) FROM t").stdout; got != "a,b,c\n" {
		t.Fatalf("after restore: %q", got)
	}
	if o := nqctl(t, nil, "--server", url, "SELECT * FROM later"); o.code != exitFailed {
		t.Fatalf("a table created after the backup survived the restore")
	}
	// A SQL dump restores the same way.
	sqlFile := filepath.Join(dir, "dump.sql")
	os.WriteFile(sqlFile, []byte(dump), 0o644)
	mustRun(t, nil, "--server", url, "DROP TABLE t")
	o = mustRun(t, nil, "restore", "--server", url, sqlFile)
	if !strings.Contains(o.stderr, "(SQL dump") {
		t.Fatalf("restore dump: %s", o.stderr)
	}
	if got := mustRun(t, nil, "dump", "--server", url).stdout; got != dump {
		t.Fatalf("dump after restoring the dump:\n%s\nwant:\n%s", got, dump)
	}
}
