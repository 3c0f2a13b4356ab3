package servicetest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// ShutdownServer shuts ns down (a server started by this package) and
// returns a function that starts it again with the same options, port and
// store, as a restart of the same server. adjust, if given, changes the
// options of that restart (for example JetStream off: a server whose
// JetStream is unavailable); the restarted server can be shut down and
// restarted again the same way.
func ShutdownServer(tb testing.TB, ns *server.Server) (restart func(adjust ...func(*server.Options)) *server.Server) {
	tb.Helper()
	o, ok := serverOpts.Load(ns)
	if !ok {
		tb.Fatal("ShutdownServer: server not started by servicetest")
	}
	opts := o.(*server.Options).Clone() // holds the port actually bound
	ns.Shutdown()
	ns.WaitForShutdown()
	return func(adjust ...func(*server.Options)) *server.Server {
		tb.Helper()
		o := opts.Clone()
		for _, f := range adjust {
			f(o)
		}
		return startServer(tb, o)
	}
}
