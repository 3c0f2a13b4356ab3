package api

import (
	"encoding/hex"
	"strconv"
	"strings"
)

// CheckpointBucket is the JetStream KV bucket where nodes publish their
// running digests (Checkpoint) so they can compare them without talking
// to each other: key <db>.<seq>.<node> (CheckpointKey), one value per node
// and checkpoint, kept for the bucket's max age.
const CheckpointBucket = "NQLITE_CHECKPOINTS"

// DigestFormat is the format of the running digest this version computes
// (apply's digest format; see apply/DESIGN.md, "Running digest"). Nodes
// compare only checkpoints of the same format and origin.
const DigestFormat = 1

// Checkpoint is one node's running digest of a database as of one applied
// stream sequence: the value (JSON) of CheckpointKey(DB, Seq, Node) in
// CheckpointBucket. A node publishes one at every multiple of its
// checkpoint interval, at every snapshot it stores, and for any sequence
// another node published a checkpoint of that it can still tell
// (apply.DB.DigestAt).
type Checkpoint struct {
	DB   string `json:"db"`
	Seq  uint64 `json:"seq"`
	Node string `json:"node"`
	// Digest is the running digest after entry Seq, 64 lowercase hex
	// digits (SHA-256).
	Digest string `json:"digest"`
	// Origin is the sequence the node's digest chain started at (0 for a
	// database created empty): digests of different origins are not
	// comparable.
	Origin uint64 `json:"origin"`
	// Format is the digest's format (DigestFormat).
	Format int `json:"format"`
}

// Comparable reports whether c and o can be compared: same database,
// sequence, format and origin.
func (c Checkpoint) Comparable(o Checkpoint) bool {
	return c.DB == o.DB && c.Seq == o.Seq && c.Format == o.Format && c.Origin == o.Origin
}

// HealRequest is the value of HealKey(db, node) in CheckpointBucket: a
// diverged node asks the agreeing nodes for a snapshot newer than Seq that
// it can restore from (the stored one is its own, or no majority vouches
// for it).
type HealRequest struct {
	DB   string `json:"db"`
	Node string `json:"node"`
	// Seq: the snapshot must hold at least this sequence.
	Seq uint64 `json:"seq"`
}

// CheckpointKey returns the KV key of node's checkpoint of db at seq:
// <db>.<seq>.<node>, the node id encoded by KeyToken.
func CheckpointKey(db string, seq uint64, node string) string {
	return db + "." + strconv.FormatUint(seq, 10) + "." + KeyToken(node)
}

// HealKey returns the KV key of node's heal request for db:
// <db>.heal.<node>.
func HealKey(db, node string) string { return db + ".heal." + KeyToken(node) }

// CheckpointFilter returns the KV key filter of every key of db: <db>.>.
func CheckpointFilter(db string) string { return db + ".>" }

// ParseCheckpointKey splits a key of CheckpointBucket: a checkpoint's
// (seq > 0, heal false), or a heal request's (heal true); ok is false for
// any other key.
func ParseCheckpointKey(key string) (db string, seq uint64, heal, ok bool) {
	parts := strings.SplitN(key, ".", 3)
	if len(parts) != 3 {
		return "", 0, false, false
	}
	if parts[1] == "heal" {
		return parts[0], 0, true, true
	}
	seq, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil || seq == 0 {
		return "", 0, false, false
	}
	return parts[0], seq, false, true
}

// KeyToken returns s as a KV key token: s itself when it holds only
// A-Z a-z 0-9 - _ = (JetStream's key characters, without the dot and
// slash), else "x" and the hex of its bytes. Values carry the id itself.
func KeyToken(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '=') {
			return "x" + hex.EncodeToString([]byte(s))
		}
	}
	if s == "" || s == "heal" {
		return "x" + hex.EncodeToString([]byte(s))
	}
	return s
}

// ContentSubject returns the subject that asks every node (no queue group:
// each node answers) for the content hash of database db:
// nqlite.check.<db>. The body is a ContentRequest, the reply a
// ContentReply. nqctl check uses it.
func ContentSubject(db string) string { return "nqlite.check." + db }

// ContentRequest asks for the content hash of a database as of applied
// sequence Seq: a node behind Seq waits (up to TimeoutMS) and stops there
// for the hash; a node already past it answers ErrorKind "passed" with its
// applied sequence, so the asker tries again at a later sequence.
type ContentRequest struct {
	Seq       uint64 `json:"seq"`
	TimeoutMS int    `json:"timeout_ms,omitempty"`
}

// ContentReply is one node's answer to a ContentRequest.
type ContentReply struct {
	Node string `json:"node"`
	DB   string `json:"db"`
	// Seq is the applied sequence the hash is of; Applied the node's
	// applied sequence when it answered.
	Seq     uint64 `json:"seq"`
	Applied uint64 `json:"applied_seq"`
	// Hash is the content hash of the whole database (every table's rows
	// in key order and the schema, independent of page layout), 64 hex
	// digits; Tables the hash of each table (and of the schema, as
	// "sqlite_schema").
	Hash   string            `json:"hash,omitempty"`
	Tables map[string]string `json:"tables,omitempty"`
	// Error says why there is no hash; Passed is true when the node was
	// already past Seq.
	Error  string `json:"error,omitempty"`
	Passed bool   `json:"passed,omitempty"`
}
