package service

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
)

// checkHandler serves nqlite.check.<db> (every node answers, no queue
// group): the content hash of the database as of one applied sequence
// (apply.DB.ContentHashAt: every table's rows in key order and the
// schema, independent of page layout). The body is an api.ContentRequest
// (empty: the node's applied sequence now); the reply an
// api.ContentReply, whose Error says why there is no hash (Passed: the
// node is past the sequence asked for, ask again at a later one). A
// diverged node answers too: the check is how an operator sees it.
func (n *Node) checkHandler(d *database) func(*request) {
	return func(r *request) {
		var req api.ContentRequest
		if len(r.Data()) > 0 {
			if err := json.Unmarshal(r.Data(), &req); err != nil {
				n.fail(d, r, api.Errorf(api.CodeBadRequest, `check request: %v (send nothing, or {"seq": N, "timeout_ms": M})`, err))
				return
			}
		}
		if req.TimeoutMS <= 0 {
			req.TimeoutMS = api.DefaultTimeoutMS
		}
		reply := api.ContentReply{Node: n.cfg.NodeID, DB: d.name, Seq: req.Seq}
		if d.db == nil {
			reply.Error = "the database is not open yet (state " + d.getState().String() + ")"
		} else {
			ctx, cancel := context.WithTimeout(n.ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
			defer cancel()
			seq := req.Seq
			if seq == 0 {
				seq = d.db.Applied()
			}
			h, err := d.db.ContentHashAt(ctx, seq)
			reply.Seq, reply.Applied = seq, d.db.Applied()
			switch {
			case err == nil:
				reply.Hash = h.Hash.String()
				reply.Tables = make(map[string]string, len(h.Tables))
				for t, dg := range h.Tables {
					reply.Tables[t] = dg.String()
				}
			case errors.Is(err, apply.ErrPassed):
				reply.Passed, reply.Error = true, err.Error()
			default:
				reply.Error = err.Error()
			}
		}
		b, _ := json.Marshal(reply)
		if err := r.Respond(b); err != nil {
			n.log.Warn("respond", "db", d.name, "err", err)
		}
	}
}
