package apply

import (
	"strings"

	"github.com/nqlite/nqlite/service/api"
	"zombiezen.com/go/sqlite"
)

// stmtInfo is what SQLite reported about a statement while preparing it:
// the authorizer's actions (https://sqlite.org/c3ref/set_authorizer.html)
// and sqlite3_stmt_readonly.
type stmtInfo struct {
	// write: the statement changes the database or is transaction control,
	// so it must go through the stream.
	write bool
	// acted: the authorizer saw a write action (INSERT, CREATE, BEGIN...);
	// a statement SQLite calls not read-only without one is VACUUM.
	acted bool
	// pragmaRead: a PRAGMA that only reads (SQLite calls some of those,
	// like journal_mode, not read-only).
	pragmaRead bool
	// dml: a top-level INSERT, UPDATE or DELETE, whose sqlite3_changes()
	// is reported as rows_affected.
	dml bool
	// txOp is "BEGIN", "COMMIT" or "ROLLBACK" for BEGIN/COMMIT/END/ROLLBACK
	// (not ROLLBACK TO).
	txOp string
	// savepoint is set for SAVEPOINT, RELEASE and ROLLBACK TO: spOp is
	// "BEGIN", "RELEASE" or "ROLLBACK", spName the savepoint's name.
	savepoint      bool
	spOp, spName   string
	denied         *api.Error // policy violation, reported instead of SQLite's "not authorized"
	nondeterminism string     // why the statement would differ between nodes if it writes
	// planner: the statement changes the schema or the statistics the
	// query planner reads (connstate.go).
	planner bool
	// rootpage: the statement reads sqlite_schema.rootpage (finish decides);
	// lastRootpageUpdate: the previous action updated it, which only
	// SQLite's own nested statements for DDL do (the read that follows is
	// theirs).
	rootpage, lastRootpageUpdate bool
}

// nondet records the first reason the statement would differ between nodes.
func (info *stmtInfo) nondet(reason string) {
	if info.nondeterminism == "" {
		info.nondeterminism = reason
	}
}

// finish completes what the authorizer recorded once the statement is
// prepared.
func (info *stmtInfo) finish() {
	if info.rootpage {
		info.nondet(errRootpage)
	}
}

const errTemp = "temporary tables, views, triggers and indexes (the temp schema) are not supported: they live in one connection and would differ between nodes; use a regular table"

// reservedPrefix names nqlite's own tables and savepoints.
const reservedPrefix = "_nqlite_"

// recorder is the connection authorizer: it records actions into cur and
// enforces the SQL policy. internal is set while nqlite runs its own
// statements against its reserved tables.
type recorder struct {
	cur      *stmtInfo
	internal bool
}

