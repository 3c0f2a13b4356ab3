package apply

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	lib "modernc.org/sqlite/lib"
	"zombiezen.com/go/sqlite"
)

// WAL checkpoints (DESIGN.md, "WAL checkpoints"). SQLite's automatic
// checkpoint runs inside the commit that grows the WAL past
// wal_autocheckpoint frames, on the apply goroutine: that entry and every
// entry behind it wait for the page copies and two fsyncs. A
// walCheckpointer does most of that work beside the apply, on a
// connection of its own: every walBackgroundFrames frames the apply
// writes, a PASSIVE checkpoint. The apply connection keeps its automatic
// checkpoint at walAutocheckpoint frames, which then has little left to
// copy and restarts the WAL (a checkpoint running beside a busy writer
// rarely reaches the WAL's end, and only one that does lets it restart).
// Neither changes an outcome: a PASSIVE checkpoint draws nothing from
// SQLite's generator, and when the WAL restarts is fixed for the
// statements by flushFirstFrame.

// walBackgroundFrames is how many frames the apply writes between two
// background checkpoints: SQLite's default wal_autocheckpoint.
const walBackgroundFrames = 1000

// walCheckpointer runs PASSIVE checkpoints of one database file on its
// own connection and goroutine, when the apply asks (wrote).
type walCheckpointer struct {
	c    *sqlite.Conn
	stmt *sqlite.Stmt
	log  *slog.Logger
	kick chan struct{}
	done chan struct{}
	// pending counts the frames the apply connection wrote since the
	// last kick (apply goroutine only).
	pending int64
	runs    atomic.Int64 // checkpoints run (tests)
}

// startCheckpointer opens the checkpoint connection to path and starts
// its goroutine.
func startCheckpointer(path string, log *slog.Logger) (*walCheckpointer, error) {
	c, err := openConn(path, sqlite.OpenReadWrite|sqlite.OpenWAL|sqlite.OpenNoMutex)
	if err != nil {
		return nil, err
	}
	cp := &walCheckpointer{c: c, log: log, kick: make(chan struct{}, 1), done: make(chan struct{})}
	prngMu.Lock()
	err = func() error {
		// NORMAL: the checkpoint syncs the WAL before it copies and the
		// database file after, as the apply connection's would.
		for _, q := range []string{"PRAGMA synchronous=NORMAL", "PRAGMA temp_store=MEMORY", "PRAGMA wal_autocheckpoint=0"} {
			s, _, err := c.PrepareTransient(q)
			if err != nil {
				return err
			}
			_, err = s.Step()
			s.Finalize()
			if err != nil {
				return err
			}
		}
		cp.stmt, _, err = c.PrepareTransient("PRAGMA wal_checkpoint(PASSIVE)")
		return err
	}()
	prngMu.Unlock()
	if err != nil {
		closeSQLite(c)
		return nil, fmt.Errorf("checkpoint connection: %w", err)
	}
	go cp.loop()
	return cp, nil
}

func (cp *walCheckpointer) loop() {
	defer close(cp.done)
	logged := false
	for range cp.kick {
		_, err := cp.stmt.Step()
		cp.runs.Add(1)
		if rerr := cp.stmt.Reset(); err == nil {
			err = rerr
		}
		if err != nil && !logged {
			// The WAL is then checkpointed by the apply's commits alone.
			cp.log.Warn("background WAL checkpoint failed", "err", err)
			logged = true
		}
	}
}

// wrote notes what the apply connection w wrote since the last call
// (sqlite3_db_status SQLITE_DBSTATUS_CACHE_WRITE: pages written to the
// WAL) and starts a checkpoint every walBackgroundFrames frames.
func (cp *walCheckpointer) wrote(w *conn) {
	p := w.tls.Alloc(8)
	lib.Xsqlite3_db_status(w.tls, w.handle, lib.SQLITE_DBSTATUS_CACHE_WRITE, p, p+4, 1)
	cp.pending += int64(*(*int32)(ptr(&p)))
	w.tls.Free(8)
	if cp.pending < walBackgroundFrames {
		return
	}
	cp.pending = 0
	select {
	case cp.kick <- struct{}{}:
	default: // a checkpoint is already asked for: it copies these frames too
	}
}

// close waits for a checkpoint running and closes the connection.
func (cp *walCheckpointer) close() error {
	close(cp.kick)
	<-cp.done
	cp.stmt.Finalize()
	return closeSQLite(cp.c)
}
