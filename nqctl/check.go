package main

import (
	"bufio"
	"context"
	"strings"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// checkCommand is "nqctl check [DB]".
type checkCommand struct{ env *env }

// Run asks every node for the content hash of the database at one applied
// sequence and prints one row per node. It exits 0 when every node
// answered the same hash, 1 when any differs or gave none.
func (c *checkCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	fs := e.flagSet("check", "[DB]", `Checks that every node holds the same database: each node computes a hash of
its whole content (every table's rows in primary-key order and the schema,
independent of the file's page layout, in the spirit of SQLite's dbhash)
as of one applied stream sequence, and nqctl prints node, seq, hash and
whether it agrees, with the tables that differ. The sequence is the
highest any node has applied (micro STATS), or --seq; a node behind waits
for it (up to --timeout), a node already past it makes nqctl ask again
at a later one.
Exit status 0 when every node agrees, 1 when any differs or has no hash.
This catches what never went through the stream (a file edited with the
sqlite3 shell, a bad disk); the nodes' running digests (nqctl nodes)
catch what an entry did differently.`)
	e.opts.conn.register(fs)
	e.opts.registerOutput(fs)
	seq := fs.Uint64("seq", 0, "the applied sequence to compare at (default: the highest a node has applied)")
	expect := fs.Int("expect", 0, "the number of nodes (default: as many as answer micro STATS for the database)")
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return usageErrorf("check takes at most one argument, the database")
	}
	db := e.opts.conn.db
	if len(rest) == 1 {
		db = rest[0]
	}
	if !api.ValidDBName(db) {
		return usageErrorf("database name %q: use 1-64 of A-Z a-z 0-9 _ -", db)
	}
	mode, err := e.opts.outputMode(modeColumn)
	if err != nil {
		return err
	}
	nc, err := e.dial()
	if err != nil {
		return err
	}
	defer nc.Close()
	res, err := client.New(nc).Check(ctx, db, *seq, client.CheckOptions{Timeout: e.opts.conn.timeout, Gather: client.StatsOptions{Expect: *expect}})
	if err != nil {
		if isConnError(err) {
			return connErrorf("%v", err)
		}
		return failedf("check %s: %v", db, err)
	}
	out := bufio.NewWriter(e.stdout)
	defer out.Flush()
	s := e.newSession(nc, out, mode)
	if mode == modeRaw {
		s.p.mode = modeJSON
	}
	s.p.result(checkResult(res))
	if !res.Agree() {
		out.Flush()
		return failedf("check %s: the nodes do not all hold the same content at sequence %d", db, res.Seq)
	}
	return nil
}

// checkResult turns a check into a table: node, seq, hash (64 hex
// digits), agrees ("yes" when the node holds the hash most nodes hold) and
// the tables that differ from the majority's, or the node's error.
func checkResult(r *client.CheckResult) *api.Result {
	res := &api.Result{Columns: []string{"node", "seq", "hash", "agrees", "differs_in"}}
	majority := r.Majority()
	for _, rep := range r.Replies {
		agrees := "no"
		if rep.Hash != "" && rep.Hash == majority {
			agrees = "yes"
		}
		detail := ""
		if rep.Error != "" {
			detail = rep.Error
		} else if t := r.DifferingTables(rep); len(t) > 0 {
			detail = strings.Join(t, ", ")
		}
		var hash any
		if rep.Hash != "" {
			hash = rep.Hash
		}
		res.Values = append(res.Values, []any{rep.Node, int64(rep.Seq), hash, agrees, detail})
	}
	return res
}