func (r *recorder) Authorize(a sqlite.Action) sqlite.AuthResult {
	info := r.cur
	if info == nil {
		info = new(stmtInfo) // statement re-prepared by SQLite after a schema change
	}
	deny := func(code int, format string, args ...any) sqlite.AuthResult {
		if info.denied == nil {
			info.denied = api.Errorf(code, format, args...)
		}
		return sqlite.AuthResultDeny
	}
	rootpageUpdate := false
	defer func() { info.lastRootpageUpdate = rootpageUpdate }()
	switch op := a.Type(); op {
	case sqlite.OpSelect, sqlite.OpRecursive:
	case sqlite.OpRead:
		if r.internal {
			break
		}
		switch t := strings.ToLower(a.Table()); {
		case t == "dbstat":
			info.nondet(errDbstat)
		case strings.HasPrefix(t, "pragma_"):
			if reason := pragmaReadReason(t); reason != "" {
				info.nondet(reason)
			}
		case (t == "sqlite_master" || t == "sqlite_schema") && strings.EqualFold(a.Column(), "rootpage") && !info.lastRootpageUpdate:
			info.rootpage = true
		}
	case sqlite.OpFunction:
		name := strings.ToLower(actionArg2(a))
		if name == "load_extension" {
			return deny(api.CodeForbidden, "load_extension() is not allowed")
		}
		if reason, ok := refusedFuncs[name]; ok {
			info.nondet(reason)
		}
	case sqlite.OpTransaction:
		info.write, info.acted = true, true
		info.txOp = strings.ToUpper(a.Operation())
	case sqlite.OpSavepoint:
		info.write, info.acted = true, true
		info.savepoint = true
		info.spOp = strings.ToUpper(a.Operation())
		info.spName = a.Savepoint()
		if strings.HasPrefix(strings.ToLower(info.spName), "nqlite_") && !r.internal {
			return deny(api.CodeBadRequest, "savepoint names starting with nqlite_ are reserved")
		}
	case sqlite.OpAttach, sqlite.OpDetach:
		return deny(api.CodeForbidden, "ATTACH and DETACH are not allowed: an nqlite database is one replicated SQLite file")
	case sqlite.OpCreateTempIndex, sqlite.OpCreateTempTable, sqlite.OpCreateTempTrigger, sqlite.OpCreateTempView,
		sqlite.OpDropTempIndex, sqlite.OpDropTempTable, sqlite.OpDropTempTrigger, sqlite.OpDropTempView:
		return deny(api.CodeBadRequest, errTemp)
	case sqlite.OpPragma:
		return r.pragma(info, a, deny)
	default:
		// INSERT, UPDATE, DELETE, CREATE/DROP/ALTER, ANALYZE, REINDEX, virtual tables.
		info.write, info.acted = true, true
		if t := a.Table(); op != sqlite.OpAnalyze && op != sqlite.OpReindex &&
			strings.HasPrefix(strings.ToLower(t), reservedPrefix) && !r.internal {
			return deny(api.CodeForbidden, "table %s is nqlite's own: it cannot be changed by SQL", t)
		}
		// ALTER TABLE rewrites the temp schema's SQL too (a nested UPDATE
		// of sqlite_temp_master, which holds nothing: temp objects cannot
		// be created); SQL cannot write a schema table (defensive mode).
		if a.Database() == "temp" && !r.internal && !(op == sqlite.OpUpdate && strings.EqualFold(a.Table(), "sqlite_temp_master")) {
			return deny(api.CodeBadRequest, errTemp)
		}
		if (op == sqlite.OpInsert || op == sqlite.OpUpdate || op == sqlite.OpDelete) && a.Accessor() == "" {
			info.dml = true
		}
		switch op {
		case sqlite.OpInsert, sqlite.OpUpdate, sqlite.OpDelete:
			if strings.HasPrefix(strings.ToLower(a.Table()), "sqlite_stat") {
				info.planner = true
			}
		default: // CREATE, DROP, ALTER, ANALYZE, REINDEX, virtual tables
			info.planner = true
		}
		if op == sqlite.OpUpdate && strings.EqualFold(a.Column(), "rootpage") {
			rootpageUpdate = true
		}
		if op == sqlite.OpCreateVTable && !r.internal {
			if reason := moduleReason(a.Module()); reason != "" {
				info.nondet(reason)
			}
		}
	}
	return sqlite.AuthResultOK
}

// Pragmas that only report, with or without an argument.
var introspectionPragmas = map[string]bool{
	"table_info": true, "table_xinfo": true, "table_list": true, "index_info": true,
	"index_xinfo": true, "index_list": true, "foreign_key_list": true, "foreign_key_check": true,
	"integrity_check": true, "quick_check": true, "collation_list": true, "function_list": true,
	"module_list": true, "pragma_list": true, "compile_options": true, "database_list": true,
	"page_count": true, "freelist_count": true, "data_version": true,
}

// Pragmas whose current value may be read (no argument) but not set.
var readablePragmas = map[string]bool{
	"application_id": true, "auto_vacuum": true, "automatic_index": true, "busy_timeout": true,
	"cache_size": true, "cache_spill": true, "cell_size_check": true, "defer_foreign_keys": true,
	"encoding": true, "foreign_keys": true, "ignore_check_constraints": true, "journal_mode": true,
	"journal_size_limit": true, "legacy_alter_table": true, "locking_mode": true, "max_page_count": true,
	"mmap_size": true, "page_size": true, "query_only": true, "read_uncommitted": true,
	"recursive_triggers": true, "reverse_unordered_selects": true, "schema_version": true,
	"secure_delete": true, "synchronous": true, "temp_store": true, "trusted_schema": true,
	"user_version": true, "wal_autocheckpoint": true, "writable_schema": true,
}

// Pragmas whose value is stored in the database file: setting them is a
// replicated write.
var persistentPragmas = map[string]bool{"user_version": true, "application_id": true}

func (r *recorder) pragma(info *stmtInfo, a sqlite.Action, deny func(int, string, ...any) sqlite.AuthResult) sqlite.AuthResult {
	name := strings.ToLower(a.Pragma())
	arg := a.PragmaArg()
	switch {
	case r.internal:
		return sqlite.AuthResultOK
	case introspectionPragmas[name]:
		info.pragmaRead = true
		return sqlite.AuthResultOK
	case arg == "" && readablePragmas[name]:
		info.pragmaRead = true
		return sqlite.AuthResultOK
	case persistentPragmas[name]:
		info.write, info.acted = true, true
		return sqlite.AuthResultOK
	case readablePragmas[name]:
		return deny(api.CodeForbidden, "PRAGMA %s cannot be set: nqlite manages connection state, journaling and durability so that every node stays identical (reading it is allowed)", name)
	default:
		return deny(api.CodeForbidden, "PRAGMA %s is not allowed (allowed: introspection pragmas such as table_info and index_list, reading settings, and setting user_version or application_id)", name)
	}
}
