package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/snapshot"
)

// LoadSubject returns the subject that replaces database db with an object
// of the Object Store (see api.LoadSubject).
func LoadSubject(db string) string { return api.LoadSubject(db) }

// LoadRequest is the body of a nqlite.load.<db> request.
type LoadRequest = api.LoadRequest

// LoadReply answers a load.
type LoadReply = api.LoadReply

// loader returns the apply.Loader of d: load objects, or the stored
// snapshot once it covers a load entry whose object was deleted.
func (n *Node) loader(d *database) apply.Loader {
	return func(ctx context.Context, seq uint64, l *apply.Load, dir string) (string, bool, error) {
		return n.store().FetchLoad(ctx, n.js, d.name, seq, l, dir)
	}
}

// loadHandler serves nqlite.load.<db>: it checks the object, publishes one
// load entry, and answers once this node has applied it.
func (n *Node) loadHandler(d *database) func(*request) {
	return func(r *request) {
		func() {
			reply, err := n.load(d, r.Data())
			if err != nil {
				n.fail(d, r, err)
				return
			}
			b, _ := json.Marshal(reply)
			r.Respond(b)
		}()
	}
}

// load serves one load request, under the database's load claim (one
// load of a database at a time, cluster-wide):
//
//  1. the objects must exist with the digests named; one under "load/" of
//     the snapshot bucket must be under load/<db>/ and not loaded before
//     (load objects are used once, so that the sequence recorded on each
//     is the only entry naming it, and DeleteLoads can go by it);
//  2. the node fetches the object and prepares it as every node will when
//     applying the entry (apply.PrepareLoadFile, apply.CheckLoadSQL): a file
//     every node would refuse is refused here with 400 and nothing is
//     published; with a -wal object, the prepared file (the two merged)
//     is uploaded as a new load object, named by the entry instead, and
//     the two uploaded objects are deleted once the entry is stored;
//  3. it publishes the load entry, waits for this node to apply it, and
//     records the entry's sequence on the load object (MetaLoadSeq).
func (n *Node) load(d *database, data []byte) (*LoadReply, error) {
	if n.store() == nil || d.stream() == nil {
		return nil, errOffline(d, api.KindUnavailable, "a load needs JetStream")
	}
	var req LoadRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "load request: %v (want {\"bucket\", \"object\", \"digest\", \"sql\"})", err)
	}
	if req.Bucket == "" || req.Object == "" || req.Digest == "" {
		return nil, api.Errorf(api.CodeBadRequest, "load request: bucket, object and digest are required")
	}
	if (req.WALObject == "") != (req.WALDigest == "") {
		return nil, api.Errorf(api.CodeBadRequest, "load request: wal_object and wal_digest go together")
	}
	if req.WALObject != "" && req.SQL {
		return nil, api.Errorf(api.CodeBadRequest, "load request: a wal_object goes with a SQLite file, not SQL text")
	}
	for _, o := range []string{req.Object, req.WALObject} {
		if req.Bucket == snapshot.Bucket && strings.HasPrefix(o, "load/") && !strings.HasPrefix(o, snapshot.LoadPrefix(d.name)) {
			return nil, api.Errorf(api.CodeBadRequest, "load request: object %s: load objects of %s are under %s (other databases' are deleted by their own snapshots)", o, d.name, snapshot.LoadPrefix(d.name))
		}
	}
	if req.TimeoutMS <= 0 {
		req.TimeoutMS = 10 * 60 * 1000
	}
	ctx, cancel := context.WithTimeout(n.ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
	defer cancel()
	release, err := n.store().ClaimLoad(ctx, d.name)
	if errors.Is(err, snapshot.ErrLoadBusy) {
		return nil, api.Errorf(api.CodeUnavailable, "another load of %s is in progress: retry once it is done", d.name)
	}
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "%v", err)
	}
	defer release()
	obj, err := n.js.ObjectStore(ctx, req.Bucket)
	if err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "bucket %s: %v", req.Bucket, err)
	}
	managed := func(name string) bool {
		return req.Bucket == snapshot.Bucket && strings.HasPrefix(name, snapshot.LoadPrefix(d.name))
	}
	check := func(name, digest string) error {
		info, err := obj.GetInfo(ctx, name)
		if err != nil {
			return api.Errorf(api.CodeBadRequest, "object %s in bucket %s: %v", name, req.Bucket, err)
		}
		if info.Digest != digest {
			return api.Errorf(api.CodeBadRequest, "object %s has digest %s, not %s", name, info.Digest, digest)
		}
		if seq, ok := snapshot.LoadSeq(info); ok && managed(name) {
			return api.Errorf(api.CodeBadRequest, "object %s was loaded already, by entry %d: a load object is loaded once (upload the file again to load it again)", name, seq)
		}
		return nil
	}
	if err := check(req.Object, req.Digest); err != nil {
		return nil, err
	}
	if req.WALObject != "" {
		if err := check(req.WALObject, req.WALDigest); err != nil {
			return nil, err
		}
	}
	e := n.newEntry()
	e.Load = &apply.Load{Bucket: req.Bucket, Object: req.Object, Digest: req.Digest, SQL: req.SQL}
	merged, err := n.checkLoad(ctx, d, e, &req)
	if err != nil {
		return nil, err
	}
	resp, err := n.submit(ctx, d, e, &api.Request{TimeoutMS: req.TimeoutMS, Format: api.FormatRows})
	if err != nil {
		return nil, err
	}
	if merged {
		for _, o := range []string{req.Object, req.WALObject} {
			if managed(o) {
				if err := obj.Delete(ctx, o); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
					n.log.Warn("delete the uploaded objects of a merged load (they stay in the bucket)", "db", d.name, "object", o, "err", err)
				}
			}
		}
	}
	if managed(e.Load.Object) {
		if err := n.store().MarkLoad(ctx, e.Load.Object, resp.Seq); err != nil {
			n.log.Warn("record the load entry on its object (it stays in the bucket)", "db", d.name, "seq", resp.Seq, "err", err)
		}
	}
	if len(resp.Results) == 1 && resp.Results[0].Error != "" {
		// Stored and applied alike on every node, which all refused it.
		e := api.Errorf(api.CodeBadRequest, "entry %d: %s", resp.Seq, resp.Results[0].Error)
		e.Seq = resp.Seq
		return nil, e
	}
	return &LoadReply{Seq: resp.Seq, Node: n.cfg.NodeID}, nil
}

