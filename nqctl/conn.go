package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
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
// variables and the nats CLI context, and checks that the files named
// exist.
func (o *connOptions) resolve() error {
	if err := o.validate(); err != nil {
		return err
	}
	env := func(field *string, name string) {
		if *field == "" {
			*field = os.Getenv(name)
		}
	}
	env(&o.server, "NATS_URL")
	env(&o.creds, "NATS_CREDS")
	env(&o.nkey, "NATS_NKEY")
	env(&o.user, "NATS_USER")
	env(&o.password, "NATS_PASSWORD")
	env(&o.token, "NATS_TOKEN")
	env(&o.tlsCert, "NATS_CERT")
	env(&o.tlsKey, "NATS_KEY")
	env(&o.tlsCA, "NATS_CA")
	o.inboxPrefix = os.Getenv("NATS_INBOX_PREFIX")

	name := o.context
	if name == "" {
		name = os.Getenv("NATS_CONTEXT")
	}
	if name == "" && o.server == "" {
		sel, err := selectedContext()
		if err != nil {
			return usageErrorf("%v", err)
		}
		name = sel
	}
	if name != "" {
		c, err := loadContext(name)
		if err != nil {
			return usageErrorf("%v", err)
		}
		o.contextName = name
		fill := func(field *string, v string) {
			if *field == "" {
				*field = v
			}
		}
		fill(&o.server, c.URL)
		fill(&o.creds, expandHome(c.Creds))
		fill(&o.nkey, expandHome(c.NKey))
		fill(&o.user, c.User)
		fill(&o.password, c.Password)
		fill(&o.token, c.Token)
		fill(&o.tlsCert, expandHome(c.Cert))
		fill(&o.tlsKey, expandHome(c.Key))
		fill(&o.tlsCA, expandHome(c.CA))
		fill(&o.inboxPrefix, c.InboxPrefix)
		o.tlsFirst = c.TLSFirst
		if c.NSCLookup != "" && o.creds == "" {
			return usageErrorf("nats context %q: nsc lookups (nsc: %s) are not supported by nqctl: set \"creds\" to the credentials file", name, c.NSCLookup)
		}
	}
	if strings.TrimSpace(o.server) == "" {
		o.server = nats.DefaultURL
	}
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

// natsOptions are the nats.go options for o.
func (o *connOptions) natsOptions() ([]nats.Option, error) {
	opts := []nats.Option{nats.Name("nqctl"), nats.Timeout(min(o.timeout, 5*time.Second))}
	if o.creds != "" {
		opts = append(opts, nats.UserCredentials(o.creds))
	}
	if o.nkey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.nkey)
		if err != nil {
			return nil, usageErrorf("--nkey: %v", err)
		}
		opts = append(opts, opt)
	}
	if o.user != "" {
		opts = append(opts, nats.UserInfo(o.user, o.password))
	}
	if o.token != "" {
		opts = append(opts, nats.Token(o.token))
	}
	if o.tlsCert != "" {
		opts = append(opts, nats.ClientCert(o.tlsCert, o.tlsKey))
	}
	if o.tlsCA != "" {
		opts = append(opts, nats.RootCAs(o.tlsCA))
	}
	if o.tlsFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if o.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.inboxPrefix))
	}
	return opts, nil
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

// natsContext is a nats CLI context file,
// <config>/nats/context/<name>.json. Only the fields nqctl uses are read.
type natsContext struct {
	Description string `json:"description"`
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	NSCLookup   string `json:"nsc"`
	InboxPrefix string `json:"inbox_prefix"`
	TLSFirst    bool   `json:"tls_first"`
}

// natsConfigDir is where the nats CLI keeps its configuration:
// $XDG_CONFIG_HOME/nats, else ~/.config/nats (on every OS, like the nats
// CLI).
func natsConfigDir() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("nats contexts: %v", err)
	}
	return filepath.Join(home, ".config", "nats"), nil
}

// selectedContext returns the nats CLI's selected context (context.txt),
// or "" when none is selected.
func selectedContext() (string, error) {
	dir, err := natsConfigDir()
	if err != nil {
		return "", nil // no home directory: no context either
	}
	data, err := os.ReadFile(filepath.Join(dir, "context.txt"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("selected nats context: %v", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// loadContext reads the nats CLI context name.
func loadContext(name string) (*natsContext, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("nats context %q: not a valid context name", name)
	}
	dir, err := natsConfigDir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "context", name+".json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("nats context %q: %s does not exist (list contexts with: nats context ls)", name, path)
	}
	if err != nil {
		return nil, fmt.Errorf("nats context %q: %v", name, err)
	}
	var c natsContext
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("nats context %q: %s: %v", name, path, err)
	}
	return &c, nil
}

// expandHome replaces a leading ~ with the home directory, as the nats CLI
// does for the file paths in a context.
func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
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
