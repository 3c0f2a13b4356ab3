// Package snapshot stores consistent SQLite snapshots of nqlite databases
// in the JetStream Object Store and restores nodes from them. It knows
// JetStream's Object Store and KV and package apply, not micro, and never
// touches the entry stream: purging the entries a stored snapshot covers
// is asked of package service/stream (Stream.PurgeBelow) by the service,
// right after Take stored the snapshot.
//
// One object per database (its name is the database name) in the bucket
// NQLITE_SNAPSHOTS; its metadata holds the stream sequence the snapshot
// contains, the node that took it, the time, the SQLite page count, the
// database's running digest at that sequence (with its origin and format)
// and the file's content hash (apply.HashFile). The Object Store checks
// the SHA-256 digest of the bytes on every read; Fetch also checks that
// the file's content hash and its own running digest are the ones the
// metadata names (ErrMismatch), so a snapshot whose file was changed after
// it was made is refused.
//
// Only one node uploads a database's snapshot at a time: it first creates
// the key <db> in the KV bucket NQLITE_SNAPSHOT_CLAIMS (Create fails when
// the key exists: JetStream's compare-and-set on the key's revision), and
// deletes it when done. The bucket's TTL (1 hour by default) frees the
// claim of a node that died while uploading: JetStream's clock, not
// nqlite's. Under the claim, the uploader reads the stored snapshot's
// sequence and uploads only a newer one, so an older snapshot never
// replaces a newer one.
//
// Load objects (load/<db>/<id>, uploaded by nqctl restore) are loaded once
// and carry the sequence of the load entry naming them (MetaLoadSeq);
// after an upload, Take deletes those the new snapshot covers, and
// FetchLoad gives a node that meets such an entry later the snapshot in
// their place. See DESIGN.md.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
)

// Bucket is the Object Store bucket holding one snapshot per database.
const Bucket = api.SnapshotBucket

// ClaimBucket is the KV bucket whose key <db> marks the node uploading.
const ClaimBucket = "NQLITE_SNAPSHOT_CLAIMS"

// Object metadata keys.
const (
	MetaSeq   = "nqlite-seq"
	MetaNode  = "nqlite-node"
	MetaTime  = "nqlite-time"
	MetaPages = "nqlite-pages"
	// MetaLoadSeq, on a load object (see LoadPrefix), is the stream
	// sequence of the load entry that names it, recorded by the node that
	// published the entry.
	MetaLoadSeq = "nqlite-load-seq"
	// MetaDigest is the database's running digest at MetaSeq (64 hex
	// digits, apply.Digest.String), MetaDigestOrigin its chain's origin,
	// MetaDigestFormat its format; MetaContent is the snapshot file's
	// content hash (hex). Snapshots made before digests have none.
	MetaDigest       = "nqlite-digest"
	MetaDigestOrigin = "nqlite-digest-origin"
	MetaDigestFormat = "nqlite-digest-format"
	MetaContent      = "nqlite-content"
)

// ErrMismatch is wrapped by Fetch and Restore when the downloaded file is
// not what the snapshot's metadata says: its content hash or the running
// digest it holds differs. The object is refused (not retried).
var ErrMismatch = errors.New("snapshot does not match its metadata")

// ErrBusy is returned by Take when another node is uploading a snapshot of
// the same database: the normal outcome of a race for the claim.
var ErrBusy = errors.New("another node is uploading a snapshot of this database")

// ErrLoadBusy is returned by ClaimLoad when another load of the same
// database is in progress.
var ErrLoadBusy = errors.New("another load of this database is in progress")

// ErrNoSnapshot is returned when the store holds no snapshot of a database.
var ErrNoSnapshot = errors.New("no snapshot stored")

// Options configure Open.
type Options struct {
	// Node is this node's id, recorded in the snapshots it uploads and in
	// its claims.
	Node string
	// Replicas of the buckets: the same as the streams'.
	Replicas int
	// ClaimTTL frees the claim of a node that died while uploading
	// (default 1 hour; an upload must finish within it).
	ClaimTTL time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Store is the snapshot store of a JetStream domain.
type Store struct {
	obj    jetstream.ObjectStore
	claims jetstream.KeyValue
	node   string
	log    *slog.Logger
}

// Open creates or updates the buckets.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.ClaimTTL <= 0 {
		opts.ClaimTTL = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	obj, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      Bucket,
		Description: "nqlite snapshots, one object per database",
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", Bucket, err)
	}
	claims, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      ClaimBucket,
		Description: "nqlite: the node uploading each database's snapshot",
		TTL:         opts.ClaimTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", ClaimBucket, err)
	}
	return &Store{obj: obj, claims: claims, node: opts.Node, log: opts.Logger}, nil
}

