package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nqlite/nqlite/service/api"
)

// CheckOptions say how Check collects replies.
type CheckOptions struct {
	// Gather bounds each round of replies as for Stats (Wait default: the
	// timeout plus 5s; Expect: the number of nodes, when known, ends a
	// round early).
	Gather StatsOptions
	// Timeout is how long a node behind the sequence waits to reach it
	// (default 10s).
	Timeout time.Duration
	// Rounds bounds the tries at a later sequence when a node is already
	// past the one asked for (writes going on), default 5.
	Rounds int
}

// CheckResult is every node's content hash of one database at one applied
// sequence.
type CheckResult struct {
	DB  string
	Seq uint64
	// Replies are the nodes' answers, sorted by node; a reply with Error
	// has no hash.
	Replies []api.ContentReply
}

// Agree reports whether every reply has a hash and all hashes are equal.
func (r *CheckResult) Agree() bool {
	for _, rep := range r.Replies {
		if rep.Hash == "" || rep.Hash != r.Replies[0].Hash {
			return false
		}
	}
	return len(r.Replies) > 0
}

// Majority returns the hash more than half of the replies hold ("" when
// none does).
func (r *CheckResult) Majority() string {
	count := map[string]int{}
	for _, rep := range r.Replies {
		if rep.Hash != "" {
			count[rep.Hash]++
		}
	}
	for h, k := range count {
		if 2*k > len(r.Replies) {
			return h
		}
	}
	return ""
}

// DifferingTables returns, for a reply, the tables whose hash differs
// from the majority's reply (or, without a majority, from the first
// reply's), in name order: tables missing on either side included.
func (r *CheckResult) DifferingTables(rep api.ContentReply) []string {
	var ref *api.ContentReply
	want := r.Majority()
	for i := range r.Replies {
		if r.Replies[i].Hash != "" && (want == "" || r.Replies[i].Hash == want) {
			ref = &r.Replies[i]
			break
		}
	}
	if ref == nil || ref.Node == rep.Node || rep.Hash == "" {
		return nil
	}
	var out []string
	for t, h := range ref.Tables {
		if rep.Tables[t] != h {
			out = append(out, t)
		}
	}
	for t := range rep.Tables {
		if _, ok := ref.Tables[t]; !ok {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// Check asks every node for the content hash of database db as of one
// applied sequence (nqlite.check.<db>; see api.ContentRequest): seq, or,
// for 0, the highest applied sequence the nodes report in micro STATS.
// When a node is already past the sequence (writes go on), it asks again
// at the highest sequence a node reported, up to o.Rounds times. No node
// answering wraps ErrNoNode.
func (c *Client) Check(ctx context.Context, db string, seq uint64, o CheckOptions) (*CheckResult, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 5
	}
	if o.Gather.Wait <= 0 {
		o.Gather.Wait = o.Timeout + 5*time.Second
	}
	if o.Gather.Quiet <= 0 {
		o.Gather.Quiet = 2 * time.Second
	}
	if seq == 0 || o.Gather.Expect == 0 {
		stats, err := c.Stats(ctx, StatsOptions{})
		if err != nil {
			return nil, err
		}
		nodes := 0
		for _, s := range stats {
			if s.DB == db {
				nodes++
				if seq == 0 || o.Gather.Expect == 0 {
					seq = max(seq, s.Applied)
				}
			}
		}
		if nodes == 0 {
			return nil, fmt.Errorf("%w: no node serves database %s", ErrNoNode, db)
		}
		if o.Gather.Expect == 0 {
			o.Gather.Expect = nodes
		}
	}
	var last *CheckResult
	for round := 0; round < o.Rounds; round++ {
		body, _ := json.Marshal(api.ContentRequest{Seq: seq, TimeoutMS: int(o.Timeout / time.Millisecond)})
		res := &CheckResult{DB: db, Seq: seq}
		err := c.gather(ctx, api.ContentSubject(db), body, o.Gather, "check "+db, func(data []byte, _ time.Duration) bool {
			var rep api.ContentReply
			// An error answer's body ({"error": ..., "node": ...}) decodes
			// as a reply with Error.
			if json.Unmarshal(data, &rep) != nil || rep.Node == "" {
				return false
			}
			res.Replies = append(res.Replies, rep)
			return true
		})
		if err != nil {
			return nil, err
		}
		sort.Slice(res.Replies, func(i, j int) bool { return res.Replies[i].Node < res.Replies[j].Node })
		last = res
		passed, next := false, seq
		for _, rep := range res.Replies {
			if rep.Passed {
				passed = true
			}
			next = max(next, rep.Applied)
		}
		if !passed {
			return res, nil
		}
		if next == seq {
			next++
		}
		seq = next
	}
	if last == nil {
		return nil, errors.New("check: no round ran")
	}
	return last, nil
}
