package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// Backup and restore go through nqlite's snapshots in the JetStream Object
// Store (bucket api.SnapshotBucket):
//
//   - backup asks a node for a fresh snapshot (nqlite.snapshot.<db>, after
//     the session's last sequence) and downloads it: a consistent SQLite
//     file as of the sequence it reports. The Object Store checks its
//     SHA-256 digest.
//   - restore uploads a SQLite file or a SQL dump as load/<db>/<id> and asks
//     a node to load it (nqlite.load.<db>): every node switches to it at the
//     same stream sequence. Files of any size work (the Object Store chunks
//     them).
//
// Both show a progress bar on a terminal.

// backup writes a snapshot of the session's database to file.
func backup(ctx context.Context, s *session, file string, stderr io.Writer, progress bool) error {
	c := client.New(s.nc)
	snap, err := c.Snapshot(ctx, s.db, api.SnapshotRequest{AfterSeq: s.afterSeq})
	if err != nil {
		return wrapErr("backup", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".part-*")
	if err != nil {
		return failedf("backup: %v", err)
	}
	defer os.Remove(tmp.Name())
	var w io.Writer = tmp
	if progress {
		bar := newBar(stderr, int64(snap.Size), "backup "+s.db)
		w = io.MultiWriter(tmp, bar)
		defer bar.Close()
	}
	n, err := c.Download(ctx, snap, w) // the digest is checked at the end
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return failedf("backup: %v", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return failedf("backup: %v", err)
	}
	s.afterSeq = max(s.afterSeq, snap.Seq)
	fmt.Fprintf(stderr, "backup of %s as of sequence %d: %s (%d bytes, %s)\n", s.db, snap.Seq, file, n, snap.Digest)
	return nil
}

var sqliteMagic = []byte("SQLite format 3\x00")

// restore replaces the session's database, on every node, with the SQLite
// file or SQL dump in file.
func restore(ctx context.Context, s *session, file string, stderr io.Writer, progress bool) error {
	f, err := os.Open(file)
	if err != nil {
		return failedf("restore: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return failedf("restore: %v", err)
	}
	head := make([]byte, len(sqliteMagic))
	n, _ := io.ReadFull(f, head)
	isSQL := !bytes.Equal(head[:n], sqliteMagic)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return failedf("restore: %v", err)
	}
	var r io.Reader = f
	if progress {
		bar := newBar(stderr, st.Size(), "upload "+filepath.Base(file))
		r = io.TeeReader(f, bar)
		defer bar.Close()
	}
	reply, err := client.New(s.nc).Load(ctx, s.db, r, client.LoadOptions{SQL: isSQL, Description: "nqctl restore of " + filepath.Base(file)})
	if err != nil {
		return wrapErr("restore", err)
	}
	s.afterSeq = max(s.afterSeq, reply.Seq)
	kind := "SQLite file"
	if isSQL {
		kind = "SQL dump"
	}
	fmt.Fprintf(stderr, "restored %s from %s (%s, %s bytes) at sequence %d on every node\n", s.db, file, kind, strconv.FormatInt(st.Size(), 10), reply.Seq)
	return nil
}

// backupCommand is "nqctl backup FILE".
type backupCommand struct{ env *env }

// Run runs the command.
func (c *backupCommand) Run(ctx context.Context, args []string) error {
	return c.run(ctx, args, "backup", `Writes a consistent SQLite file of the database to FILE: a node takes a
fresh snapshot into the JetStream Object Store and nqctl downloads it
(digest checked).`, backup)
}

// restoreCommand is "nqctl restore FILE".
type restoreCommand struct{ env *env }

// Run runs the command.
func (c *restoreCommand) Run(ctx context.Context, args []string) error {
	return (&backupCommand{env: c.env}).run(ctx, args, "restore", `Replaces the database on every node with FILE, a SQLite file or a SQL
dump: nqctl uploads it to the JetStream Object Store and every node
switches to it at the same stream sequence.`, restore)
}

func (c *backupCommand) run(ctx context.Context, args []string, name, what string, f func(context.Context, *session, string, io.Writer, bool) error) error {
	e := c.env
	fs := e.flagSet(name, "FILE", what)
	e.opts.conn.register(fs)
	rest, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		fs.Usage()
		return errUsagePrinted
	}
	err = e.withSession(modeColumn, func(s *session, _ *bufio.Writer) error {
		return f(ctx, s, rest[0], e.stderr, isTerminal(e.stderr))
	})
	if errors.Is(err, context.Canceled) {
		return failedf("%s: interrupted", name)
	}
	return err
}

// newBar returns a byte progress bar on w.
func newBar(w io.Writer, size int64, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}
