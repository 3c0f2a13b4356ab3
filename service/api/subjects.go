package api

// The NATS names of nqlite's wire contract. Nodes (package service) and
// clients (service/client, nqctl) both use these functions, so a subject
// is spelled in one place.

// ServiceName is the NATS micro service name every node registers; micro
// control requests ($SRV.PING.nqlite, $SRV.STATS.nqlite...) use it.
const ServiceName = "nqlite"

// QueueGroup is the micro queue group of every endpoint: a request goes to
// exactly one node (the nearest, by NATS queue-group routing).
const QueueGroup = "nqlite"

// QuerySubject returns the request subject of database db:
// nqlite.query.<db>. It takes reads and writes.
func QuerySubject(db string) string { return "nqlite.query." + db }

// ReadSubject returns the read-only request subject of database db:
// nqlite.read.<db>. Requests there never write: a statement that would is
// refused with 403 before anything is published, so operators can grant
// read-only access with NATS subject permissions (allow nqlite.read.>,
// deny nqlite.query.>).
func ReadSubject(db string) string { return "nqlite.read." + db }

// SnapshotSubject returns the subject that takes a snapshot of db now:
// nqlite.snapshot.<db>. The body is empty or a SnapshotRequest; the reply
// a SnapshotReply.
func SnapshotSubject(db string) string { return "nqlite.snapshot." + db }

// LoadSubject returns the subject that replaces database db with an object
// of the Object Store: nqlite.load.<db>. The body is a LoadRequest; the
// reply a LoadReply.
func LoadSubject(db string) string { return "nqlite.load." + db }

// EntrySubject returns the subject entries of db are published on:
// nqlite.entry.<db>. Only nodes publish there; operators may deny clients
// publishing to nqlite.entry.>.
func EntrySubject(db string) string { return "nqlite.entry." + db }

// StreamName returns the JetStream stream of db: NQLITE_<db>.
func StreamName(db string) string { return "NQLITE_" + db }

// LoadObjectPrefix returns the Object Store name prefix of objects
// uploaded to load database db: "load/<db>/" (the object is
// load/<db>/<id>, in SnapshotBucket).
func LoadObjectPrefix(db string) string { return "load/" + db + "/" }

// The headers of a request-level error: micro's number (400, 403, 408,
// 413, 500, 503, 504) and message, and nqlite's machine-readable kind
// ("not_stored", ...; see Error). The body is then (*Error).Body's
// {"error": "...", "code": "...", "node": "...", "seq": N}.
const (
	ErrorCodeHeader = "Nats-Service-Error-Code"
	ErrorHeader     = "Nats-Service-Error"
	ErrorKindHeader = "Nqlite-Error-Code"
)
