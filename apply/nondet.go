package apply

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"zombiezen.com/go/sqlite"
)

// What a statement that writes may not read, because the value would
// differ between nodes (the inventory and the reasons are in DESIGN.md,
// "Determinism: the inventory"). The authorizer records a use while the
// statement is prepared (stmtInfo.nondeterminism): the accepting node
// refuses such a request with 400 before publishing it, and the apply
// connection refuses the statement with the same error on every node. Uses
// the authorizer cannot see (a column DEFAULT) fail at run time on the
// apply connection, where each refused function is replaced by one that
// raises the same error (installRefusals).

// refusedFuncs maps a built-in function to why a write may not call it.
var refusedFuncs = map[string]string{
	"total_changes":             "total_changes() counts the changes of one connection and differs between nodes: use changes() or RETURNING",
	"sqlite_offset":             "sqlite_offset() is a byte offset in this node's file, whose layout is not replicated",
	"sqlite_version":            "sqlite_version() depends on the SQLite build of each node",
	"sqlite_source_id":          "sqlite_source_id() depends on the SQLite build of each node",
	"sqlite_compileoption_get":  "sqlite_compileoption_get() depends on the SQLite build of each node",
	"sqlite_compileoption_used": "sqlite_compileoption_used() depends on the SQLite build of each node",
	"fts5_source_id":            "fts5_source_id() depends on the SQLite build of each node",
	"fts5_locale":               "fts5_locale() returns a value that starts with a random header of one connection",
	"bm25":                      "bm25() uses the platform's log(), which differs between CPU architectures",
}

// refusedFuncArgs is the number of arguments of each refused function that
// installRefusals replaces (bm25 is an FTS5 auxiliary function and cannot
// be replaced; its use is always visible to the authorizer).
var refusedFuncArgs = map[string]int{
	"total_changes": 0, "sqlite_offset": 1, "sqlite_version": 0, "sqlite_source_id": 0,
	"sqlite_compileoption_get": 1, "sqlite_compileoption_used": 1, "fts5_source_id": 0, "fts5_locale": 2,
}

// deterministicBuiltins are the refused functions SQLite marks
// deterministic: their replacements keep the flag, so schemas that use them
// in an index or a generated column are accepted as in plain SQLite.
var deterministicBuiltins = map[string]bool{"sqlite_offset": true, "fts5_source_id": true}

// writeSafePragmas are the pragmas whose table-valued functions
// (pragma_table_info(...), SELECT * FROM pragma_user_version) a write may
// read: the schema, and values stored in the database file. Every other
// pragma reports this node's file layout (page_count, freelist_count,
// integrity_check's page numbers), file history (schema_version,
// data_version), file path (database_list), build (compile_options,
// function_list, module_list, pragma_list) or connection settings.
var writeSafePragmas = map[string]bool{
	"table_info": true, "table_xinfo": true, "table_list": true, "index_info": true, "index_xinfo": true,
	"index_list": true, "foreign_key_list": true, "foreign_key_check": true, "collation_list": true,
	"user_version": true, "application_id": true, "encoding": true, "page_size": true, "auto_vacuum": true,
}

// knownPragmas is SQLite 3.49's PRAGMA list (SELECT name FROM
// pragma_pragma_list): a read of table pragma_<name> is that pragma's
// table-valued function.
var knownPragmas = strings.Fields(`analysis_limit application_id auto_vacuum automatic_index busy_timeout
	cache_size cache_spill case_sensitive_like cell_size_check checkpoint_fullfsync collation_list
	compile_options count_changes data_version database_list default_cache_size defer_foreign_keys
	empty_result_callbacks encoding foreign_key_check foreign_key_list foreign_keys freelist_count
	full_column_names fullfsync function_list hard_heap_limit ignore_check_constraints incremental_vacuum
	index_info index_list index_xinfo integrity_check journal_mode journal_size_limit legacy_alter_table
	locking_mode max_page_count mmap_size module_list optimize page_count page_size pragma_list query_only
	quick_check read_uncommitted recursive_triggers reverse_unordered_selects schema_version secure_delete
	short_column_names shrink_memory soft_heap_limit synchronous table_info table_list table_xinfo temp_store
	temp_store_directory threads trusted_schema user_version wal_autocheckpoint wal_checkpoint writable_schema`)

var pragmaNames = func() map[string]bool {
	m := map[string]bool{}
	for _, p := range knownPragmas {
		m[p] = true
	}
	return m
}()

// pragmaReadReason returns why a write may not read table (a pragma's
// table-valued function), or "".
func pragmaReadReason(table string) string {
	t := strings.ToLower(table)
	name, ok := strings.CutPrefix(t, "pragma_")
	if !ok || !pragmaNames[name] || writeSafePragmas[name] {
		return ""
	}
	return fmt.Sprintf("%s() reports this node's file layout, history, path, build or connection settings (PRAGMA %s), which differ between nodes: a statement that writes may read only the database's content and schema", t, name)
}

// allowedModules are the virtual table modules CREATE VIRTUAL TABLE may
// use; they keep the apply connection's other modules (dbstat) away.
var allowedModules = map[string]bool{"fts5": true, "fts5vocab": true, "rtree": true, "rtree_i32": true, "geopoly": true}

