package service

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"

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

// loader fetches load objects for apply.
func (n *Node) loader(ctx context.Context, l *apply.Load, dir string) (string, error) {
	return snapshot.FetchObject(ctx, n.js, l, dir)
}

// loadHandler serves nqlite.load.<db>: it checks the object exists with
// that digest, publishes one load entry, and answers once this node has
// applied it.
func (n *Node) loadHandler(d *database) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		n.dispatch(r, func() {
			reply, err := n.load(d, r.Data())
			if err != nil {
				code := api.ErrorCode(err)
				r.Error(strconv.Itoa(code), err.Error(), api.ErrorBody(err.Error(), n.cfg.NodeID))
				return
			}
			b, _ := json.Marshal(reply)
			r.Respond(b)
		})
	})
}

func (n *Node) load(d *database, data []byte) (*LoadReply, error) {
	var req LoadRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "load request: %v (want {\"bucket\", \"object\", \"digest\", \"sql\"})", err)
	}
	if req.Bucket == "" || req.Object == "" || req.Digest == "" {
		return nil, api.Errorf(api.CodeBadRequest, "load request: bucket, object and digest are required")
	}
	if req.TimeoutMS <= 0 {
		req.TimeoutMS = 10 * 60 * 1000
	}
	ctx, cancel := context.WithTimeout(n.ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
	defer cancel()
	obj, err := n.js.ObjectStore(ctx, req.Bucket)
	if err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "bucket %s: %v", req.Bucket, err)
	}
	info, err := obj.GetInfo(ctx, req.Object)
	if err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "object %s in bucket %s: %v", req.Object, req.Bucket, err)
	}
	if info.Digest != req.Digest {
		return nil, api.Errorf(api.CodeBadRequest, "object %s has digest %s, not %s", req.Object, info.Digest, req.Digest)
	}
	e := n.newEntry()
	e.Load = &apply.Load{Bucket: req.Bucket, Object: req.Object, Digest: req.Digest, SQL: req.SQL}
	resp, err := n.submit(ctx, d, e, &api.Request{TimeoutMS: req.TimeoutMS, Format: api.FormatRows})
	if err != nil {
		return nil, err
	}
	if len(resp.Results) == 1 && resp.Results[0].Error != "" {
		return nil, api.Errorf(api.CodeBadRequest, "entry %d: %s", resp.Seq, resp.Results[0].Error)
	}
	return &LoadReply{Seq: resp.Seq, Node: n.cfg.NodeID}, nil
}