// Meta describes a stored snapshot.
type Meta struct {
	DB     string    `json:"db"`
	Object string    `json:"object"`
	Bucket string    `json:"bucket"`
	Seq    uint64    `json:"seq"`
	Node   string    `json:"node"`
	Time   time.Time `json:"time"`
	Pages  int64     `json:"pages"`
	Size   uint64    `json:"size"`
	// Digest is the object's SHA-256 digest ("SHA-256=<base64url>"), as
	// the Object Store keeps it.
	Digest string `json:"digest"`
	// RunningDigest is the database's running digest at Seq (hex; "" for
	// a snapshot made before digests), DigestOrigin and DigestFormat its
	// chain's origin and format (apply.DigestState); Content is the
	// snapshot file's content hash (hex, apply.ContentHash.Hash).
	RunningDigest string `json:"running_digest,omitempty"`
	DigestOrigin  uint64 `json:"digest_origin,omitempty"`
	DigestFormat  int    `json:"digest_format,omitempty"`
	Content       string `json:"content,omitempty"`
}

func metaOf(info *jetstream.ObjectInfo) (*Meta, error) {
	m := &Meta{DB: info.Name, Object: info.Name, Bucket: info.Bucket, Size: info.Size, Digest: info.Digest, Node: info.Metadata[MetaNode]}
	seq, err := strconv.ParseUint(info.Metadata[MetaSeq], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: bad %s metadata %q", info.Name, MetaSeq, info.Metadata[MetaSeq])
	}
	m.Seq = seq
	m.Pages, _ = strconv.ParseInt(info.Metadata[MetaPages], 10, 64)
	m.RunningDigest, m.Content = info.Metadata[MetaDigest], info.Metadata[MetaContent]
	if v, ok := info.Metadata[MetaDigestOrigin]; ok {
		if m.DigestOrigin, err = strconv.ParseUint(v, 10, 64); err != nil {
			return nil, fmt.Errorf("snapshot %s: bad %s metadata %q", info.Name, MetaDigestOrigin, v)
		}
	}
	if v, ok := info.Metadata[MetaDigestFormat]; ok {
		if m.DigestFormat, err = strconv.Atoi(v); err != nil {
			return nil, fmt.Errorf("snapshot %s: bad %s metadata %q", info.Name, MetaDigestFormat, v)
		}
	}
	m.Time, _ = time.Parse(time.RFC3339Nano, info.Metadata[MetaTime])
	return m, nil
}

// Latest returns the stored snapshot of db, or ErrNoSnapshot.
func (s *Store) Latest(ctx context.Context, db string) (*Meta, error) {
	info, err := s.obj.GetInfo(ctx, db)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNoSnapshot
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", db, err)
	}
	return metaOf(info)
}

// Take snapshots d (database name db) into dir and uploads it, unless the
// stored snapshot already holds d's applied sequence. It returns the
// stored snapshot's Meta and whether this call uploaded it; ErrBusy when
// another node holds the claim.
//
// After an upload it deletes the load objects the new snapshot covers
// (DeleteLoads); TakeWith can also purge the stream (TakeOptions.Purge).
func (s *Store) Take(ctx context.Context, db string, d *apply.DB, dir string) (*Meta, bool, error) {
	return s.TakeWith(ctx, db, d, dir, TakeOptions{})
}

// TakeOptions change what Take uploads, and what it does after.
type TakeOptions struct {
	// Replace uploads a snapshot at the stored one's sequence too (never
	// an older one): a node healing from a divergence needs one made by a
	// node the others vouch for, and the stored one may be the diverged
	// node's own.
	Replace bool
	// Purge, when set, is asked after an upload to remove the entries of
	// the database's stream the new snapshot covers, keeping the Retain
	// entries below its sequence so that nodes slightly behind still
	// catch up from the stream; nothing is purged while the sequence is at
	// most Retain+1. The entry stream's owner (service/stream.Stream)
	// implements it: this package keeps the Object Store and the claim,
	// and never touches the entry stream itself.
	Purge  Purger
	Retain uint64
}

