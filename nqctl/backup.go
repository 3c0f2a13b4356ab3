package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
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
//   - restore uploads a SQLite file or a SQL dump as load/<db>/<id> (and a
//     SQLite file's non-empty -wal as load/<db>/<id>-wal) and asks a node
//     to load it (nqlite.load.<db>): every node switches to it at the same
//     stream sequence. Files of any size work (the Object Store chunks
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

var (
	sqliteMagic  = []byte("SQLite format 3\x00")
	journalMagic = []byte{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7}
)

// sniffBytes is how much of a file restore reads to tell its kind.
const sniffBytes = 64 << 10

// restoreKind tells what file is from its first bytes, without SQLite:
// isSQL false for a SQLite database, true for SQL text (UTF-8, no NUL
// bytes; an empty file is an empty dump), or an error naming what else it
// is (a -wal or -journal file, binary data: encrypted, compressed...).
func restoreKind(file string, head []byte) (isSQL bool, err error) {
	walMagic := len(head) >= 4 && (binary.BigEndian.Uint32(head) == 0x377f0682 || binary.BigEndian.Uint32(head) == 0x377f0683)
	switch {
	case bytes.HasPrefix(head, sqliteMagic):
		return false, nil
	case walMagic:
		return false, fmt.Errorf("%s is a SQLite write-ahead log (a -wal file), not a database: restore the database file it belongs to (nqctl uploads its -wal with it)", file)
	case bytes.HasPrefix(head, journalMagic):
		return false, fmt.Errorf("%s is a SQLite rollback journal (a -journal file), not a database: restore the database file", file)
	}
	text := head
	if len(head) == sniffBytes {
		// The read may have cut the last rune.
		for i := len(text) - 1; i >= 0 && i >= len(text)-utf8.UTFMax; i-- {
			if utf8.RuneStart(text[i]) {
				if !utf8.FullRune(text[i:]) {
					text = text[:i]
				}
				break
			}
		}
	}
	if bytes.IndexByte(text, 0) >= 0 || !utf8.Valid(text) {
		return false, fmt.Errorf("%s is neither a SQLite database (no SQLite header) nor SQL text (binary data: encrypted, compressed, or another format?)", file)
	}
	return true, nil
}

// restore replaces the session's database, on every node, with the SQLite
// file or SQL dump in file.
//
// A SQLite file in WAL mode may hold committed transactions in file-wal
// that are not checkpointed into file yet: when file-wal exists and is not
// empty, it is uploaded too (load/<db>/<id>-wal) and named in the load
// request, and the node that receives the request merges the two with
// SQLite into one object before publishing the load entry (nqctl links no
// SQLite). A hot rollback journal (file-journal with a live header: a
// transaction in progress or interrupted) is refused: file alone is not
// consistent. Objects the nodes refused are deleted again.
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
	head := make([]byte, sniffBytes)
	n, _ := io.ReadFull(f, head)
	isSQL, err := restoreKind(file, head[:n])
	if err != nil {
		return failedf("restore: %v", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return failedf("restore: %v", err)
	}
	var wal *os.File
	if !isSQL {
		if j, err := os.ReadFile(file + "-journal"); err == nil && bytes.HasPrefix(j, journalMagic) {
			return failedf("restore: %s-journal is a hot rollback journal: a transaction on %s is in progress or was interrupted, so the file alone is not consistent; open %s with sqlite3 once (it rolls the journal back), then restore", file, file, file)
		}
		if w, err := os.Open(file + "-wal"); err == nil {
			if wst, err := w.Stat(); err == nil && wst.Size() > 0 {
				wal = w
				defer w.Close()
			} else {
				w.Close()
			}
		}
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return failedf("restore: %v", err)
	}
	obj, err := js.ObjectStore(ctx, api.SnapshotBucket)
	if err != nil {
		return failedf("restore: bucket %s (do the nodes have snapshots enabled?): %v", api.SnapshotBucket, err)
	}
	name := api.LoadObjectPrefix(s.db) + nuid.Next()
	var uploaded []string
	put := func(name, path string, f *os.File) (*jetstream.ObjectInfo, error) {
		var r io.Reader = f
		if progress {
			size := int64(0)
			if st, err := f.Stat(); err == nil {
				size = st.Size()
			}
			bar := newBar(stderr, size, "upload "+filepath.Base(path))
			r = io.TeeReader(f, bar)
			defer bar.Close()
		}
		info, err := obj.Put(ctx, jetstream.ObjectMeta{Name: name, Description: "nqctl restore of " + filepath.Base(path)}, r)
		if err == nil {
			uploaded = append(uploaded, name)
		}
		return info, err
	}
	// removeUploaded deletes what this restore uploaded, when the nodes
	// refused it (nothing names it then).
	removeUploaded := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, o := range uploaded {
			obj.Delete(dctx, o)
		}
	}
	info, err := put(name, file, f)
	if err != nil {
		return failedf("restore: upload: %v", err)
	}
	lr := api.LoadRequest{Bucket: api.SnapshotBucket, Object: name, Digest: info.Digest, SQL: isSQL}
	if wal != nil {
		winfo, err := put(name+"-wal", file+"-wal", wal)
		if err != nil {
			removeUploaded()
			return failedf("restore: upload %s-wal: %v", file, err)
		}
		lr.WALObject, lr.WALDigest = winfo.Name, winfo.Digest
	}
	reply, err := client.New(s.nc).LoadObjects(ctx, s.db, lr)
	if err != nil {
		if api.ErrorCode(err) == api.CodeBadRequest {
			removeUploaded() // refused: nothing names the objects
		}
		return wrapErr("restore", err)
	}
	s.afterSeq = max(s.afterSeq, reply.Seq)
	kind := "SQLite file"
	switch {
	case isSQL:
		kind = "SQL dump"
	case wal != nil:
		kind = "SQLite file with its write-ahead log"
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
