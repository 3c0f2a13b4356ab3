package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nqlite/nqlite/service/api"
)

// adminWait bounds a snapshot or load request when ctx has no deadline
// and the request sets no timeout: the nodes' own default (10 minutes)
// plus a second.
const adminWait = 10*time.Minute + time.Second

// Snapshot asks a node serving db (nqlite.snapshot.<db>) for a snapshot
// holding at least r.AfterSeq: the node waits until it has applied it,
// then stores a snapshot in the Object Store unless the stored one is
// already as new. The reply names the object (Download reads it) and its
// sequence. Errors as for Send; a node's refusal is an *api.Error (503
// unavailable when another node is uploading a snapshot of db: retry;
// 504 not_reached when the node did not apply AfterSeq in time).
func (c *Client) Snapshot(ctx context.Context, db string, r api.SnapshotRequest) (*api.SnapshotReply, error) {
	return adminCall[api.SnapshotReply](ctx, c, db, api.SnapshotSubject(db), "snapshot of "+db, r, r.TimeoutMS)
}

// adminCall sends request r (JSON) to subject of database db and decodes
// the reply into a T, waiting adminWait, or timeoutMS plus a second when
// r has a timeout_ms. Errors are prefixed with what.
func adminCall[T any](ctx context.Context, c *Client, db, subject, what string, r any, timeoutMS int) (*T, error) {
	if !api.ValidDBName(db) {
		return nil, fmt.Errorf("database name %q: use 1-64 of A-Z a-z 0-9 _ -", db)
	}
	body, _ := json.Marshal(r)
	wait := adminWait
	if timeoutMS > 0 {
		wait = time.Duration(timeoutMS)*time.Millisecond + time.Second
	}
	msg, err := c.request(ctx, db, subject, body, wait)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := replyError(msg); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var reply T
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return nil, fmt.Errorf("%s: decode reply: %w", what, err)
	}
	return &reply, nil
}

// Download copies the snapshot object snap names from the Object Store to
// w and returns the bytes written. The Object Store checks the object's
// SHA-256 digest as the last bytes are read: a mismatch is an error, so
// whatever w holds must be thrown away on any error.
func (c *Client) Download(ctx context.Context, snap *api.SnapshotReply, w io.Writer) (int64, error) {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return 0, fmt.Errorf("download: %w", err)
	}
	obj, err := js.ObjectStore(ctx, snap.Bucket)
	if err != nil {
		return 0, fmt.Errorf("download: bucket %s: %w", snap.Bucket, err)
	}
	res, err := obj.Get(ctx, snap.Object)
	if err != nil {
		return 0, fmt.Errorf("download: object %s: %w", snap.Object, err)
	}
	defer res.Close()
	n, err := io.Copy(w, res)
	if err != nil {
		return n, fmt.Errorf("download %s: %w", snap.Object, err)
	}
	return n, nil
}

// LoadOptions describe what Load uploads.
type LoadOptions struct {
	// SQL says the content is SQL text (a dump), run on an empty database;
	// otherwise it is a SQLite database file.
	SQL bool
	// Description is stored with the object (e.g. the file's name).
	Description string
	// TimeoutMS bounds the load request on the node, in milliseconds (0:
	// the node's default of 10 minutes).
	TimeoutMS int
}

// Load replaces database db on every node with the content of r: it
// uploads r to the Object Store as load/<db>/<id> in api.SnapshotBucket
// (any size: the store chunks it), then asks a node (nqlite.load.<db>) to
// publish one load entry naming the object and its digest. Every node
// switches to it at the same stream sequence, returned in the reply. The
// object stays in the bucket: nodes replaying the entry later need it.
func (c *Client) Load(ctx context.Context, db string, r io.Reader, o LoadOptions) (*api.LoadReply, error) {
	if !api.ValidDBName(db) {
		return nil, fmt.Errorf("database name %q: use 1-64 of A-Z a-z 0-9 _ -", db)
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", db, err)
	}
	obj, err := js.ObjectStore(ctx, api.SnapshotBucket)
	if err != nil {
		return nil, fmt.Errorf("load %s: bucket %s (do the nodes have snapshots enabled?): %w", db, api.SnapshotBucket, err)
	}
	name := api.LoadObjectPrefix(db) + nuid.Next()
	info, err := obj.Put(ctx, jetstream.ObjectMeta{Name: name, Description: o.Description}, r)
	if err != nil {
		return nil, fmt.Errorf("load %s: upload: %w", db, err)
	}
	return c.LoadObjects(ctx, db, api.LoadRequest{Bucket: api.SnapshotBucket, Object: name, Digest: info.Digest, SQL: o.SQL, TimeoutMS: o.TimeoutMS})
}

// LoadObjects asks a node serving db (nqlite.load.<db>) to publish one
// load entry for objects the caller has already put in the Object Store
// (r names them: the content, and for a SQLite file in WAL mode its -wal,
// which the node merges into one object first); Load is this after one
// upload. Use it to upload with your own progress display, or a -wal
// beside the file, as nqctl restore does. Name the objects under
// api.LoadObjectPrefix(db) in r.Bucket (api.SnapshotBucket). Errors as
// for Send; a node's refusal is an *api.Error: 400 (api.CodeBadRequest)
// when the request or the objects are bad (nothing names them then: the
// caller may delete them), 503 when another load or snapshot of db is in
// progress.
func (c *Client) LoadObjects(ctx context.Context, db string, r api.LoadRequest) (*api.LoadReply, error) {
	return adminCall[api.LoadReply](ctx, c, db, api.LoadSubject(db), "load "+db, r, r.TimeoutMS)
}
