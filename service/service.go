// Package service is nqlite's NATS face: it registers the NATS micro
// service "nqlite", decodes requests on nqlite.query.<db>, answers reads
// from the local database, publishes writes as entries to the database's
// JetStream stream and replies once this node has applied them.
//
// It reaches SQLite only through package apply and JetStream's entry stream
// only through package service/stream. The files follow a request:
// dispatch.go (micro endpoints, workers, replies), query.go (decoding,
// read consistency, classification, local reads), write.go (a writing
// request's entry, its own or coalesced with the requests arriving while
// one is published: append, wait for this node's apply); node.go is the
// node's life cycle and follow.go the apply loop that follows the stream.
// See DESIGN.md beside this file for the trade-offs.
package service

import (
	"github.com/nqlite/nqlite/apply"
	"github.com/nqlite/nqlite/service/api"
)

// Version is the semantic version the node registers with micro.
const Version = "0.1.0"

// ServiceName is the micro service name every node registers.
const ServiceName = api.ServiceName

// QueueGroup is the micro queue group of every endpoint: a request goes to
// exactly one node (the nearest, by NATS queue-group routing).
const QueueGroup = api.QueueGroup

// QuerySubject returns the request subject of database db:
// nqlite.query.<db>.
func QuerySubject(db string) string { return api.QuerySubject(db) }

// ReadSubject returns the read-only request subject of database db:
// nqlite.read.<db>. Requests there never write: a statement that would is
// refused with 403 before anything is published, so operators can grant
// read-only access with NATS subject permissions (allow nqlite.read.>,
// deny nqlite.query.>).
func ReadSubject(db string) string { return api.ReadSubject(db) }

// MaxStatements is the most statements one request may hold.
const MaxStatements = 10000

// Defaults and limit of the entry budget (Config.MaxEntrySteps,
// Config.MaxEntryBytes; see apply.Budget).
const (
	DefaultMaxEntrySteps = apply.DefaultSteps
	DefaultMaxEntryBytes = apply.DefaultBytes
	MaxEntrySteps        = apply.MaxSteps
)

// EntrySubject returns the subject entries of db are published on:
// nqlite.entry.<db>. Operators may deny clients publishing to nqlite.entry.>.
func EntrySubject(db string) string { return api.EntrySubject(db) }

// StreamName returns the JetStream stream of db: NQLITE_<db>.
func StreamName(db string) string { return api.StreamName(db) }