// Purger removes the messages of a database's entry stream below a
// sequence (JetStream's purge up to a sequence) and returns the stream's
// new first sequence, 0 when there was nothing to purge.
type Purger interface {
	PurgeBelow(ctx context.Context, keep uint64) (uint64, error)
}

// TakeWith is Take with options.
func (s *Store) TakeWith(ctx context.Context, db string, d *apply.DB, dir string, o TakeOptions) (*Meta, bool, error) {
	release, err := s.claim(ctx, db)
	if errors.Is(err, errClaimed) {
		return nil, false, ErrBusy
	}
	if err != nil {
		return nil, false, fmt.Errorf("claim snapshot of %s: %w", db, err)
	}
	defer release()
	latest, err := s.Latest(ctx, db)
	if err != nil && !errors.Is(err, ErrNoSnapshot) {
		return nil, false, err
	}
	if latest != nil && (latest.Seq > d.Applied() || latest.Seq == d.Applied() && !o.Replace) {
		return latest, false, nil
	}
	f, err := os.CreateTemp(dir, db+".snapshot-*.sqlite")
	if err != nil {
		return nil, false, err
	}
	tmp := f.Name()
	f.Close()
	os.Remove(tmp) // VACUUM INTO wants a path that does not exist
	defer os.Remove(tmp)
	info, err := d.Snapshot(ctx, tmp)
	if err != nil {
		return nil, false, err
	}
	if latest != nil && (info.Seq < latest.Seq || info.Seq == latest.Seq && !o.Replace) {
		return latest, false, nil
	}
	f, err = os.Open(tmp)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	md := map[string]string{
		MetaSeq:     strconv.FormatUint(info.Seq, 10),
		MetaNode:    s.node,
		MetaTime:    time.Now().UTC().Format(time.RFC3339Nano),
		MetaPages:   strconv.FormatInt(info.Pages, 10),
		MetaContent: info.Content.String(),
	}
	if info.Digest.Format != 0 {
		md[MetaDigest] = info.Digest.Digest.String()
		md[MetaDigestOrigin] = strconv.FormatUint(info.Digest.Origin, 10)
		md[MetaDigestFormat] = strconv.Itoa(info.Digest.Format)
	}
	oi, err := s.obj.Put(ctx, jetstream.ObjectMeta{
		Name:        db,
		Description: fmt.Sprintf("nqlite database %s as of stream sequence %d", db, info.Seq),
		Metadata:    md,
	}, f)
	if err != nil {
		return nil, false, fmt.Errorf("upload snapshot of %s: %w", db, err)
	}
	m, err := metaOf(oi)
	if err != nil {
		return nil, false, err
	}
	s.log.Info("snapshot stored", "db", db, "seq", m.Seq, "bytes", m.Size, "pages", m.Pages, "digest", m.RunningDigest, "content", m.Content)
	if n, err := s.DeleteLoads(ctx, db, m.Seq); err != nil {
		s.log.Warn("delete load objects the snapshot covers (tried again after the next snapshot)", "db", db, "seq", m.Seq, "deleted", n, "err", err)
	} else if n > 0 {
		s.log.Info("load objects deleted: the stored snapshot covers their load entries", "db", db, "snapshot_seq", m.Seq, "deleted", n)
	}
	if o.Purge != nil && m.Seq > o.Retain+1 {
		first, err := o.Purge.PurgeBelow(ctx, m.Seq-o.Retain)
		if err != nil {
			return m, true, fmt.Errorf("purge the entries snapshot %d of %s covers: %w", m.Seq, db, err)
		}
		if first > 0 {
			s.log.Info("stream purged", "db", db, "first_seq", first, "snapshot_seq", m.Seq)
		}
	}
	return m, true, nil
}

var errClaimed = errors.New("claimed by another node")

// claim creates key in the claims bucket (JetStream compare-and-set) and
// returns the function that deletes it. It returns errClaimed when the
// key exists or another node created it first: KeyValue.Create reports a
// race lost on a deleted key as JetStream's "wrong last sequence" error
// (code 10071, or 10164 on replicated streams) rather than ErrKeyExists.
func (s *Store) claim(ctx context.Context, key string) (func(), error) {
	if _, err := s.claims.Create(ctx, key, []byte(s.node)); err != nil {
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) &&
			(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)) {
			return nil, errClaimed
		}
		return nil, err
	}
	return func() {
		// A fresh context: the claim must go even when ctx is done.
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.claims.Delete(dctx, key); err != nil {
			s.log.Warn("release claim (it expires by the bucket's TTL)", "key", key, "err", err)
		}
	}, nil
}

