package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"
	"github.com/nqlite/nqlite/service/api"
)

// natsCLI returns the path of the real nats CLI (github.com/nats-io/natscli):
// $NQLITE_NATS_CLI, else `nats` on PATH. The tests skip without it.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("NQLITE_NATS_CLI"); p != "" {
		return p
	}
	p, err := exec.LookPath("nats")
	if err != nil {
		t.Skip("the nats CLI is not installed (go install github.com/nats-io/natscli/nats@$(cat testdata/natscli.version), the version .ci/run installs; or set NQLITE_NATS_CLI)")
	}
	return p
}

// natsRun runs the nats CLI against url with args and returns its stdout
// and stderr; it fails the test when the CLI exits non-zero.
func natsRun(t *testing.T, bin, url string, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--server", url, "--timeout", "30s"}, args...)...)
	// No user's nats contexts or NATS_* settings: only the flags above.
	cmd.Env = []string{"XDG_CONFIG_HOME=" + t.TempDir()}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("nats %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// readme returns the text of the repository's README.md.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readmeNATSReqs returns the payloads of the `nats req nqlite.query.main`
// lines of README.md from its start to the section "### Responses" (the
// quick start and the three request forms), in order, with the shell's
// quoting removed.
func readmeNATSReqs(t *testing.T) []string {
	t.Helper()
	head, _, ok := strings.Cut(readme(t), "\n### Responses")
	if !ok {
		t.Fatal(`README.md has no "### Responses" section`)
	}
	line := regexp.MustCompile(`(?m)^\s+nats req nqlite\.query\.main ('[^']*'|"[^"]*")\s*$`)
	var out []string
	for _, m := range line.FindAllStringSubmatch(head, -1) {
		out = append(out, m[1][1:len(m[1])-1])
	}
	return out
}

// TestNATSCLI_README runs the README's own `nats req` lines with the real
// nats CLI against a running nqlite (the README's first command), checks
// the answer the README shows, and reads the node with `nats micro ls`,
// `info` and `stats`, which parse nqlite's own implementation of the
// service protocol. A request error still exits 0 (the nats CLI prints
// the error headers on stderr): scripts check the body or the headers.
func TestNATSCLI_README(t *testing.T) {
	bin := natsCLI(t)
	addr := freeAddr(t)
	startNQLite(t, "--data-dir", t.TempDir(), "--nats-listen", addr, "--node-id", "cli")
	url := "nats://" + addr
	serving(t, url) // one request: SELECT 1

	reqs := readmeNATSReqs(t)
	if len(reqs) < 6 {
		t.Fatalf("README.md: %d `nats req` lines before Responses, want the quick start's 3 and the 3 request forms: %q", len(reqs), reqs)
	}
	for _, payload := range reqs {
		stdout, stderr := natsRun(t, bin, url, "req", "nqlite.query.main", payload)
		if strings.Contains(stderr, micro.ErrorCodeHeader) {
			t.Fatalf("nats req %q: request error\nstdout: %s\nstderr: %s", payload, stdout, stderr)
		}
		var resp api.Response
		if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &resp); err != nil {
			t.Fatalf("nats req %q: body %q: %v", payload, stdout, err)
		}
		for i, r := range resp.Results {
			if r.Error != "" {
				t.Fatalf("nats req %q: statement %d: %s", payload, i+1, r.Error)
			}
		}
		if payload == "SELECT * FROM foo" {
			// The README shows {"results":[{"rows":[{"id":1,"name":"fiona"}]}],...}.
			got, _, _ := strings.Cut(strings.TrimSpace(stdout), `,"seq"`)
			if want := `{"results":[{"rows":[{"id":1,"name":"fiona"}]}]`; got != want {
				t.Errorf("nats req %q: %s, want the README's %s...", payload, stdout, want)
			}
		}
	}

	// The nats CLI expands Go templates in a body (README): --no-templates
	// sends SQL holding {{ as it is.
	for _, c := range []struct{ flag, want string }{{"--templates", `"x":"1"`}, {"--no-templates", `"x":"{{Count}}"`}} {
		if out, _ := natsRun(t, bin, url, "req", c.flag, "nqlite.query.main", "SELECT '{{Count}}' AS x"); !strings.Contains(out, c.want) {
			t.Errorf("nats req %s: %s, want %s", c.flag, out, c.want)
		}
	}

	// An error: exit status 0, the headers on stderr, the error body on stdout.
	stdout, stderr := natsRun(t, bin, url, "req", "nqlite.query.main", "ATTACH 'x.db' AS x")
	if !strings.Contains(stderr, micro.ErrorCodeHeader+": 403") || !strings.Contains(stderr, api.ErrorKindHeader+": forbidden") {
		t.Errorf("nats req ATTACH: stderr %q, want the 403 and forbidden headers", stderr)
	}
	if e := api.DecodeError([]byte(strings.TrimSpace(stdout)), api.CodeForbidden, ""); e.Kind != api.KindForbidden || e.Node != "cli" || !strings.Contains(e.Message, "ATTACH") {
		t.Errorf("nats req ATTACH: body %q: %+v", stdout, e)
	}

	stdout, _ = natsRun(t, bin, url, "micro", "ls", "--json")
	var infos []micro.Info
	if err := json.Unmarshal([]byte(stdout), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("nats micro ls: %q (%v), want one service", stdout, err)
	}
	if in := infos[0]; in.Name != "nqlite" || in.Type != micro.InfoResponseType || in.Metadata["node"] != "cli" || len(in.Endpoints) != 5 {
		t.Errorf("nats micro ls: %+v, want nqlite, node cli, 5 endpoints", in)
	}
	stdout, _ = natsRun(t, bin, url, "micro", "info", "nqlite", "--json")
	var info struct{ Info micro.Info } // and "stats"
	if err := json.Unmarshal([]byte(stdout), &info); err != nil || info.Info.ID != infos[0].ID || len(info.Info.Endpoints) != 5 {
		t.Fatalf("nats micro info: %q (%v)", stdout, err)
	}
	stdout, _ = natsRun(t, bin, url, "micro", "stats", "nqlite", "--json")
	var stats []micro.Stats
	if err := json.Unmarshal([]byte(stdout), &stats); err != nil || len(stats) != 1 {
		t.Fatalf("nats micro stats: %q (%v)", stdout, err)
	}
	var query *micro.EndpointStats
	for _, e := range stats[0].Endpoints {
		if e.Subject == "nqlite.query.main" {
			query = e
		}
	}
	// serving's SELECT 1, the README's lines, the two template reads, the ATTACH.
	if query == nil {
		t.Fatalf("nats micro stats: no nqlite.query.main endpoint: %s", stdout)
	}
	if want := 1 + len(reqs) + 2 + 1; query.NumRequests != want || query.NumErrors != 1 || !strings.HasPrefix(query.LastError, "403:") {
		t.Errorf("nats micro stats: query endpoint: %d requests, %d errors, last %q; want %d requests, 1 error (the 403)", query.NumRequests, query.NumErrors, query.LastError, want)
	}
	var data struct {
		Applied uint64 `json:"applied_seq"`
		State   string `json:"state"`
	}
	if err := json.Unmarshal(query.Data, &data); err != nil || data.State != "serving" || data.Applied == 0 {
		t.Errorf("nats micro stats: endpoint data %s (%v)", query.Data, err)
	}
}

// TestNATSCLI_ChangeFeed reads the change feed with the README's nats CLI
// lines: a durable pull consumer made by `nats consumer add` and read by
// `nats consumer next` gets every row change of a write, in order, as the
// README's JSON events.
func TestNATSCLI_ChangeFeed(t *testing.T) {
	bin := natsCLI(t)
	add := []string{"consumer", "add", "NQLITE_CHANGES_main", "orders", "--pull", "--filter", "nqlite.changes.main.orders", "--deliver", "all", "--ack", "explicit", "--defaults"}
	if line := "nats consumer add NQLITE_CHANGES_main orders --pull --filter 'nqlite.changes.main.orders' --deliver all --ack explicit --defaults"; !strings.Contains(readme(t), line) {
		t.Fatalf("README.md no longer shows %q: keep this test in step", line)
	}
	addr := freeAddr(t)
	startNQLite(t, "--data-dir", t.TempDir(), "--nats-listen", addr, "--changes")
	url := "nats://" + addr
	nc := serving(t, url)
	query(t, nc, "CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT); CREATE TABLE other(x)")
	write := query(t, nc, "INSERT INTO orders(item) VALUES ('a'), ('b'); INSERT INTO other VALUES (1); UPDATE orders SET item = 'c' WHERE id = 1; DELETE FROM orders WHERE id = 2")
	var resp api.Response
	if err := json.Unmarshal([]byte(write), &resp); err != nil {
		t.Fatal(err)
	}

	natsRun(t, bin, url, add...)
	stdout, _ := natsRun(t, bin, url, "consumer", "next", "NQLITE_CHANGES_main", "orders", "--count", "4", "--raw")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		var ev struct {
			Seq   uint64 `json:"seq"`
			Index int    `json:"index"`
			Table string `json:"table"`
			Op    string `json:"op"`
			RowID int64  `json:"rowid"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("nats consumer next: %q: %v", line, err)
		}
		if ev.Seq != resp.Seq || ev.Table != "orders" {
			t.Errorf("event %s: want seq %d, table orders", line, resp.Seq)
		}
		got = append(got, ev.Op+" "+strconv.FormatInt(ev.RowID, 10)+" @"+strconv.Itoa(ev.Index))
	}
	// index counts every change of the entry, other's insert included.
	if want := []string{"insert 1 @0", "insert 2 @1", "update 1 @3", "delete 2 @4"}; strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("nats consumer next: %q, want %q", got, want)
	}
}
