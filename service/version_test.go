package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/servicetest"
)

// TestNode_IncompatibleEntry: an entry of a format version this node does
// not know is not skipped as garbage: the node applies everything before
// it, stops applying the database, reports state "incompatible" and
// answers 503 saying to upgrade.
func TestNode_IncompatibleEntry(t *testing.T) {
	ns, node, c := single(t)
	ok(t, do(t, c, "CREATE TABLE t(x); INSERT INTO t VALUES(1)"))
	js, err := jetstream.New(servicetest.Connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	// "nq", a version from the future, and whatever it may hold.
	ack, err := js.Publish(context.Background(), service.EntrySubject("main"), []byte("nq\x63future"))
	if err != nil {
		t.Fatal(err)
	}
	servicetest.WaitFor(t, 10*time.Second, "state incompatible", func() bool { return node.Stats("main").State == "incompatible" })
	if got := node.DB("main").Applied(); got != ack.Sequence-1 {
		t.Fatalf("applied %d, want %d: everything before the entry, not the entry", got, ack.Sequence-1)
	}
	if got := node.DB("main").Skipped(); got != 0 {
		t.Fatalf("skipped %d, want 0: an entry of a newer format is not garbage", got)
	}
	e := doErr(t, c, "SELECT * FROM t")
	if e.Code != api.CodeUnavailable || !strings.Contains(e.Message, "upgrade") {
		t.Fatalf("got %d %q, want 503 saying to upgrade", e.Code, e.Message)
	}
}
