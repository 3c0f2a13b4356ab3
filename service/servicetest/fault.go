package servicetest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// ShutdownServer shuts ns down (a server started by this package) and
// returns a function that starts it again with the same options, port and
// store, as a restart of the same server.
func ShutdownServer(tb testing.TB, ns *server.Server) (restart func() *server.Server) {
	tb.Helper()
	o, ok := serverOpts.Load(ns)
	if !ok {
		tb.Fatal("ShutdownServer: server not started by servicetest")
	}
	opts := o.(*server.Options).Clone() // holds the port actually bound
	ns.Shutdown()
	ns.WaitForShutdown()
	return func() *server.Server {
		tb.Helper()
		return startServer(tb, opts)
	}
}
