package main

import (
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/servicetest"
)

func TestWatch(t *testing.T) {
	ns := servicetest.StartServer(t)
	servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Changes: service.ChangesConfig{Enabled: true}})
	url := ns.ClientURL()
	mustRun(t, nil, "--server", url, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB); CREATE TABLE u(x)")
	mustRun(t, nil, "--server", url, "INSERT INTO t(name, score, data) VALUES('alice', 1.5, x'00ff'); INSERT INTO u VALUES(1)")
	mustRun(t, nil, "--server", url, "UPDATE t SET score = 2.0 WHERE id = 1; DELETE FROM t")

	o := mustRun(t, nil, "watch", "--server", url, "--all", "--count", "3", "t")
	lines := strings.Split(strings.TrimRight(o.stdout, "\n"), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^ +1  2\.0  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  insert  t  rowid=1  id=1 name=alice score=1\.5 data=x'00ff'$`),
		regexp.MustCompile(`^ +3  3\.0  \S+  update  t  rowid=1  score: 1\.5 → 2\.0$`),
		regexp.MustCompile(`^ +4  3\.1  \S+  delete  t  rowid=1  id=1 name=alice score=2\.0 data=x'00ff'$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("watch t:\n%s", o.stdout)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d: %q, want %s", i+1, lines[i], re)
		}
	}
	// JSON, from the write at seq 3 on: the events as the feed holds them.
	o = mustRun(t, nil, "watch", "--server", url, "--since", "3", "--count", "2", "--format", "json")
	lines = strings.Split(strings.TrimSpace(o.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("watch --since 3:\n%s", o.stdout)
	}
	ch, err := api.DecodeChange([]byte(lines[0]))
	if err != nil || ch.Seq != 3 || ch.Op != api.OpUpdate || ch.New[2] != 2.0 || !strings.Contains(lines[0], `"score":2.0`) {
		t.Errorf("first event %s: %+v %v", lines[0], ch, err)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"watch", "--server", url, "--format", "csv"}, exitUsage, `--format "csv"`},
		{[]string{"watch", "--server", url, "--db", "nope", "--all"}, exitFailed, "no change feed"},
	} {
		o := nqctl(t, nil, c.args...)
		if o.code != c.code || !strings.Contains(o.stderr, c.msg) {
			t.Errorf("%q: exit %d %s, want %d and %q", c.args, o.code, o.stderr, c.code, c.msg)
		}
	}
}

// TestWatch_Live: without --since or --all, watch prints the changes of
// writes made after it started (from another connection, as from another
// terminal), as they arrive, and --count ends it.
func TestWatch_Live(t *testing.T) {
	ns := servicetest.StartServer(t)
	servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Changes: service.ChangesConfig{Enabled: true}})
	url := ns.ClientURL()
	mustRun(t, nil, "--server", url, "CREATE TABLE foo(id INTEGER PRIMARY KEY, name TEXT)")
	mustRun(t, nil, "--server", url, "INSERT INTO foo(name) VALUES('before')")
	done := make(chan outcome, 1)
	go func() { done <- nqctl(t, nil, "watch", "--server", url, "--count", "3") }()
	// Write until the watch, started at some moment in between, has
	// printed three events.
	var o outcome
	deadline := time.Now().Add(30 * time.Second)
	for i, ended := 0, false; !ended; i++ {
		if time.Now().After(deadline) {
			t.Fatal("watch printed nothing")
		}
		mustRun(t, nil, "--server", url, fmt.Sprintf("INSERT INTO foo(name) VALUES('w%d')", i))
		select {
		case o = <-done:
			ended = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	if o.code != exitOK {
		t.Fatalf("watch: exit %d\n%s", o.code, o.stderr)
	}
	lines := strings.Split(strings.TrimRight(o.stdout, "\n"), "\n")
	re := regexp.MustCompile(`^ +\d+  (\d+)\.0  \S+  insert  foo  rowid=(\d+)  id=(\d+) name=w(\d+)$`)
	prev := -1
	for _, l := range lines {
		m := re.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("watch printed %q (want the inserts made after it started)\n%s", l, o.stdout)
		}
		w, _ := strconv.Atoi(m[4])
		if prev >= 0 && w != prev+1 {
			t.Fatalf("w%d after w%d: a change missing or out of order\n%s", w, prev, o.stdout)
		}
		prev = w
	}
	if len(lines) != 3 {
		t.Fatalf("--count 3 printed %d lines\n%s", len(lines), o.stdout)
	}
}
