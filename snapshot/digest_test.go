package snapshot_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"zombiezen.com/go/sqlite"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/servicetest"
	"github.com/nqlite/nqlite/snapshot"
)

// A snapshot's metadata carries the running digest and the content hash;
// a restore checks both against the downloaded file and refuses one that
// differs (content edited after the metadata was computed, a digest that
// is not the file's) with ErrMismatch; a snapshot with neither (made by a
// node before digests) is accepted.
func TestFetch_DigestChecks(t *testing.T) {
	ns := servicetest.StartServer(t)
	nc := servicetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	st, err := snapshot.Open(ctx, js, snapshot.Options{Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t)
	write(t, db, 1, "CREATE TABLE t(x)")
	write(t, db, 2, "INSERT INTO t VALUES(1), (2)")
	m, uploaded, err := st.Take(ctx, "main", db, t.TempDir())
	if err != nil || !uploaded {
		t.Fatalf("take: %v %v", uploaded, err)
	}
	want := db.Digest()
	h, err := db.ContentHashAt(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if m.RunningDigest != want.Digest.String() || m.DigestOrigin != want.Origin || m.DigestFormat != apply.DigestFormat || m.Content != h.Hash.String() || m.Node != "a" {
		t.Fatalf("meta %+v, want digest %s origin %d content %s", m, want.Digest, want.Origin, h.Hash)
	}
	restored := openDB(t)
	if _, err := st.Restore(ctx, "main", restored); err != nil {
		t.Fatal(err)
	}
	if got := restored.Digest(); got != want {
		t.Fatalf("restored digest %+v, want %+v", got, want)
	}

	obj, err := js.ObjectStore(ctx, snapshot.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := obj.GetInfo(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "good.sqlite")
	if err := obj.GetFile(ctx, "main", good); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		edit     string            // SQL run on the file before upload
		metadata map[string]string // replaces these metadata keys ("" deletes)
		refused  string            // what the error names; "" accepted
	}{
		{name: "content edited", edit: "UPDATE t SET x = 3 WHERE x = 2", refused: "content hash"},
		{name: "other digest", metadata: map[string]string{snapshot.MetaDigest: strings.Repeat("ab", 32)}, refused: "running digest"},
		{name: "other origin", metadata: map[string]string{snapshot.MetaDigestOrigin: "1"}, refused: "origin"},
		{name: "older node", metadata: map[string]string{snapshot.MetaDigest: "", snapshot.MetaDigestOrigin: "", snapshot.MetaDigestFormat: "", snapshot.MetaContent: ""}},
		{name: "older node, content edited", edit: "UPDATE t SET x = 3 WHERE x = 2", metadata: map[string]string{snapshot.MetaDigest: "", snapshot.MetaDigestOrigin: "", snapshot.MetaDigestFormat: "", snapshot.MetaContent: ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "up.sqlite")
			copyFile(t, good, file)
			if c.edit != "" {
				plainExec(t, file, c.edit)
			}
			md := map[string]string{}
			for k, v := range orig.Metadata {
				md[k] = v
			}
			for k, v := range c.metadata {
				if v == "" {
					delete(md, k)
				} else {
					md[k] = v
				}
			}
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := obj.Put(ctx, jetstream.ObjectMeta{Name: "main", Metadata: md}, f); err != nil {
				t.Fatal(err)
			}
			d := openDB(t)
			_, err = st.Restore(ctx, "main", d)
			if c.refused == "" {
				if err != nil {
					t.Fatalf("restore: %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, snapshot.ErrMismatch) || !strings.Contains(err.Error(), c.refused) {
				t.Fatalf("restore: %v, want ErrMismatch naming the %s", err, c.refused)
			}
			if d.Applied() != 0 {
				t.Fatalf("a refused snapshot was applied: at %d", d.Applied())
			}
		})
	}
}

func copyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	in, err := os.Open(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
}

// plainExec edits a file with a plain SQLite connection (an operator's
// sqlite3 shell), holding apply.SQLiteRandomness() as code beside nodes
// must.
func plainExec(tb testing.TB, path, q string) {
	tb.Helper()
	mu := apply.SQLiteRandomness()
	mu.Lock()
	defer mu.Unlock()
	c, err := sqlite.OpenConn(path, sqlite.OpenReadWrite)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	s, _, err := c.PrepareTransient(q)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Finalize()
	if _, err := s.Step(); err != nil {
		tb.Fatal(err)
	}
}
