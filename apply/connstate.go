package apply

import (
	"strings"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// The apply connection must be in the same state at the start of every
// entry on every node, whatever the batching, restarts and restores: the
// state a fresh connection and a fresh transaction would have. SQLite
// keeps some of it where no API reaches, so a few internal functions of
// modernc's translation are reached by name (go:linkname), like raw.go
// reaches zombiezen's handles; TestDB_PlannerState,
// TestDB_VirtualTableBatching and TestDeterminism (seeds 1055 and 1058)
// fail if they stop working.

// resetEntry gives the apply connection the state of a new transaction on
// a new connection at the start of every entry:
//
//   - every writable virtual table has joined the transaction at the same
//     savepoint level (joinVirtualTables);
//   - virtual tables flush what they hold back: FTS5 keeps an entry's
//     terms in memory until the next savepoint or commit, and its flush
//     runs statements that would change changes() and last_insert_rowid()
//     in the middle of a later entry's statement, and group several
//     entries' terms into one index segment;
//   - the b-tree forgets which pages the transaction freed (BtShared's
//     pHasContent, otherwise cleared at commit): SQLite journals a reused
//     free page only if it was freed in the current transaction, so a
//     statement or savepoint rolled back after reusing free pages left
//     their new bytes on one node and the old ones on a node that had
//     freed them earlier in the same batch (found by TestDeterminism).
//     Forgetting is safe here: no savepoint spans entries, and in WAL
//     mode a rollback of the whole transaction needs no journal;
//   - last_insert_rowid() and changes() start at 0;
//   - no idle statement keeps parameters bound by an earlier entry
//     (clearIdleBindings).
func (db *DB) resetEntry() error {
	w := db.w
	if !w.vtabsKnown || w.anyVtab {
		// Without a virtual table every statement is nqlite's own: the
		// walk over the connection's statements (about 1.5 us of a 10 us
		// entry with a hundred cached, BenchmarkApply) is skipped.
		w.clearIdleBindings()
	}
	if err := w.joinVirtualTables(); err != nil {
		return err
	}
	if w.vtabsInTx() {
		for _, q := range []string{"SAVEPOINT nqlite_entry", "RELEASE nqlite_entry"} {
			if err := w.exec(q); err != nil {
				return err
			}
		}
	}
	w.clearHasContent()
	w.setLastInsertRowID(0)
	return w.exec("DELETE FROM _nqlite_meta WHERE 0")
}

// joinVirtualTables makes every writable virtual table (FTS5, R*Tree,
// Geopoly) join the batch transaction, if it has not yet, before the
// entry's first statement. A virtual table joins a transaction at its
// first write and from then on takes part in every savepoint, and FTS5
// decides when to flush its pending terms into a new index segment from
// the savepoint level it joined at: an FTS5 table written by an earlier
// entry of the batch got other segments than one joining in this entry
// (found by TestDeterminism, seed 1058). Joined at the start of every
// entry, at the same level, every table behaves the same whatever the
// batching. A table that cannot be opened fails the same way on every
// node when used; it is skipped here.
func (c *conn) joinVirtualTables() error {
	if !c.vtabsKnown {
		c.rec.internal = true
		defer func() { c.rec.internal = false }()
		c.vtabs, c.anyVtab = c.vtabs[:0], false
		cs, err := c.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'")
		if err != nil {
			return err
		}
		for {
			row, err := cs.stmt.Step()
			if err != nil {
				cs.release()
				return err
			}
			if !row {
				break
			}
			c.anyVtab = true
			if m := vtabModule(cs.stmt.ColumnText(1)); allowedModules[m] && m != "fts5vocab" {
				c.vtabs = append(c.vtabs, cs.stmt.ColumnText(0))
			}
		}
		cs.release()
		c.vtabsKnown = true
	}
	for _, name := range c.vtabs {
		c.exec("DELETE FROM " + quoteIdent(name) + " WHERE 0") // joins; an error is every node's
	}
	return nil
}

// clearIdleBindings sets every parameter of every statement of the
// connection that is not running to NULL (sqlite3_clear_bindings).
// Virtual tables keep their own prepared statements for the connection's
// life, and FTS5 does not bind every parameter before each use: with
// contentless_delete=1, a new row's placeholder in %_docsize is
// inserted by a statement whose third parameter (the origin) still holds
// the value of its previous use on this connection, and is NULL on a
// connection that never used it (a node restarted since). The row is
// replaced at once, so the file is the same either way, but the
// pre-update hook sees the placeholder: the bytes a request writes and
// the running digest differed between a node that had restarted and one
// that had not (TestDB_IdleBindings). nqlite binds all of its own
// statements' parameters before every use, so clearing them changes
// nothing else. It is done for every entry version: the old behaviour was
// not the same on every node to begin with.
func (c *conn) clearIdleBindings() {
	for s := lib.Xsqlite3_next_stmt(c.tls, c.handle, 0); s != 0; s = lib.Xsqlite3_next_stmt(c.tls, c.handle, s) {
		if lib.Xsqlite3_stmt_busy(c.tls, s) == 0 {
			lib.Xsqlite3_clear_bindings(c.tls, s)
		}
	}
}

// vtabsInTx reports whether a virtual table takes part in the current
// transaction (sqlite3.nVTrans).
func (c *conn) vtabsInTx() bool {
	return (*lib.Tsqlite3)(ptr(&c.handle)).FnVTrans > 0
}

// vtabModule returns the lower-case module name of a CREATE VIRTUAL TABLE
// statement ("" if none).
func vtabModule(sql string) string {
	f := strings.Fields(strings.ToLower(sql))
	for i, w := range f {
		if w == "using" && i+1 < len(f) {
			m, _, _ := strings.Cut(f[i+1], "(")
			return strings.Trim(m, `"'`+"`[]")
		}
	}
	return ""
}

//go:linkname btreeClearHasContent modernc.org/sqlite/lib._btreeClearHasContent
func btreeClearHasContent(tls *libc.TLS, pBt uintptr)

// ptr turns a C pointer held in a uintptr into an unsafe.Pointer.
func ptr(p *uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(p)) }

// clearHasContent clears the main database's BtShared.pHasContent.
func (c *conn) clearHasContent() {
	db := (*lib.Tsqlite3)(ptr(&c.handle))
	main := (*lib.TDb)(ptr(&db.FaDb))
	bt := (*lib.TBtree)(ptr(&main.FpBt))
	btreeClearHasContent(c.tls, bt.FpBt)
}

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
	if c.vtabsInTx() {
		for _, q := range []string{"SAVEPOINT nqlite_reload", "RELEASE nqlite_reload"} {
			if err := c.exec(q); err != nil {
				return err
			}
		}
	}
	for el := c.lru.Front(); el != nil; el = el.Next() {
		el.Value.(*cachedStmt).stmt.Finalize()
	}
	c.lru.Init()
	clear(c.cache)
	c.vtabsKnown = false
	db := (*lib.Tsqlite3)(ptr(&c.handle))
	// Keep SQLite's note that this transaction changed the schema: a later
	// ROLLBACK resets the schema again only if it is set.
	changed := db.FmDbFlags & lib.DBFLAG_SchemaChange
	sqliteExpirePrepared(c.tls, c.handle, 0)
	sqliteResetAllSchemas(c.tls, c.handle)
	db.FmDbFlags |= changed
	return c.refreshSchema()
}