// ClaimLoad makes this node the only one serving a load request for db,
// from checking the object to recording its entry's sequence (key
// load.<db> of the claims bucket, freed by its TTL if the node dies). It
// returns the function that releases the claim, or ErrLoadBusy.
func (s *Store) ClaimLoad(ctx context.Context, db string) (func(), error) {
	release, err := s.claim(ctx, "load."+db)
	if errors.Is(err, errClaimed) {
		return nil, ErrLoadBusy
	}
	if err != nil {
		return nil, fmt.Errorf("claim load of %s: %w", db, err)
	}
	return release, nil
}

// LoadPrefix is the name prefix of db's load objects in Bucket,
// "load/<db>/": nqctl restore uploads there, a load request may name no
// other object under "load/", each is loaded once (its MetaLoadSeq is
// recorded), and DeleteLoads deletes them once a snapshot covers their
// entry.
func LoadPrefix(db string) string { return "load/" + db + "/" }

// LoadSeq returns the load entry sequence recorded on a load object.
func LoadSeq(info *jetstream.ObjectInfo) (uint64, bool) {
	v, ok := info.Metadata[MetaLoadSeq]
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(v, 10, 64)
	return seq, err == nil
}

// MarkLoad records seq, the sequence of the load entry naming it, on the
// load object name of Bucket (metadata MetaLoadSeq; the rest of its
// metadata is kept).
func (s *Store) MarkLoad(ctx context.Context, name string, seq uint64) error {
	info, err := s.obj.GetInfo(ctx, name)
	if err != nil {
		return fmt.Errorf("record load entry %d on %s: %w", seq, name, err)
	}
	meta := info.ObjectMeta
	md := make(map[string]string, len(meta.Metadata)+1)
	for k, v := range meta.Metadata {
		md[k] = v
	}
	md[MetaLoadSeq] = strconv.FormatUint(seq, 10)
	meta.Metadata = md
	if err := s.obj.UpdateMeta(ctx, name, meta); err != nil {
		return fmt.Errorf("record load entry %d on %s: %w", seq, name, err)
	}
	return nil
}

// DeleteLoads deletes db's load objects (LoadPrefix) whose recorded load
// entry sequence is at most seq, the sequence of a stored snapshot: no
// node needs them any more, as a node that has not applied such an entry
// yet takes the snapshot instead (FetchLoad). Objects with no recorded
// sequence (uploaded but never named by an entry, or the publishing node
// died before recording it) are left alone. It returns how many it
// deleted.
func (s *Store) DeleteLoads(ctx context.Context, db string, seq uint64) (int, error) {
	objs, err := s.obj.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", Bucket, err)
	}
	n := 0
	for _, info := range objs {
		if !strings.HasPrefix(info.Name, LoadPrefix(db)) {
			continue
		}
		if ls, ok := LoadSeq(info); !ok || ls > seq {
			continue
		}
		if err := s.obj.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return n, fmt.Errorf("delete %s: %w", info.Name, err)
		}
		n++
	}
	return n, nil
}

// Fetch downloads the stored snapshot of db into a temporary file in dir
// (streamed: memory stays bounded), verifies its SHA-256 digest (the
// Object Store checks it at the end of the read), the SQLite file
// (quick_check, applied sequence) and, when the metadata names them, the
// file's content hash (apply.HashFile, which reads the whole file) and the
// running digest it holds: a difference is an error wrapping ErrMismatch,
// not retried. A snapshot whose metadata has neither (made by a node
// before digests) is accepted, and logged. It returns the file's path: the
// caller moves or removes it.
//
// A download that does not finish within its time budget (see
// fetchBudget: the object may have been replaced by a newer snapshot and
// its chunks purged mid-read, which leaves the read waiting) is started
// again, on the newest snapshot, up to 5 times.
func (s *Store) Fetch(ctx context.Context, db, dir string) (string, *Meta, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		path, m, err := s.fetchOnce(ctx, db, dir)
		if err == nil || errors.Is(err, ErrNoSnapshot) || errors.Is(err, ErrMismatch) || ctx.Err() != nil {
			return path, m, err
		}
		lastErr = err
		// Usually the race it exists for (a newer snapshot replaced the
		// object mid-read); the caller reports a download that keeps failing.
		s.log.Info("snapshot download failed, starting again", "db", db, "attempt", attempt+1, "err", err)
	}
	return "", nil, lastErr
}

