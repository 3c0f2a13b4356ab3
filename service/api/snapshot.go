package api

import "time"

// SnapshotBucket is the JetStream Object Store bucket holding one snapshot
// per database (object name: the database name) and objects uploaded for
// loads (load/<db>/<id>).
const SnapshotBucket = "NQLITE_SNAPSHOTS"

// SnapshotReply is the reply of nqlite.snapshot.<db>: the stored snapshot.
type SnapshotReply struct {
	DB     string    `json:"db"`
	Object string    `json:"object"`
	Bucket string    `json:"bucket"`
	Seq    uint64    `json:"seq"` // stream sequence the snapshot holds
	Node   string    `json:"node"`
	Time   time.Time `json:"time"`
	Pages  int64     `json:"pages"`  // SQLite page count
	Size   uint64    `json:"size"`   // bytes
	Digest string    `json:"digest"` // "SHA-256=<base64url>"
	// Taken is true when this request uploaded the snapshot, false when the
	// stored one already held the node's applied sequence.
	Taken bool `json:"taken"`
}

// SnapshotRequest is the body of a nqlite.snapshot.<db> request (an empty
// body is the zero value): the node first waits until it has applied
// AfterSeq, so the snapshot holds it; TimeoutMS bounds the request in
// milliseconds (default 10 minutes).
type SnapshotRequest struct {
	AfterSeq  uint64 `json:"after_seq,omitempty"`
	TimeoutMS int    `json:"timeout_ms,omitempty"`
}

// LoadRequest is the body of a nqlite.load.<db> request: the object (a
// SQLite file, or SQL text with SQL true) already uploaded to Bucket, and
// its digest as the Object Store reports it ("SHA-256=...").
//
// WALObject and WALDigest name the database's write-ahead log (FILE-wal of
// a SQLite file in WAL mode whose committed transactions are not all
// checkpointed into FILE), uploaded to Bucket too: the node that receives
// the request merges the two with SQLite into one new object, which the
// load entry names, and deletes both.
type LoadRequest struct {
	Bucket    string `json:"bucket"`
	Object    string `json:"object"`
	Digest    string `json:"digest"`
	SQL       bool   `json:"sql"`
	WALObject string `json:"wal_object,omitempty"`
	WALDigest string `json:"wal_digest,omitempty"`
	TimeoutMS int    `json:"timeout_ms,omitempty"`
}

// LoadReply answers a load: the stream sequence at which every node
// switched to the loaded database.
type LoadReply struct {
	Seq  uint64 `json:"seq"`
	Node string `json:"node"`
}
