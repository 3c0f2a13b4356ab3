// Command nqlite runs an nqlite node: a replicated SQLite database served
// over NATS request/reply, with every write ordered by a JetStream stream.
//
// With no --nats-url it starts an embedded nats-server with JetStream
// (state under --data-dir, listening on --nats-listen), so
//
//	go run .
//	nats req nqlite.query.main 'SELECT 1'
//
// works on a fresh machine. Every flag can also be set as an environment
// variable: --nats-url is NQLITE_NATS_URL, --db is NQLITE_DB (comma
// separated), and so on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/peterbourgon/ff/v3"

	"github.com/nqlite/nqlite/service"
	"github.com/nqlite/nqlite/service/embedded"
)

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

type config struct {
	dataDir    string
	nodeID     string
	dbs        listFlag
	replicas   int
	readers    int
	natsURL    string
	natsListen string
	creds      string
	nkey       string
	token      string
	user       string
	password   string
	tlsCA      string
	tlsCert    string
	tlsKey     string
	jsDomain   string
	jsSync     string
	leafURLs   listFlag
	leafCreds  string
	logLevel   string
	snapshot   service.SnapshotConfig
	maxSteps   uint64
	maxBytes   uint64
	changes    service.ChangesConfig
	checkpoint service.CheckpointConfig
	tables     listFlag
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nqlite:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	host, _ := os.Hostname()
	var c config
	fs := flag.NewFlagSet("nqlite", flag.ContinueOnError)
	fs.StringVar(&c.dataDir, "data-dir", "./nqlite-data", "directory for the SQLite files (and the embedded server's JetStream store)")
	fs.StringVar(&c.nodeID, "node-id", host, "this node's id, unique in the cluster")
	fs.Var(&c.dbs, "db", "database to serve (repeatable, or comma separated; default main)")
	fs.IntVar(&c.replicas, "replicas", 1, "JetStream replicas of each database's stream")
	fs.IntVar(&c.readers, "readers", 4, "read-only SQLite connections per database")
	fs.StringVar(&c.natsURL, "nats-url", "", "NATS server(s) to connect to; empty starts an embedded nats-server with JetStream")
	fs.StringVar(&c.natsListen, "nats-listen", "127.0.0.1:4222", "client address of the embedded nats-server ('' listens nowhere)")
	fs.StringVar(&c.creds, "creds", "", "NATS user credentials file")
	fs.StringVar(&c.nkey, "nkey", "", "NATS nkey seed file")
	fs.StringVar(&c.token, "token", "", "NATS authentication token")
	fs.StringVar(&c.user, "user", "", "NATS user name")
	fs.StringVar(&c.password, "password", "", "NATS password")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "CA certificate to verify the NATS server")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "client certificate for NATS TLS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "client key for NATS TLS")
	fs.StringVar(&c.jsSync, "js-sync", "always", "when the embedded nats-server fsyncs stored messages: always (an acknowledged write survives a power cut) or an interval such as 2m (JetStream's default: faster, a power cut may lose the last interval's writes)")
	fs.StringVar(&c.jsDomain, "js-domain", "", "JetStream domain (for leaf-node deployments)")
	fs.Var(&c.leafURLs, "leaf-remote", "hub URL to join as a leaf node (repeatable, or comma separated): the embedded nats-server has no JetStream of its own and the node uses the hub's, in --js-domain")
	fs.StringVar(&c.leafCreds, "leaf-creds", "", "credentials file for the leaf-node connection to the hub")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Uint64Var(&c.snapshot.Threshold, "snapshot-threshold", 8192, "snapshot a database after this many entries beyond the latest stored snapshot")
	fs.DurationVar(&c.snapshot.Interval, "snapshot-interval", time.Minute, "how often to check the snapshot threshold")
	fs.Uint64Var(&c.snapshot.Retain, "snapshot-retain", 0, "entries kept in the stream below a stored snapshot (0: the threshold)")
	fs.BoolVar(&c.snapshot.Disabled, "no-snapshots", false, "no snapshots, restores or purges (the stream grows forever)")
	fs.Uint64Var(&c.maxSteps, "max-entry-steps", service.DefaultMaxEntrySteps, fmt.Sprintf("execution budget of each write this node accepts, in SQLite VM steps (1 to %d); every node applies the write with it", uint64(service.MaxEntrySteps)))
	fs.Uint64Var(&c.maxBytes, "max-entry-bytes", service.DefaultMaxEntryBytes, "budget of bytes each write this node accepts may write (sizes of the rows inserted or updated); every node applies the write with it")
	fs.BoolVar(&c.changes.Enabled, "changes", false, "publish every committed row change of every database into the JetStream stream NQLITE_CHANGES_<db> (subjects nqlite.changes.<db>.<table>), once each, in stream order")
	fs.Var(&c.tables, "changes-tables", "with --changes, publish only these tables (repeatable, or comma separated; the same on every node)")
	fs.DurationVar(&c.changes.MaxAge, "changes-max-age", 0, "with --changes, how long the change stream keeps events (0: no limit)")
	fs.Int64Var(&c.changes.MaxBytes, "changes-max-bytes", 0, "with --changes, how many bytes the change stream keeps, oldest events dropped first (0: no limit)")
	fs.Uint64Var(&c.checkpoint.Every, "checkpoint-every", 1000, "publish this node's running digest of each database into the KV bucket NQLITE_CHECKPOINTS every this many entries, and compare it with the other nodes' (1 or more)")
	fs.DurationVar(&c.checkpoint.MaxAge, "checkpoint-max-age", 24*time.Hour, "how long the checkpoint bucket keeps a checkpoint")
	fs.BoolVar(&c.checkpoint.Disabled, "no-checkpoints", false, "do not publish or compare checkpoints (a diverged copy then goes unnoticed)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: nqlite [flags]\n\nRuns an nqlite node. Every flag is also read from NQLITE_<FLAG> (e.g. NQLITE_NATS_URL).\n\n")
		fs.PrintDefaults()
	}
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix("NQLITE"), ff.WithEnvVarSplit(",")); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if len(c.dbs) == 0 {
		c.dbs = listFlag{"main"}
	}
	if c.maxSteps < 1 || c.maxSteps > service.MaxEntrySteps {
		return fmt.Errorf("--max-entry-steps %d: give 1 to %d", c.maxSteps, uint64(service.MaxEntrySteps))
	}
	if c.maxBytes < 1 {
		return errors.New("--max-entry-bytes 0: give at least 1")
	}
	if !c.changes.Enabled && (len(c.tables) > 0 || c.changes.MaxAge != 0 || c.changes.MaxBytes != 0) {
		return errors.New("--changes-tables, --changes-max-age and --changes-max-bytes need --changes")
	}
	if c.changes.MaxAge < 0 || c.changes.MaxBytes < 0 {
		return errors.New("--changes-max-age and --changes-max-bytes: give 0 (no limit) or more")
	}
	c.changes.Tables = c.tables
	if c.checkpoint.Every < 1 {
		return errors.New("--checkpoint-every 0: give at least 1 (or --no-checkpoints)")
	}
	if c.checkpoint.MaxAge <= 0 {
		return fmt.Errorf("--checkpoint-max-age %v: give a positive duration such as 24h", c.checkpoint.MaxAge)
	}
	if len(c.leafURLs) > 0 {
		if c.natsURL != "" {
			return errors.New("--leaf-remote runs an embedded leaf-node server: leave --nats-url empty")
		}
		if c.jsDomain == "" {
			return errors.New("--leaf-remote needs --js-domain, the JetStream domain of the hub")
		}
	} else if c.leafCreds != "" {
		return errors.New("--leaf-creds needs --leaf-remote")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// From the first signal on (while starting or serving), a second one
	// ends the process at once (Go's default action, once the signal is
	// no longer caught), and a watchdog ends it after 10 s if anything
	// still hangs.
	go func() {
		<-ctx.Done()
		stop()
		time.AfterFunc(10*time.Second, func() {
			log.Error("stop took over 10s: exiting now (the database is safe: the entry being applied is applied again at start)")
			os.Exit(1)
		})
	}()

	url := c.natsURL
	var ns *server.Server
	if url == "" {
		var err error
		if ns, err = startEmbedded(c); err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		if len(c.leafURLs) > 0 {
			log.Info("embedded leaf-node nats-server started", "listen", c.natsListen, "hub", redacted(c.leafURLs), "js_domain", c.jsDomain)
		} else {
			log.Info("embedded nats-server started", "listen", c.natsListen, "store", filepath.Join(c.dataDir, "jetstream"))
		}
	}
	nc, err := connect(c, url, ns, log)
	if err != nil {
		return err
	}
	defer nc.Close()

	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	node, err := service.Start(startCtx, nc, service.Config{
		NodeID:    c.nodeID,
		DataDir:   c.dataDir,
		Databases: c.dbs,
		Replicas:  c.replicas,
		Readers:   c.readers,
		JSDomain:  c.jsDomain,
		Logger:    log,
		Snapshot:  c.snapshot,

		MaxEntrySteps: c.maxSteps,
		MaxEntryBytes: c.maxBytes,
		Changes:       c.changes,
		Checkpoint:    c.checkpoint,
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil { // a signal: stopped as asked
			log.Info("stopped before serving", "reason", err)
			return nil
		}
		return err
	}
	log.Info("nqlite node serving", "node", c.nodeID, "dbs", c.dbs.String(), "subjects", "nqlite.query.<db>", "version", service.Version)
	<-ctx.Done()
	log.Info("stopping: draining requests and interrupting the batch being applied (a second signal exits at once)")
	return node.Stop()
}

// startEmbedded starts the embedded nats-server (package
// service/embedded) the flags describe, with errors naming the flags.
func startEmbedded(c config) (*server.Server, error) {
	// Durable by default: fsync every stored message before its ack
	// (nats-server's sync_interval: always), as a Raft log does.
	var sync time.Duration
	if c.jsSync != "always" {
		d, err := time.ParseDuration(c.jsSync)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("--js-sync %q: want always or a positive duration such as 2m", c.jsSync)
		}
		sync = d
	}
	ns, err := embedded.Start(embedded.Options{
		SyncInterval: sync,
		Name:         c.nodeID,
		StoreDir:     filepath.Join(c.dataDir, "jetstream"),
		Listen:       c.natsListen,
		JSDomain:     c.jsDomain,
		LeafRemotes:  c.leafURLs,
		LeafCreds:    c.leafCreds,
	})
	var oe *embedded.OptionError
	switch {
	case errors.As(err, &oe) && oe.Field == "LeafRemotes":
		return nil, fmt.Errorf("--leaf-remote %q: %w", oe.Value, oe.Err)
	case errors.As(err, &oe):
		return nil, fmt.Errorf("--nats-listen %q: %w", oe.Value, oe.Err)
	case errors.Is(err, embedded.ErrNotReady):
		return nil, fmt.Errorf("embedded nats-server did not start (is %s already in use? set --nats-listen)", c.natsListen)
	}
	return ns, err
}

