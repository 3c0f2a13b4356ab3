package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/snapshot"
)

// LoadSubject returns the subject that replaces database db with an object
// of the Object Store: nqlite.load.<db>.
func LoadSubject(db string) string { return "nqlite.load." + db }

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
	e := apply.Entry{Node: n.cfg.NodeID, Token: nuid.Next(), Time: time.Now().UnixMilli(), Seed: rand.Int64(),
		Load: &apply.Load{Bucket: req.Bucket, Object: req.Object, Digest: req.Digest, SQL: req.SQL}}
	outcome, stop := d.db.Await(e.Token)
	defer stop()
	ack, err := n.js.PublishMsg(ctx, &nats.Msg{Subject: EntrySubject(d.name), Data: e.Encode()}, jetstream.WithExpectStream(d.stream))
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "JetStream did not store the load entry: %v", err)
	}
	select {
	case o := <-outcome:
		if len(o.Results) == 1 && o.Results[0].Error != "" {
			return nil, api.Errorf(api.CodeBadRequest, "entry %d: %s", o.Seq, o.Results[0].Error)
		}
		return &LoadReply{Seq: o.Seq, Node: n.cfg.NodeID}, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, api.Errorf(api.CodeTimeout, "load entry %d is stored and will be applied, but this node did not apply it within timeout_ms", ack.Sequence)
		}
		return nil, fmt.Errorf("load entry %d: %w", ack.Sequence, ctx.Err())
	}
}
