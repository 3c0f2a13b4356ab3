package apply

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"zombiezen.com/go/sqlite"
)

// entryClock is the per-entry source of 'now' and randomness on the apply
// connection. Every node applies an entry with the same Time and Seed, so
// random(), randomblob() and every date/time function reading 'now' give
// the same values on every node, in the SQL text, in column DEFAULTs and in
// triggers alike.
type entryClock struct {
	t     int64  // entry time, Unix milliseconds
	now   string // t as SQLite time text (UTC, ms), formatted on first use
	seed  uint64
	state uint64 // splitmix64 state, reseeded per statement
}

// nowText returns the entry time as SQLite time text, UTC, millisecond
// precision ("2006-01-02 15:04:05.000").
func (k *entryClock) nowText() string {
	if k.now == "" {
		k.now = time.UnixMilli(k.t).UTC().Format("2006-01-02 15:04:05.000")
	}
	return k.now
}

// reset sets the clock for statement i of an entry with time t (unix ms)
// and seed. Reseeding per statement keeps values independent of whether
// earlier statements ran (a failed statement consumes no randomness of the
// next).
func (k *entryClock) reset(t int64, seed int64, stmt int) {
	if t != k.t || k.now == "" {
		k.t, k.now = t, ""
	}
	k.seed = uint64(seed)
	k.state = k.seed ^ (uint64(stmt+1) * 0x9E3779B97F4A7C15)
}

// prngSeed returns the seed of SQLite's own generator for the current
// statement (see beginStatement): 32 bits, never 0 (0 selects the VFS's
// true randomness), derived from the statement's state without consuming
// it, so random() gives the same values as before this seed existed.
func (k *entryClock) prngSeed() int32 {
	z := k.state ^ 0xD1B54A32D192ED03
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	x := int32(uint32(z ^ (z >> 31)))
	if x == 0 {
		x = 1
	}
	return x
}

// next is splitmix64 (Steele, Lea, Flood 2014): small, fast and fixed
// forever, so entries give the same values with any Go version.
func (k *entryClock) next() uint64 {
	k.state += 0x9E3779B97F4A7C15
	z := k.state
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// dateFuncs are SQLite's date and time functions that may read 'now'
// (https://sqlite.org/lang_datefunc.html); the CURRENT_* keywords are
// resolved by SQLite as calls to current_timestamp() and friends.
var dateFuncs = []string{"date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff",
	"current_date", "current_time", "current_timestamp"}

// installDeterministic overrides random(), randomblob() and the date/time
// functions on the apply connection c. The date/time overrides replace
// 'now' with the entry time and evaluate the built-in function on a plain
// in-memory connection (helper), so their results are SQLite's own.
//
// The helper's prepared statements are kept in cache, which the caller
// finalizes before closing helper.
func installDeterministic(c *sqlite.Conn, k *entryClock, helper *sqlite.Conn, cache map[string]*sqlite.Stmt) error {
	err := c.CreateFunction("random", &sqlite.FunctionImpl{
		NArgs:         0,
		AllowIndirect: true,
		Scalar: func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
			return sqlite.IntegerValue(int64(k.next())), nil
		},
	})
	if err != nil {
		return err
	}
	err = c.CreateFunction("randomblob", &sqlite.FunctionImpl{
		NArgs:         1,
		AllowIndirect: true,
		Scalar: func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
			n := args[0].Int64()
			if n < 1 {
				n = 1
			}
			if n > 1<<30 {
				return funcError(ctx, "string or blob too big")
			}
			b := make([]byte, n)
			for i := 0; i < len(b); i += 8 {
				v := k.next()
				for j := 0; j < 8 && i+j < len(b); j++ {
					b[i+j] = byte(v >> (8 * j))
				}
			}
			return sqlite.BlobValue(b), nil
		},
	})
	if err != nil {
		return err
	}
	for _, name := range dateFuncs {
		name := name
		err := c.CreateFunction(name, &sqlite.FunctionImpl{
			NArgs:         -1,
			AllowIndirect: true,
			Deterministic: true,
			Scalar: func(ctx sqlite.Context, args []sqlite.Value) (sqlite.Value, error) {
				v, err := evalDate(helper, cache, k.nowText(), name, args)
				if err != nil {
					return funcError(ctx, err.Error())
				}
				return v, nil
			},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// evalDate evaluates the built-in date/time function name on helper with
// 'now' (and an omitted time value) replaced by the entry time.
func evalDate(helper *sqlite.Conn, cache map[string]*sqlite.Stmt, now, name string, args []sqlite.Value) (sqlite.Value, error) {
	fn := name
	vals := make([]any, 0, len(args)+1)
	switch name {
	case "current_date", "current_time", "current_timestamp":
		if len(args) != 0 {
			return sqlite.Value{}, fmt.Errorf("wrong number of arguments to function %s()", name)
		}
		fn = map[string]string{"current_date": "date", "current_time": "time", "current_timestamp": "datetime"}[name]
		vals = append(vals, now)
	case "strftime":
		if len(args) == 0 {
			return sqlite.Value{}, errors.New("wrong number of arguments to function strftime()")
		}
		if len(args) == 1 {
			vals = append(vals, nil) // placeholder, set below
		}
	case "timediff":
		if len(args) != 2 {
			return sqlite.Value{}, errors.New("wrong number of arguments to function timediff()")
		}
	default:
		if len(args) == 0 {
			vals = append(vals, now)
		}
	}
	for i, a := range args {
		var v any
		switch a.Type() {
		case sqlite.TypeNull:
			v = nil
		case sqlite.TypeInteger:
			v = a.Int64()
		case sqlite.TypeFloat:
			v = a.Float()
		case sqlite.TypeBlob:
			v = a.Blob()
		default:
			s := a.Text()
			if strings.EqualFold(s, "now") {
				s = now
			} else if i > 0 || name == "strftime" {
				if m := strings.ToLower(strings.TrimSpace(s)); m == "localtime" || m == "utc" {
					return sqlite.Value{}, fmt.Errorf("the '%s' modifier depends on the node's time zone and would differ between nodes: convert on the client", m)
				}
			}
			v = s
		}
		vals = append(vals, v)
	}
	if name == "strftime" && len(args) == 1 {
		vals = []any{vals[1], now}
	}
	key := fmt.Sprintf("%s/%d", fn, len(vals))
	stmt := cache[key]
	if stmt == nil {
		q := "SELECT " + fn + "(" + strings.TrimSuffix(strings.Repeat("?,", len(vals)), ",") + ")"
		var err error
		stmt, _, err = helper.PrepareTransient(q)
		if err != nil {
			return sqlite.Value{}, err
		}
		cache[key] = stmt
	}
	defer stmt.Reset()
	for i, v := range vals {
		bindValue(stmt, i+1, v)
	}
	if _, err := stmt.Step(); err != nil {
		return sqlite.Value{}, errors.New(sqlErrorText(err, ""))
	}
	switch stmt.ColumnType(0) {
	case sqlite.TypeNull:
		return sqlite.Value{}, nil
	case sqlite.TypeInteger:
		return sqlite.IntegerValue(stmt.ColumnInt64(0)), nil
	case sqlite.TypeFloat:
		return sqlite.FloatValue(stmt.ColumnFloat(0)), nil
	default:
		return sqlite.TextValue(stmt.ColumnText(0)), nil
	}
}