// applyModules are the modules the apply connection keeps
// (sqlite3_drop_modules): the allowed ones and the eponymous JSON tables.
var applyModules = []string{"fts5", "fts5vocab", "rtree", "rtree_i32", "geopoly", "json_each", "json_tree"}

const errDbstat = "dbstat reports this node's page layout, which is not replicated: a statement that writes may not read it"

const errRootpage = "sqlite_schema.rootpage is a page number in this node's file, whose layout is not replicated: a statement that writes may not read it"

func moduleReason(module string) string {
	m := strings.ToLower(module)
	if allowedModules[m] {
		return ""
	}
	if m == "dbstat" {
		return "virtual tables using dbstat report this node's page layout, which is not replicated"
	}
	return fmt.Sprintf("virtual table module %s is not supported (supported: fts5, fts5vocab, rtree, rtree_i32, geopoly)", module)
}

// installRefusals replaces each refused function on the apply connection
// by one that fails with the reason, so that a use the authorizer did not
// see (a column DEFAULT) fails the same way on every node.
func installRefusals(c *sqlite.Conn) error {
	for name, n := range refusedFuncArgs {
		msg := refusedFuncs[name]
		err := c.CreateFunction(name, &sqlite.FunctionImpl{
			NArgs:         n,
			AllowIndirect: true,
			Deterministic: deterministicBuiltins[name],
			Scalar: func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
				return funcError(ctx, msg)
			},
		})
		if err != nil {
			return fmt.Errorf("replace %s(): %w", name, err)
		}
	}
	return nil
}

// installReadRandom gives a read connection random() and randomblob()
// implemented in Go, so that reads never draw from SQLite's generator
// (which the apply connection seeds per statement).
func installReadRandom(c *sqlite.Conn) error {
	err := c.CreateFunction("random", &sqlite.FunctionImpl{
		NArgs:         0,
		AllowIndirect: true,
		Scalar: func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
			return sqlite.IntegerValue(int64(rand.Uint64())), nil
		},
	})
	if err != nil {
		return err
	}
	return c.CreateFunction("randomblob", &sqlite.FunctionImpl{
		NArgs:         1,
		AllowIndirect: true,
		Scalar: func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
			n := args[0].Int64()
			if n < 1 {
				n = 1
			}
			if n > MaxValueBytes {
				return funcError(ctx, "string or blob too big")
			}
			b := make([]byte, n)
			for i := 0; i < len(b); i += 8 {
				v := rand.Uint64()
				for j := 0; j < 8 && i+j < len(b); j++ {
					b[i+j] = byte(v >> (8 * j))
				}
			}
			return sqlite.BlobValue(b), nil
		},
	})
}

// installMath replaces SQLite's ln(), log(B, X), log2(), pow(), power(),
// acosh() and asinh() with the architecture-independent versions of
// libm.go, with SQLite's own argument handling (math1Func, math2Func and
// logFunc in func.c: a non-numeric argument or a logarithm of a value <= 0
// gives NULL, as does a NaN result).
func installMath(c *sqlite.Conn) error {
	result := func(x float64) (sqlite.Value, error) {
		if x != x {
			return sqlite.Value{}, nil
		}
		return sqlite.FloatValue(x), nil
	}
	one := func(f func(ctx sqlite.Context, x float64) float64) func(sqlite.Context, []sqlite.Value) (sqlite.Value, error) {
		return func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
			x, ok := numericArg(args[0])
			if !ok {
				return sqlite.Value{}, nil
			}
			return result(f(ctx, x))
		}
	}
	logOf := func(f func(float64) float64) func(sqlite.Context, []sqlite.Value) (sqlite.Value, error) {
		return func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
			x, ok := numericArg(args[0])
			if !ok || x <= 0 {
				return sqlite.Value{}, nil
			}
			return result(f(x))
		}
	}
	pow := func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
		x, ok := numericArg(args[0])
		if !ok {
			return sqlite.Value{}, nil
		}
		y, ok := numericArg(args[1])
		if !ok {
			return sqlite.Value{}, nil
		}
		return result(muslPow(x, y))
	}
	funcs := []struct {
		name string
		n    int
		f    func(sqlite.Context, []sqlite.Value) (sqlite.Value, error)
	}{
		{"ln", 1, logOf(muslLog)},
		{"log2", 1, logOf(muslLog2)},
		{"log", 2, func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
			b, ok := numericArg(args[0])
			if !ok || b <= 0 {
				return sqlite.Value{}, nil
			}
			if b = muslLog(b); b <= 0 {
				return sqlite.Value{}, nil
			}
			x, ok := numericArg(args[1])
			if !ok || x <= 0 {
				return sqlite.Value{}, nil
			}
			return result(muslLog(x) / b)
		}},
		{"pow", 2, pow},
		{"power", 2, pow},
		{"acosh", 1, one(func(ctx sqlite.Context, x float64) float64 { return muslAcosh(contextTLS(ctx), x) })},
		{"asinh", 1, one(func(ctx sqlite.Context, x float64) float64 { return muslAsinh(contextTLS(ctx), x) })},
	}
	for _, f := range funcs {
		err := c.CreateFunction(f.name, &sqlite.FunctionImpl{NArgs: f.n, Deterministic: true, AllowIndirect: true, Scalar: f.f})
		if err != nil {
			return fmt.Errorf("replace %s(): %w", f.name, err)
		}
	}
	return nil
}
