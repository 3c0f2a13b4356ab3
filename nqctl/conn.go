package main

import (
	"flag"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// connOptions are the connection flags every command shares. They follow
// the nats CLI: flags first, then the NATS_* environment variables, then
// the nats CLI context (--context, $NATS_CONTEXT, or the selected one).
type connOptions struct {
	server   string
	creds    string
	nkey     string
	user     string
	password string
	token    string
	tlsCert  string
	tlsKey   string
	tlsCA    string
	context  string
	db       string
	timeout  time.Duration

	// set records the connection flags given on the command line.
	set map[string]bool

	// Filled by resolve.
	contextName string // the nats context in use, "" for none
	inboxPrefix string
	tlsFirst    bool
}

// register adds the connection flags to fs, with o's current values as
// defaults (so flags given before a subcommand carry over).
func (o *connOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.server, "server", o.server, "NATS server URL, or several separated by commas (default $NATS_URL, the nats context's url, or "+nats.DefaultURL+")")
	fs.StringVar(&o.server, "s", o.server, "short for --server")
	fs.StringVar(&o.creds, "creds", o.creds, "NATS user credentials file ($NATS_CREDS)")
	fs.StringVar(&o.nkey, "nkey", o.nkey, "NATS nkey seed file ($NATS_NKEY)")
	fs.StringVar(&o.user, "user", o.user, "NATS user name ($NATS_USER)")
	fs.StringVar(&o.password, "password", o.password, "NATS password ($NATS_PASSWORD)")
	fs.StringVar(&o.token, "token", o.token, "NATS authentication token ($NATS_TOKEN)")
	fs.StringVar(&o.tlsCert, "tls-cert", o.tlsCert, "TLS client certificate file ($NATS_CERT)")
	fs.StringVar(&o.tlsKey, "tls-key", o.tlsKey, "TLS client key file ($NATS_KEY)")
	fs.StringVar(&o.tlsCA, "tls-ca", o.tlsCA, "TLS CA certificate file ($NATS_CA)")
	fs.StringVar(&o.context, "context", o.context, "nats CLI context to connect with ($NATS_CONTEXT; default: the selected context when no --server or $NATS_URL is given)")
	fs.StringVar(&o.db, "db", o.db, "database")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "timeout of each request (sent to the server as timeout_ms; at most 10m)")
}

// defaultConnOptions are the options before any flag.
func defaultConnOptions() connOptions {
	return connOptions{db: "main", timeout: 10 * time.Second, set: map[string]bool{}}
}

// noteSet records which connection flags fs parsed.
func (o *connOptions) noteSet(fs *flag.FlagSet) {
	fs.Visit(func(f *flag.Flag) {
		name := f.Name
		if name == "s" {
			name = "server"
		}
		o.set[name] = true
	})
}

// validate checks the flags that do not need the environment.
func (o *connOptions) validate() error {
	if !api.ValidDBName(o.db) {
		return usageErrorf("--db %q: use 1-64 of A-Z a-z 0-9 _ -", o.db)
	}
	if o.timeout < time.Millisecond || o.timeout > api.MaxTimeoutMS*time.Millisecond {
		return usageErrorf("--timeout %v: give 1ms to 10m", o.timeout)
	}
	if o.set["server"] && strings.TrimSpace(o.server) == "" {
		return usageErrorf("--server is empty: give a NATS URL such as nats://127.0.0.1:4222")
	}
	return nil
}

// resolve fills what the flags left empty from the NATS_* environment
// variables and the nats CLI context (client.ConnConfig.Resolve), and
// checks that the files named exist.
func (o *connOptions) resolve() error {
	if err := o.validate(); err != nil {
		return err
	}
	c := o.config()
	if err := c.Resolve(os.Getenv); err != nil {
		return usageErrorf("%v", err)
	}
	o.server, o.creds, o.nkey, o.user, o.password, o.token = c.Servers, c.Creds, c.NKey, c.User, c.Password, c.Token
	o.tlsCert, o.tlsKey, o.tlsCA = c.TLSCert, c.TLSKey, c.TLSCA
	o.contextName, o.inboxPrefix, o.tlsFirst = c.Context, c.InboxPrefix, c.TLSFirst
	for _, f := range []struct{ flag, path string }{
		{"--creds", o.creds}, {"--nkey", o.nkey}, {"--tls-cert", o.tlsCert}, {"--tls-key", o.tlsKey}, {"--tls-ca", o.tlsCA},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return usageErrorf("%s: %v", f.flag, err)
		}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageErrorf("--tls-cert and --tls-key go together")
	}
	return nil
}

// config is o as a client.ConnConfig.
func (o *connOptions) config() *client.ConnConfig {
	return &client.ConnConfig{
		Servers: o.server, Creds: o.creds, NKey: o.nkey, User: o.user, Password: o.password, Token: o.token,
		TLSCert: o.tlsCert, TLSKey: o.tlsKey, TLSCA: o.tlsCA, TLSFirst: o.tlsFirst, InboxPrefix: o.inboxPrefix,
		Context: o.context, Name: "nqctl",
	}
}

// natsOptions are the nats.go options for o (resolved).
func (o *connOptions) natsOptions() ([]nats.Option, error) {
	c := o.config()
	c.Context = o.contextName
	opts, err := c.Options()
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return append(opts, nats.Timeout(min(o.timeout, 5*time.Second))), nil
}

// connect resolves o and connects to NATS. A failure to connect is a
// connection error (exit code 3).
func (o *connOptions) connect() (*nats.Conn, error) {
	if err := o.resolve(); err != nil {
		return nil, err
	}
	opts, err := o.natsOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(o.server, opts...)
	if err != nil {
		where := redactURLs(o.server)
		if o.contextName != "" {
			where += " (nats context " + o.contextName + ")"
		}
		return nil, connErrorf("connect to %s: %v", where, err)
	}
	return nc, nil
}

// redactURLs hides passwords in a comma-separated list of NATS URLs.
func redactURLs(servers string) string {
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, ok := u.User.Password(); !ok {
				u.User = url.User("xxxxx") // a token
			}
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
