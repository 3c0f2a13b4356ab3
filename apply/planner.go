package apply

import (
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// SQLite plans a statement from the schema and statistics it holds in
// memory, and those depend on the connection's history, not only on the
// file: ALTER TABLE reloads the schema without what ANALYZE had loaded,
// sqlite3AnalysisLoad (ANALYZE, ANALYZE sqlite_schema) leaves the row count
// of a table whose statistics went away as it was, and a cached prepared
// statement keeps the plan it was compiled with after ANALYZE (which
// expires nothing). A node restored from a snapshot or restarted loads
// both afresh, so its plans could differ from a node that ran the same
// entries, and with them which rows a LIMIT without a total order takes,
// the order of group_concat(), how often random() is evaluated (found by
// TestDeterminism).
//
// So after every statement on the apply connection that changed the
// schema or the statistics (stmtInfo.planner), the connection drops its
// prepared statements and its in-memory schema, as a newly opened one
// would have none, and reads them again from the database on its next
// statement. Every node then plans each statement from the same state:
// what a new connection loads from the file as it is at that point.
// SQLite has no API for this (ROLLBACK and closing do it), so it is
// reached by name (go:linkname): sqlite3ResetAllSchemasOfConnection and
// sqlite3ExpirePreparedStatements; TestDB_PlannerState guards it.

//go:linkname sqliteResetAllSchemas modernc.org/sqlite/lib._sqlite3ResetAllSchemasOfConnection
func sqliteResetAllSchemas(tls *libc.TLS, db uintptr)

//go:linkname sqliteExpirePrepared modernc.org/sqlite/lib._sqlite3ExpirePreparedStatements
func sqliteExpirePrepared(tls *libc.TLS, db uintptr, code int32)

// resetPlanner drops the apply connection's prepared statements and
// in-memory schema. No statement may be running. Virtual tables flush what
// they hold first (their instances are replaced when the schema is read
// again).
func (c *conn) resetPlanner() error {
	for _, q := range []string{"SAVEPOINT nqlite_reload", "RELEASE nqlite_reload"} {
		if err := c.exec(q); err != nil {
			return err
		}
	}
	for el := c.lru.Front(); el != nil; el = el.Next() {
		el.Value.(*cachedStmt).stmt.Finalize()
	}
	c.lru.Init()
	clear(c.cache)
	db := (*lib.Tsqlite3)(*(*unsafe.Pointer)(unsafe.Pointer(&c.handle)))
	// Keep SQLite's note that this transaction changed the schema: a later
	// ROLLBACK resets the schema again only if it is set.
	changed := db.FmDbFlags & lib.DBFLAG_SchemaChange
	sqliteExpirePrepared(c.tls, c.handle, 0)
	sqliteResetAllSchemas(c.tls, c.handle)
	db.FmDbFlags |= changed
	return c.refreshSchema()
}
