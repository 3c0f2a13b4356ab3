// Package nqsql is a database/sql driver for nqlite, registered as
// "nqlite". It speaks nqlite's NATS API through package client and links
// no SQLite.
//
//	import _ "github.com/nqlite/nqlite/service/client/nqsql"
//
//	db, err := sql.Open("nqlite", "nats://127.0.0.1:4222?db=main&timeout=5s")
//
// or, on a NATS connection the program already has:
//
//	db := sql.OpenDB(nqsql.NewConnector(nc, nqsql.WithDB("main")))
//
// # DSN
//
//	[SERVERS][?PARAM=VALUE&...]
//
// SERVERS is one NATS URL or several separated by commas
// (nats://host:4222, tls://..., nats://user:password@host:4222). Parameters
// (unknown ones are an error):
//
//	db            database (default main)
//	level         read consistency of queries: none (default) or strong
//	timeout       timeout of each request, a Go duration (default: the server's, 5s)
//	readonly      true: send everything to nqlite.read.<db> (writes are refused)
//	creds         NATS credentials file
//	nkey          nkey seed file
//	user, password, token
//	tls_cert, tls_key, tls_ca, tls_first
//	inbox_prefix  custom reply subject prefix
//	context       a nats CLI context (~/.config/nats/context/NAME.json) filling
//	              what the DSN leaves empty
//	name          the NATS connection name (default nqsql)
//
// With no SERVERS (a DSN such as "?db=main", or ""), the connection is
// resolved as nqctl resolves it: the NATS_URL, NATS_CREDS, NATS_USER...
// variables, then the context named by context=, $NATS_CONTEXT or the one
// selected with `nats context select`, then nats://127.0.0.1:4222. With
// SERVERS given, only the DSN (and its context=, if any) is used. The
// connector dials NATS on first use, keeps one connection for the whole
// pool (reconnecting forever) and closes it with the *sql.DB.
//
// # Values
//
// Values are exact: INTEGER scans as int64 (decoded without float64, so
// 9007199254740993 stays itself), REAL as float64, TEXT as string, BLOB
// as []byte, NULL as nil. Parameters are bound the same way; bool binds as
// INTEGER 1 or 0, a nil []byte as NULL (an empty non-nil one is an empty
// BLOB); unsigned integers above math.MaxInt64 are refused.
//
// A time.Time parameter is stored as TEXT, in UTC, in the layout
// "2006-01-02 15:04:05.999999999-07:00" (mattn/go-sqlite3's first layout):
// 2024-05-01 12:30:00.5+00:00. It sorts as time, and SQLite's date and time
// functions read it. TEXT in a column declared DATE, DATETIME or TIMESTAMP
// scans back as a time.Time (in UTC unless the text has another offset);
// text that is not a date stays a string, and integers stay int64. Rows
// report their columns' declared types through
// sql.ColumnType.DatabaseTypeName (upper case, without a length:
// VARCHAR(20) is VARCHAR; "" for expressions).
//
// # Statements
//
// Positional (?, ?NNN) and named (sql.Named: :name, @name, $name)
// parameters are bound on the node. A call with parameters holds one
// statement. Exec without parameters may hold several statements
// separated by ';': they go in one request, and so in one stream entry,
// but each succeeds or fails alone, as in nqlite (a failed one is
// reported as a *StatementError, the others still ran); wrap them in
// BEGIN ... COMMIT, or use a sql.Tx, for all or nothing. Query holds one
// statement. A write is answered once the node that took it has applied
// it.
//
// # Per-call options
//
// Arguments of these types are options of the call, not parameters (the
// driver removes them with driver.ErrRemoveArgument):
//
//	nqsql.Strong, nqsql.None       the read consistency of this call
//	nqsql.AfterSeq(n)              read after stream sequence n (e.g. one another program wrote)
//	nqsql.Timeout(d)               this call's timeout
//	nqsql.IdempotencyKey("k")      a write retried with the same key within 2 minutes is applied once
//	(*nqsql.Seq)(&s)               receives the stream sequence of the response
//
//	rows, err := db.QueryContext(ctx, "SELECT * FROM t WHERE id = ?", 7, nqsql.Strong)
//
// # Read-your-writes
//
// The nodes behind one database may lag each other; every request carries
// as after_seq the highest stream sequence the connector has seen in any
// response (writes and reads), so a read through any connection of the
// pool sees every write made through the *sql.DB, and never an older
// state than an earlier read: read-your-writes and monotonic reads within
// the program. Across programs, pass the writer's sequence (Seq) as
// AfterSeq, or read with Strong.
//
// # Transactions
//
// nqlite runs each request as one stream entry, so a transaction cannot
// stay open across requests. A sql.Tx is therefore honest about what it
// is:
//
//   - Exec inside a transaction buffers the statement; Commit sends every
//     buffered statement as one request with transaction: true, which
//     commits all or none on every node, applied in one step in the
//     stream's order. Rollback discards the buffer; nothing was sent.
//   - The Result of an Exec inside a transaction knows nothing before
//     Commit: its LastInsertId and RowsAffected return ErrResultPending
//     until then, the statement's values after a successful Commit, and
//     ErrRolledBack after a failed one or a Rollback.
//   - A failed statement makes Commit return an error wrapping
//     ErrRolledBack and the *StatementError; nothing of the transaction
//     was applied.
//   - Query inside a transaction reads, on the read-only endpoint (a
//     statement that would write is refused), at the after_seq the
//     connector had at BeginTx. It may not follow a buffered Exec
//     (ErrQueryAfterWrite): the buffered writes are not applied yet, so
//     the read could not see them.
//   - A read-only transaction (sql.TxOptions{ReadOnly: true}) is a series
//     of such reads; Exec is refused (ErrReadOnly).
//
// The isolation this gives: the writes of a transaction are atomic and
// serialized with every other write by the stream, and each statement runs
// against the state right before it, so statements that compute from the
// database (UPDATE t SET n = n + 1, INSERT ... SELECT, a WHERE that checks
// a condition) are serializable. The reads of a transaction are read
// committed with read-your-writes: each sees every write committed before
// BeginTx through this connector, but two reads may see different states
// (no snapshot), and values a program reads and then writes back may have
// changed in between (no conflict detection: put the condition in the
// write's SQL). BeginTx accepts sql.LevelDefault, LevelReadUncommitted and
// LevelReadCommitted, and refuses stronger levels with ErrIsolation.
//
// # Transports
//
// The driver reaches a node through a Transport: by default the NATS
// client (NewConnector, a DSN), which encodes each request as the JSON
// object form and sends it to nqlite.query.<db> or nqlite.read.<db>.
// NewTransportConnector takes any other Transport; service/replica's
// Replica is one, which runs the requests on an nqlite node in the same
// process (service.Node.Do), without NATS or JSON. Everything above
// holds on either; the driver itself links no SQLite whatever the
// transport, since a transport's package, not the driver, brings it in.
//
// Errors: a request-level failure wraps the node's *api.Error (its number
// 400, 403, 408, 413, 500, 503 or 504, its kind, and for a stored write
// its Seq), so errors.Is works with client.ErrNotStored (not stored: safe
// to retry), client.ErrStored (stored as entry Seq, not applied on that
// node in time: do not retry; the connector's later requests wait for it,
// and a *Seq argument receives it), client.ErrUnknown (may or may not be
// stored: retry with the same IdempotencyKey) and the other kinds of
// package client; no node serving the database wraps client.ErrNoNode; a
// request too large for NATS is a *client.PayloadError; no reply in time
// a *client.NoReplyError, which also matches client.ErrUnknown. A connection
// of a closed connector is ErrClosed. Text parameters that are not valid
// UTF-8 are refused with a 400 *api.Error (pass bytes as []byte).
package nqsql
