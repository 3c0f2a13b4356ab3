package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// watchCommand is "nqctl watch".
type watchCommand struct{ env *env }

// Run prints the database's change feed as it arrives.
func (c *watchCommand) Run(ctx context.Context, args []string) error {
	e := c.env
	fs := e.flagSet("watch", "[TABLE ...]", `Prints the database's change feed as it arrives: every row change
committed (inserts, updates, deletes, triggers' included), once each, in
the order of the stream, and a reset when the database was loaded or
restored. The nodes must run with --changes. With TABLE arguments, only
their changes (and resets). By default only changes made from now on;
--since SEQ starts with the changes of the write at stream sequence SEQ
(the seq of its response), --all with the oldest the feed keeps. Runs
until interrupted, or until --count events were printed.

--format table prints one line per event: its position in the change
stream, the write's seq.index, its time (UTC), the operation, the table,
the rowid and the values (col=value; an update shows col: old → new for
the columns it changed). --format json prints each event as the feed
stores it, one JSON object per line.`)
	e.opts.conn.register(fs)
	format := fs.String("format", "table", "table or json")
	since := fs.Uint64("since", 0, "start with the changes of the write at this stream sequence")
	all := fs.Bool("all", false, "start with the oldest event the change stream keeps")
	count := fs.Int("count", 0, "exit after this many events (0: run until interrupted)")
	domain := fs.String("js-domain", "", "JetStream domain of the change stream")
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if *format != "table" && *format != "json" {
		return usageErrorf("--format %q: use table or json", *format)
	}
	if *count < 0 {
		return usageErrorf("--count %d: give 0 or more", *count)
	}
	nc, err := e.dial()
	if err != nil {
		return err
	}
	defer nc.Close()
	out := bufio.NewWriter(e.stdout)
	defer out.Flush()
	n := 0
	o := client.WatchOptions{Tables: rest, Since: *since, All: *all, JSDomain: *domain}
	for ch, err := range client.New(nc).WatchWith(ctx, e.opts.conn.db, o) {
		if err != nil {
			if errors.Is(err, client.ErrNoFeed) {
				return failedf("%v", err)
			}
			return connErrorf("%v", err)
		}
		if *format == "json" {
			out.Write(ch.AppendJSON(nil))
			out.WriteByte('\n')
		} else {
			out.WriteString(changeLine(&ch))
			out.WriteByte('\n')
		}
		out.Flush() // as it arrives
		if n++; *count > 0 && n >= *count {
			return nil
		}
	}
	return nil
}

// changeLine renders an event on one line (--format table).
func changeLine(ch *api.Change) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6d", ch.Position)
	if ch.Op == api.OpLost {
		b.WriteString("  lost")
		return b.String()
	}
	fmt.Fprintf(&b, "  %d.%d  %s  %-6s", ch.Seq, ch.Index, time.UnixMilli(ch.Time).UTC().Format("2006-01-02T15:04:05.000Z"), ch.Op)
	if ch.Op == api.OpReset {
		return strings.TrimRight(b.String(), " ")
	}
	b.WriteString("  " + ch.Table)
	if !ch.WithoutRowID {
		b.WriteString("  rowid=" + strconv.FormatInt(ch.RowID, 10))
		if ch.Op == api.OpUpdate && ch.NewRowID != ch.RowID {
			b.WriteString("→" + strconv.FormatInt(ch.NewRowID, 10))
		}
	}
	b.WriteString(" ")
	switch ch.Op {
	case api.OpUpdate:
		changed := false
		for i, col := range ch.Columns {
			if i < len(ch.Old) && i < len(ch.New) && formatValue(ch.Old[i]) != formatValue(ch.New[i]) {
				fmt.Fprintf(&b, " %s: %s → %s", col, formatValue(ch.Old[i]), formatValue(ch.New[i]))
				changed = true
			}
		}
		if !changed {
			b.WriteString(" (no value changed)")
		}
	default:
		vals := ch.New
		if ch.Op == api.OpDelete {
			vals = ch.Old
		}
		for i, col := range ch.Columns {
			if i < len(vals) {
				fmt.Fprintf(&b, " %s=%s", col, formatValue(vals[i]))
			}
		}
	}
	return b.String()
}
