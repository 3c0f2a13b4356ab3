package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
)

// ConnConfig says how to connect to NATS, with the fields of the nats CLI
// (and of its contexts). nqctl and the database/sql driver (nqsql) both
// build their connections with it.
type ConnConfig struct {
	// Servers is one NATS URL or several separated by commas; "" after
	// Resolve means nats.DefaultURL.
	Servers  string
	Creds    string // user credentials file (JWT and nkey seed)
	NKey     string // nkey seed file
	User     string
	Password string
	Token    string
	TLSCert  string // client certificate file (with TLSKey)
	TLSKey   string
	TLSCA    string // CA certificates file
	TLSFirst bool   // TLS handshake before the NATS INFO
	// InboxPrefix replaces _INBOX for replies (accounts that limit
	// subscriptions).
	InboxPrefix string
	// Context names the nats CLI context to read; Resolve sets it to the
	// context it used ("" for none).
	Context string
	// Name is the connection name servers show (nats.Name).
	Name string
}

// Resolve fills the fields c leaves empty, the way the nats CLI does:
//
//  1. from the NATS_* environment variables (NATS_URL, NATS_CREDS,
//     NATS_NKEY, NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CERT,
//     NATS_KEY, NATS_CA, NATS_INBOX_PREFIX), read with getenv; a nil
//     getenv reads none;
//  2. from the nats CLI context c.Context, else $NATS_CONTEXT, else, when
//     no server is known yet, the context selected with `nats context
//     select` (see LoadNATSContext);
//  3. Servers defaults to nats.DefaultURL (nats://127.0.0.1:4222).
//
// Errors name the context and the file; nothing is changed in files.
func (c *ConnConfig) Resolve(getenv func(string) string) error {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	env := func(field *string, name string) {
		if *field == "" {
			*field = getenv(name)
		}
	}
	env(&c.Servers, "NATS_URL")
	env(&c.Creds, "NATS_CREDS")
	env(&c.NKey, "NATS_NKEY")
	env(&c.User, "NATS_USER")
	env(&c.Password, "NATS_PASSWORD")
	env(&c.Token, "NATS_TOKEN")
	env(&c.TLSCert, "NATS_CERT")
	env(&c.TLSKey, "NATS_KEY")
	env(&c.TLSCA, "NATS_CA")
	env(&c.InboxPrefix, "NATS_INBOX_PREFIX")

	name := c.Context
	if name == "" {
		name = getenv("NATS_CONTEXT")
	}
	if name == "" && strings.TrimSpace(c.Servers) == "" {
		sel, err := SelectedNATSContext()
		if err != nil {
			return err
		}
		name = sel
	}
	c.Context = ""
	if name != "" {
		nctx, err := LoadNATSContext(name)
		if err != nil {
			return err
		}
		if err := c.applyContext(name, nctx); err != nil {
			return err
		}
	}
	if strings.TrimSpace(c.Servers) == "" {
		c.Servers = nats.DefaultURL
	}
	return nil
}

// applyContext fills the empty fields of c from the context nctx.
func (c *ConnConfig) applyContext(name string, nctx *NATSContext) error {
	c.Context = name
	fill := func(field *string, v string) {
		if *field == "" {
			*field = v
		}
	}
	fill(&c.Servers, nctx.URL)
	fill(&c.Creds, expandHome(nctx.Creds))
	fill(&c.NKey, expandHome(nctx.NKey))
	fill(&c.User, nctx.User)
	fill(&c.Password, nctx.Password)
	fill(&c.Token, nctx.Token)
	fill(&c.TLSCert, expandHome(nctx.Cert))
	fill(&c.TLSKey, expandHome(nctx.Key))
	fill(&c.TLSCA, expandHome(nctx.CA))
	fill(&c.InboxPrefix, nctx.InboxPrefix)
	c.TLSFirst = c.TLSFirst || nctx.TLSFirst
	if nctx.NSCLookup != "" && c.Creds == "" {
		return fmt.Errorf("nats context %q: nsc lookups (nsc: %s) are not supported: set \"creds\" to the credentials file", name, nctx.NSCLookup)
	}
	return nil
}

// Options returns the nats.go options for c's authentication, TLS, inbox
// prefix and name. An unreadable nkey seed file is an error here; the
// other files are read by nats.Connect.
func (c *ConnConfig) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if c.Name != "" {
		opts = append(opts, nats.Name(c.Name))
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %s: %w", c.NKey, err)
		}
		opts = append(opts, opt)
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("a TLS client certificate and its key go together: give both or neither")
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	return opts, nil
}

// NATSContext is a nats CLI context file,
// <config>/nats/context/<name>.json. Only the fields nqlite uses are
// read.
type NATSContext struct {
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

// NATSConfigDir is where the nats CLI keeps its configuration:
// $XDG_CONFIG_HOME/nats, else ~/.config/nats (on every OS, like the nats
// CLI).
func NATSConfigDir() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("nats contexts: %w", err)
	}
	return filepath.Join(home, ".config", "nats"), nil
}

// SelectedNATSContext returns the nats CLI's selected context (the name in
// <config>/nats/context.txt), or "" when none is selected or there is no
// home directory.
func SelectedNATSContext() (string, error) {
	dir, err := NATSConfigDir()
	if err != nil {
		return "", nil // no home directory: no context either
	}
	data, err := os.ReadFile(filepath.Join(dir, "context.txt"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("selected nats context: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// LoadNATSContext reads the nats CLI context name from
// <config>/nats/context/<name>.json (see NATSConfigDir).
func LoadNATSContext(name string) (*NATSContext, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("nats context %q: not a valid context name", name)
	}
	dir, err := NATSConfigDir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "context", name+".json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("nats context %q: %s does not exist (list contexts with: nats context ls)", name, path)
	}
	if err != nil {
		return nil, fmt.Errorf("nats context %q: %w", name, err)
	}
	var c NATSContext
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("nats context %q: %s: %w", name, path, err)
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
