package client_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
	"github.com/nqlite/nqlite/service/servicetest"
)

// cluster starts one nats-server and n nodes serving "main"; it returns a
// client connection.
func cluster(t *testing.T, n int) (*nats.Conn, []*servicetest.Node) {
	t.Helper()
	ns := servicetest.StartServer(t)
	var nodes []*servicetest.Node
	for i := 0; i < n; i++ {
		nodes = append(nodes, servicetest.StartNode(t, ns.ClientURL(), service.Config{NodeID: "n" + string(rune('1'+i))}))
	}
	return servicetest.Connect(t, ns.ClientURL()), nodes
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func stmt(sql string, params ...any) client.Request {
	return client.Request{Statements: []api.Statement{{SQL: sql, Params: params}}, Format: api.FormatValues}
}

func TestClient_QueryAndRead(t *testing.T) {
	nc, _ := cluster(t, 1)
	c := client.New(nc)
	resp, err := c.Query(ctx(t), "main", stmt("CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
	if err != nil || resp.Results[0].Error != "" {
		t.Fatalf("create: %v %+v", err, resp)
	}
	resp, err = c.Query(ctx(t), "main", stmt("INSERT INTO t(v) VALUES(?)", int64(9007199254740993)))
	if err != nil || resp.Results[0].Error != "" || resp.Seq == 0 {
		t.Fatalf("insert: %v %+v", err, resp)
	}
	seq := resp.Seq
	r := stmt("SELECT v FROM t")
	r.AfterSeq = seq
	resp, err = c.Read(ctx(t), "main", r)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Results[0].Values[0][0]; got != int64(9007199254740993) {
		t.Errorf("read: got %#v, want int64 9007199254740993", got)
	}
	// The read endpoint refuses a write with 403 and stores nothing.
	_, err = c.Read(ctx(t), "main", stmt("INSERT INTO t(v) VALUES(1)"))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeForbidden {
		t.Fatalf("write on the read endpoint: got %v, want a 403 *api.Error", err)
	}
	// Send returns the raw body too.
	body, resp, err := c.Send(ctx(t), "main", client.QueryEndpoint, []byte("SELECT count(*) AS n FROM t"), 0)
	if err != nil || !bytes.Contains(body, []byte(`"n":1`)) || resp.Results[0].Rows[0]["n"] != int64(1) {
		t.Errorf("send: %s %+v %v", body, resp, err)
	}
}

func TestClient_Errors(t *testing.T) {
	nc, _ := cluster(t, 1)
	c := client.New(nc)
	if _, err := c.Query(ctx(t), "other", stmt("SELECT 1")); !errors.Is(err, client.ErrNoNode) {
		t.Errorf("no node: got %v, want ErrNoNode", err)
	}
	big := strings.Repeat("x", int(nc.MaxPayload())+1)
	var pe *client.PayloadError
	if _, err := c.Query(ctx(t), "main", stmt("SELECT ?", big)); !errors.As(err, &pe) || pe.Max != nc.MaxPayload() {
		t.Errorf("too large: got %v, want *PayloadError", err)
	}
	var ae *api.Error
	if _, err := c.QueryString(ctx(t), "main", `{"statements": ["SELECT 1"], "nope": 1}`); !errors.As(err, &ae) || ae.Code != api.CodeBadRequest {
		t.Errorf("bad request: got %v, want a 400 *api.Error", err)
	}
	// A request nobody answers in time is a *NoReplyError.
	sub, err := nc.Subscribe(api.QuerySubject("silent"), func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var nr *client.NoReplyError
	if _, err := c.Query(short, "silent", stmt("SELECT 1")); !errors.As(err, &nr) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no reply: got %v, want *NoReplyError", err)
	}
	if _, err := c.Query(ctx(t), "bad name", stmt("SELECT 1")); err == nil {
		t.Error("invalid database name: no error")
	}
}

func TestClient_SnapshotDownloadLoad(t *testing.T) {
	nc, nodes := cluster(t, 2)
	c := client.New(nc)
	resp, err := c.QueryString(ctx(t), "main", "CREATE TABLE t(v); INSERT INTO t VALUES('before')")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.Snapshot(ctx(t), "main", api.SnapshotRequest{AfterSeq: resp.Seq})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Seq < resp.Seq || snap.Bucket != api.SnapshotBucket {
		t.Errorf("snapshot: got %+v, want seq >= %d", snap, resp.Seq)
	}
	var file bytes.Buffer
	n, err := c.Download(ctx(t), snap, &file)
	if err != nil || n != int64(snap.Size) || !bytes.HasPrefix(file.Bytes(), []byte("SQLite format 3\x00")) {
		t.Fatalf("download: %d bytes of %d, %v", n, snap.Size, err)
	}

	// Load a SQL dump: every node switches to it at one sequence.
	dump := "CREATE TABLE loaded(v TEXT); INSERT INTO loaded VALUES('dump');"
	reply, err := c.Load(ctx(t), "main", strings.NewReader(dump), client.LoadOptions{SQL: true, Description: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range nodes {
		servicetest.WaitFor(t, 10*time.Second, "node applies the load", func() bool { return node.DB("main").Applied() >= reply.Seq })
	}
	r := stmt("SELECT v FROM loaded")
	r.AfterSeq = reply.Seq
	resp, err = c.Query(ctx(t), "main", r)
	if err != nil || resp.Results[0].Error != "" || resp.Results[0].Values[0][0] != "dump" {
		t.Fatalf("after load: %+v %v", resp, err)
	}
	resp, _ = c.Query(ctx(t), "main", stmt("SELECT * FROM t"))
	if resp.Results[0].Error == "" {
		t.Errorf("table t survived the load: %+v", resp.Results[0])
	}
	// Load the SQLite file downloaded before: t is back.
	reply, err = c.Load(ctx(t), "main", &file, client.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r = stmt("SELECT v FROM t")
	r.AfterSeq = reply.Seq
	if resp, err = c.Query(ctx(t), "main", r); err != nil || resp.Results[0].Error != "" || resp.Results[0].Values[0][0] != "before" {
		t.Fatalf("after loading the snapshot: %+v %v", resp, err)
	}
	// A refused load is an *api.Error.
	var ae *api.Error
	if _, err := c.Snapshot(ctx(t), "main", api.SnapshotRequest{AfterSeq: 1 << 40, TimeoutMS: 50}); !errors.As(err, &ae) || ae.Code != api.CodeGatewayTimeout || !errors.Is(err, client.ErrNotReached) || ae.Node == "" {
		t.Errorf("snapshot after an unreachable sequence: got %#v, want a 504 not_reached *api.Error naming the node", err)
	}
}

func TestClient_Stats(t *testing.T) {
	nc, nodes := cluster(t, 2)
	c := client.New(nc)
	resp, err := c.QueryString(ctx(t), "main", "CREATE TABLE t(v)")
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range nodes {
		servicetest.WaitFor(t, 10*time.Second, "apply", func() bool { return node.DB("main").Applied() >= resp.Seq })
	}
	stats, err := c.Stats(ctx(t), client.StatsOptions{Wait: 5 * time.Second, Expect: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 2 {
		t.Fatalf("got %d rows, want 2: %+v", len(stats), stats)
	}
	for i, want := range []string{"n1", "n2"} {
		s := stats[i]
		if s.Node != want || s.DB != "main" || !s.HasData || s.Applied < resp.Seq || s.State != "serving" || s.Version != service.Version {
			t.Errorf("row %d: got %+v, want node %s serving main at >= %d", i, s, want, resp.Seq)
		}
	}
	if stats[0].Requests+stats[1].Requests < 1 {
		t.Errorf("requests: %d + %d, want the CREATE counted", stats[0].Requests, stats[1].Requests)
	}
	// A NATS server without nodes.
	empty := servicetest.Connect(t, servicetest.StartServer(t).ClientURL())
	if _, err := client.New(empty).Stats(ctx(t), client.StatsOptions{Wait: time.Second}); !errors.Is(err, client.ErrNoNode) {
		t.Errorf("no nodes: got %v, want ErrNoNode", err)
	}
}

func TestConnConfig_Resolve(t *testing.T) {
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("HOME", t.TempDir())
	dir := filepath.Join(cfg, "nats", "context")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "prod.json"), []byte(`{"url": "nats://prod:4222", "user": "app", "password": "pw", "creds": "~/x.creds", "inbox_prefix": "_I"}`), 0o600)
	os.WriteFile(filepath.Join(dir, "sel.json"), []byte(`{"url": "nats://selected:4222"}`), 0o600)
	os.WriteFile(filepath.Join(dir, "nsc.json"), []byte(`{"url": "nats://x:4222", "nsc": "nsc://op/acc/user"}`), 0o600)
	home, _ := os.UserHomeDir()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

	tests := []struct {
		name    string
		in      client.ConnConfig
		env     map[string]string
		want    client.ConnConfig
		wantErr string
	}{
		{name: "default", want: client.ConnConfig{Servers: nats.DefaultURL}},
		{name: "env", env: map[string]string{"NATS_URL": "nats://env:4222", "NATS_USER": "u"},
			want: client.ConnConfig{Servers: "nats://env:4222", User: "u"}},
		{name: "context", in: client.ConnConfig{Context: "prod", Password: "given"},
			want: client.ConnConfig{Servers: "nats://prod:4222", User: "app", Password: "given", Creds: filepath.Join(home, "x.creds"), InboxPrefix: "_I", Context: "prod"}},
		{name: "NATS_CONTEXT", env: map[string]string{"NATS_CONTEXT": "prod", "NATS_URL": "nats://env:4222"},
			want: client.ConnConfig{Servers: "nats://env:4222", User: "app", Password: "pw", Creds: filepath.Join(home, "x.creds"), InboxPrefix: "_I", Context: "prod"}},
		{name: "missing context", in: client.ConnConfig{Context: "none"}, wantErr: `nats context "none"`},
		{name: "bad name", in: client.ConnConfig{Context: "../x"}, wantErr: "not a valid context name"},
		{name: "nsc", in: client.ConnConfig{Context: "nsc"}, wantErr: "nsc lookups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in
			err := got.Resolve(env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	// The selected context is used only when no server is known.
	os.WriteFile(filepath.Join(cfg, "nats", "context.txt"), []byte("sel\n"), 0o644)
	var c client.ConnConfig
	if err := c.Resolve(nil); err != nil || c.Servers != "nats://selected:4222" || c.Context != "sel" {
		t.Errorf("selected context: %+v %v", c, err)
	}
	c = client.ConnConfig{Servers: "nats://given:4222"}
	if err := c.Resolve(nil); err != nil || c.Servers != "nats://given:4222" || c.Context != "" {
		t.Errorf("server given: %+v %v", c, err)
	}
}

// TestNoSQLite checks that the client and the driver link no SQLite: the
// rules keep SQLite out of everything but the node.
func TestNoSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".", "./nqsql").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "sqlite") || dep == "github.com/nqlite/nqlite/apply" || dep == "github.com/nqlite/nqlite/service" {
			t.Errorf("the client links %s", dep)
		}
	}
}