// download copies the object res into f and closes res. It returns when
// the copy ends or, sooner, when ctx is done: the Object Store's reader
// gives up only at its context's deadline (cancellation does not wake a
// blocked read, and Close waits for the read), so a download stalled by
// the network would otherwise hold up whoever cancelled it, a stopping
// node among them, for the rest of its fetchBudget. An abandoned copy
// ends at that deadline in the background. On an error f is closed and
// its file removed (an abandoned copy's when it ends); on success f is
// left open for the caller.
func download(ctx context.Context, f *os.File, res io.ReadCloser) error {
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(f, res)
		res.Close()
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		go func() {
			if <-done == nil {
				f.Close()
				os.Remove(f.Name())
			}
		}()
		return ctx.Err()
	}
}

// fetchBudget is how long one download of size bytes may take: 20 s plus
// 4 MB/s. The Object Store's reader only gives up at its context's
// deadline (cancellation does not interrupt a blocked read), so the
// deadline is what bounds a stalled download nobody cancels (download
// returns at a cancellation, and leaves the read to end here).
func fetchBudget(size uint64) time.Duration {
	return 20*time.Second + time.Duration(size/(4<<20))*time.Second
}

func (s *Store) fetchOnce(parent context.Context, db, dir string) (string, *Meta, error) {
	stored, err := s.obj.GetInfo(parent, db)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", nil, ErrNoSnapshot
	}
	if err != nil {
		return "", nil, fmt.Errorf("fetch snapshot of %s: %w", db, err)
	}
	ctx, cancel := context.WithTimeout(parent, fetchBudget(stored.Size))
	defer cancel()
	res, err := s.obj.Get(ctx, db)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", nil, ErrNoSnapshot
	}
	if err != nil {
		return "", nil, fmt.Errorf("fetch snapshot of %s: %w", db, err)
	}
	oi, err := res.Info()
	if err != nil {
		res.Close()
		return "", nil, err
	}
	m, err := metaOf(oi)
	if err != nil {
		res.Close()
		return "", nil, err
	}
	f, err := os.CreateTemp(dir, filepath.Base(db)+".restore-*.sqlite")
	if err != nil {
		res.Close()
		return "", nil, err
	}
	path := f.Name()
	if err := download(ctx, f, res); err != nil {
		return "", nil, fmt.Errorf("fetch snapshot of %s (digest check included): %w", db, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return "", nil, err
	}
	f.Close()
	info, err := apply.ReadSnapshotInfo(parent, path) // local work: not the download's budget
	if err != nil {
		os.Remove(path)
		return "", nil, fmt.Errorf("snapshot of %s is not usable: %w", db, err)
	}
	if info.Seq != m.Seq {
		os.Remove(path)
		return "", nil, fmt.Errorf("snapshot of %s holds sequence %d but its metadata says %d", db, info.Seq, m.Seq)
	}
	if err := s.check(parent, db, path, info, m); err != nil { // local work: not the download's budget
		os.Remove(path)
		return "", nil, err
	}
	return path, m, nil
}

// check compares the downloaded snapshot file at path (info read from it)
// with what its metadata m says: its content hash and its running digest.
func (s *Store) check(ctx context.Context, db, path string, info apply.SnapshotInfo, m *Meta) error {
	if m.Content == "" && m.RunningDigest == "" {
		s.log.Info("snapshot carries no digest (made by an older node): accepted unchecked", "db", db, "seq", m.Seq, "taken_by", m.Node)
		return nil
	}
	if m.RunningDigest != "" {
		switch {
		case info.Digest.Format == 0:
			return fmt.Errorf("snapshot of %s at %d: %w: the file holds no running digest, the metadata says %s", db, m.Seq, ErrMismatch, m.RunningDigest)
		case info.Digest.Digest.String() != m.RunningDigest:
			return fmt.Errorf("snapshot of %s at %d: %w: the file's running digest is %s, the metadata says %s", db, m.Seq, ErrMismatch, info.Digest.Digest, m.RunningDigest)
		case info.Digest.Origin != m.DigestOrigin || info.Digest.Format != m.DigestFormat:
			return fmt.Errorf("snapshot of %s at %d: %w: the file's digest has origin %d format %d, the metadata says origin %d format %d",
				db, m.Seq, ErrMismatch, info.Digest.Origin, info.Digest.Format, m.DigestOrigin, m.DigestFormat)
		}
	}
	if m.Content != "" {
		h, err := apply.HashFile(ctx, path)
		if err != nil {
			return fmt.Errorf("snapshot of %s is not usable: %w", db, err)
		}
		if got := h.Hash.String(); got != m.Content {
			return fmt.Errorf("snapshot of %s at %d: %w: the file's content hash is %s, the metadata says %s", db, m.Seq, ErrMismatch, got, m.Content)
		}
	}
	return nil
}

