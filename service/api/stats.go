package api

// Stats is the endpoint data of a node's reply to a micro STATS request
// ($SRV.STATS.nqlite): one per endpoint, describing its database. Nodes
// fill it (package service); clients decode it (service/client, nqctl).
//
// Sequences are JetStream stream sequences of the database's stream
// (StreamName).
type Stats struct {
	DB            string `json:"db"`
	Node          string `json:"node"`
	Applied       uint64 `json:"applied_seq"`
	StreamLastSeq uint64 `json:"stream_last_seq"`
	// Lag is StreamLastSeq - Applied (0 when the node is ahead of the
	// stream info it read).
	Lag     uint64 `json:"lag"`
	Skipped uint64 `json:"skipped"` // stream messages that were not valid entries, skipped
	Waiting int64  `json:"waiting"` // requests waiting for this node to apply a sequence
	// Publishing is how many entries of write requests this node is
	// publishing now (0 or 1: one at a time per database), WritesQueued
	// how many write requests wait meanwhile to be coalesced into its
	// next entry (see Write coalescing in the README).
	Publishing   int `json:"publishing"`
	WritesQueued int `json:"writes_queued"`
	// State is "serving"; "restoring" while the node replaces its
	// database with a snapshot; "incompatible" once it met an entry of a
	// newer format (it stopped applying: upgrade it); "diverged" while its
	// running digest differs from the majority's (it heals from a
	// snapshot); "offline", "failing", "starting" (see the README).
	// Requests get 503 in every state but serving (offline serves level
	// none reads). Nodes older than snapshots leave it empty.
	State string `json:"state"`
	// SnapshotSeq is the sequence of the latest stored snapshot this node
	// knows of (0: none).
	SnapshotSeq uint64 `json:"snapshot_seq"`
	// Restores counts restores from a snapshot while running (self-healing
	// after a purge), since start.
	Restores uint64 `json:"restores"`
	// ForeignSQLite counts entries applied since start that a node on
	// another SQLite version accepted (see Rolling upgrades in the README).
	ForeignSQLite uint64 `json:"foreign_sqlite"`
	// StreamAgeMS is how old StreamLastSeq is, in milliseconds (-1: never
	// read): a node reports the stream state it already knows (from
	// deliveries, acknowledgements, strong reads, a background refresh
	// when it is over a second old) and never waits for JetStream.
	StreamAgeMS int64 `json:"stream_age_ms"`
	// StreamError is set when the node's last refresh of the stream state
	// failed.
	StreamError string `json:"stream_error,omitempty"`
	// Digest is the node's running digest as of Applied (64 hex digits;
	// empty from nodes before the digest). See Divergence in the README.
	Digest string `json:"digest,omitempty"`
	// CheckpointSeq is the latest checkpoint this node compared with the
	// others' (0: none yet); CheckpointNodes how many nodes (this one
	// included) reported a comparable digest for it; CheckpointStatus the
	// comparison: "agrees" (a majority of them hold this node's digest),
	// "differs" (a majority holds another: this node is diverged), "split"
	// (no majority: the operator decides), "alone" (no other node
	// reported it yet).
	CheckpointSeq    uint64 `json:"checkpoint_seq,omitempty"`
	CheckpointNodes  int    `json:"checkpoint_nodes,omitempty"`
	CheckpointStatus string `json:"checkpoint_status,omitempty"`
	// DivergedSeq is the first checkpoint at which this node's digest
	// differs from the majority's (0: none); set while State is
	// "diverged".
	DivergedSeq uint64 `json:"diverged_seq,omitempty"`
	// Heals counts restores from an agreeing node's snapshot after a
	// divergence, since start.
	Heals uint64 `json:"heals,omitempty"`
	// CheckpointError is set when the node could not publish or read
	// checkpoints lately (it keeps serving: a missing checkpoint is not a
	// divergence).
	CheckpointError string `json:"checkpoint_error,omitempty"`
}