// checkLoad fetches the object of load entry e and prepares it as every
// node will when applying e; a file they would refuse is a 400 here. With
// a -wal object, the merged file is uploaded as a new load object, which
// e then names (merged is true).
func (n *Node) checkLoad(ctx context.Context, d *database, e *apply.Entry, req *LoadRequest) (merged bool, err error) {
	dir, err := os.MkdirTemp(n.cfg.DataDir, "load-check-*")
	if err != nil {
		return false, api.NewError(api.KindUnavailable, "this node cannot make a directory to check the load in (%v): nothing was published", err)
	}
	defer os.RemoveAll(dir)
	path, err := snapshot.FetchObject(ctx, n.js, e.Load, dir)
	if err != nil {
		return false, loadCheckErr(ctx, "fetch", req.Object, err)
	}
	if req.SQL {
		if err := apply.CheckLoadSQL(ctx, path, e.Time, e.Seed, e.Budget); err != nil {
			return false, loadCheckErr(ctx, "check", req.Object, err)
		}
		return false, nil
	}
	wal := ""
	if req.WALObject != "" {
		wal, err = snapshot.FetchObject(ctx, n.js, &apply.Load{Bucket: req.Bucket, Object: req.WALObject, Digest: req.WALDigest}, dir)
		if err != nil {
			return false, loadCheckErr(ctx, "fetch", req.WALObject, err)
		}
	}
	if err := apply.PrepareLoadFile(ctx, path, wal); err != nil {
		return false, loadCheckErr(ctx, "check", req.Object, err)
	}
	if wal == "" {
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	obj, err := n.js.ObjectStore(ctx, req.Bucket)
	if err != nil {
		return false, api.Errorf(api.CodeUnavailable, "bucket %s: %v", req.Bucket, err)
	}
	name := snapshot.LoadPrefix(d.name) + nuid.Next()
	info, err := obj.Put(ctx, jetstream.ObjectMeta{
		Name:        name,
		Description: fmt.Sprintf("nqlite load of %s: %s merged with its write-ahead log %s", d.name, req.Object, req.WALObject),
	}, f)
	if err != nil {
		return false, api.Errorf(api.CodeUnavailable, "upload the merged database: %v", err)
	}
	e.Load.Object, e.Load.Digest = name, info.Digest
	return true, nil
}

// loadCheckErr is the answer to a load whose step before publishing
// ("fetch" or "check" of object) failed with err: 400 for a file every
// node would refuse; not_stored when the request's time ran out during
// the step (ctx ended); otherwise unavailable (this node's own trouble,
// such as a full disk or an unreachable Object Store: another node may
// do it). Nothing was published in any case.
func loadCheckErr(ctx context.Context, step, object string, err error) error {
	switch {
	case errors.Is(err, apply.ErrLoadInvalid):
		return api.Errorf(api.CodeBadRequest, "object %s: %v", object, err)
	case ctx.Err() != nil:
		return api.NewError(api.KindNotStored, "the %s of object %s before publishing the load did not end within the request's timeout (%v): nothing was published; retry with a longer timeout_ms", step, object, err)
	default:
		return api.NewError(api.KindUnavailable, "this node could not %s object %s (%v): nothing was published; retry (another node may answer) once the node's trouble is fixed", step, object, err)
	}
}