// Restore fetches the stored snapshot of db and makes it d's database
// (apply.DB.Replace). The caller must have stopped d's apply loop.
func (s *Store) Restore(ctx context.Context, db string, d *apply.DB) (*Meta, error) {
	path, m, err := s.Fetch(ctx, db, filepath.Dir(d.Path()))
	if err != nil {
		return nil, err
	}
	if err := d.Replace(path); err != nil {
		os.Remove(path)
		return nil, err
	}
	s.log.Info("restored from snapshot", "db", db, "seq", m.Seq, "bytes", m.Size, "taken_by", m.Node)
	return m, nil
}

// FetchLoad is the apply.Loader of database db: it fetches the object of
// the load entry at seq (FetchObject). When that object is refused (gone,
// another digest) but the stored snapshot holds seq, it fetches that
// snapshot instead and reports snap: load objects are deleted once a
// snapshot covers their entry (DeleteLoads), and the snapshot holds the
// load's outcome, whatever it was, so every node ends up the same.
func (s *Store) FetchLoad(ctx context.Context, js jetstream.JetStream, db string, seq uint64, l *apply.Load, dir string) (path string, snap bool, err error) {
	path, err = FetchObject(ctx, js, l, dir)
	if err == nil || !errors.Is(err, apply.ErrLoadInvalid) {
		return path, false, err
	}
	latest, lerr := s.Latest(ctx, db)
	if errors.Is(lerr, ErrNoSnapshot) || (lerr == nil && latest.Seq < seq) {
		return "", false, err // refused the same way by every node
	}
	if lerr != nil {
		return "", false, lerr // cannot tell yet: try again
	}
	path, _, err = s.Fetch(ctx, db, dir)
	if err != nil {
		return "", false, err
	}
	return path, true, nil
}

// FetchObject downloads object of bucket into a new file in dir, for a
// load entry: the object must exist and have the given digest
// ("SHA-256=..."); otherwise the error wraps apply.ErrLoadInvalid, which
// every node sees the same. Other errors (JetStream unreachable) are
// transient. The download has a deadline of its own (fetchBudget), as an
// object deleted mid-read leaves the read waiting.
func FetchObject(ctx context.Context, js jetstream.JetStream, l *apply.Load, dir string) (string, error) {
	obj, err := js.ObjectStore(ctx, l.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return "", fmt.Errorf("%w: no bucket %s", apply.ErrLoadInvalid, l.Bucket)
	}
	if err != nil {
		return "", err
	}
	stored, err := obj.GetInfo(ctx, l.Object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", fmt.Errorf("%w: no object %s in bucket %s", apply.ErrLoadInvalid, l.Object, l.Bucket)
	}
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, fetchBudget(stored.Size))
	defer cancel()
	res, err := obj.Get(ctx, l.Object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", fmt.Errorf("%w: no object %s in bucket %s", apply.ErrLoadInvalid, l.Object, l.Bucket)
	}
	if err != nil {
		return "", err
	}
	info, err := res.Info()
	if err != nil {
		res.Close()
		return "", err
	}
	if info.Digest != l.Digest {
		res.Close()
		return "", fmt.Errorf("%w: object %s has digest %s, the entry names %s", apply.ErrLoadInvalid, l.Object, info.Digest, l.Digest)
	}
	f, err := os.CreateTemp(dir, "load-*")
	if err != nil {
		res.Close()
		return "", err
	}
	if err := download(ctx, f, res); err != nil {
		if errors.Is(err, jetstream.ErrDigestMismatch) {
			return "", fmt.Errorf("%w: %v", apply.ErrLoadInvalid, err)
		}
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