func connect(c config, url string, ns *server.Server, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("nqlite " + c.nodeID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// An edge that boots while its NATS is unreachable still starts (and
		// serves a local copy offline); the connection is made when it can be.
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrl()) }),
	}
	if ns != nil {
		opts = append(opts, nats.InProcessServer(ns))
	}
	if c.creds != "" {
		opts = append(opts, nats.UserCredentials(c.creds))
	}
	if c.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(c.nkey)
		if err != nil {
			return nil, fmt.Errorf("--nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.token != "" {
		opts = append(opts, nats.Token(c.token))
	}
	if c.user != "" {
		opts = append(opts, nats.UserInfo(c.user, c.password))
	}
	if c.tlsCA != "" {
		opts = append(opts, nats.RootCAs(c.tlsCA))
	}
	if c.tlsCert != "" || c.tlsKey != "" {
		opts = append(opts, nats.ClientCert(c.tlsCert, c.tlsKey))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", url, err)
	}
	if !nc.IsConnected() {
		log.Warn("NATS is not reachable yet: retrying in the background (check --nats-url and credentials if this lasts)", "url", url)
	}
	return nc, nil
}

// redacted renders hub URLs without passwords, for the log.
func redacted(urls []string) string {
	out := make([]string, len(urls))
	for i, s := range urls {
		if u, err := url.Parse(s); err == nil {
			s = u.Redacted()
		}
		out[i] = s
	}
	return strings.Join(out, ",")
}
