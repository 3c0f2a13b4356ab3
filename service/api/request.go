// Package api holds nqlite's wire types: the request a client sends to
// nqlite.query.<db>, the response it gets back, and the pure-Go SQL
// statement splitter. It imports nothing but the standard library, so the
// Go client and nqctl can use it without linking SQLite.
//
// The request forms and the JSON value conventions are documented in the
// repository's README.md ("The API"); this package is their single
// implementation.
package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Read consistency levels accepted in Request.Level.
const (
	// LevelNone reads whatever the node has applied (the default).
	LevelNone = "none"
	// LevelStrong first waits until the node has applied every entry the
	// stream held when the request arrived.
	LevelStrong = "strong"
)

// Result formats accepted in Request.Format.
const (
	// FormatRows returns each row as a JSON object keyed by column name.
	FormatRows = "rows"
	// FormatValues returns columns, declared types and rows as arrays.
	FormatValues = "values"
)

// DefaultTimeoutMS is the request timeout, in milliseconds, used when a
// request does not set timeout_ms.
const DefaultTimeoutMS = 5000

// MaxTimeoutMS is the largest timeout_ms a request may ask for (10 minutes).
const MaxTimeoutMS = 600000

// Request is one decoded request to nqlite.query.<db>.
type Request struct {
	// Statements run in order; each yields one Result.
	Statements []Statement
	// Transaction makes all statements commit or none (SQLite SAVEPOINT
	// semantics inside the stream entry).
	Transaction bool
	// Level is LevelNone or LevelStrong.
	Level string
	// AfterSeq, when non-zero, makes a read wait until the node has applied
	// stream sequence AfterSeq.
	AfterSeq uint64
	// Queue answers a write as soon as JetStream has stored its entry.
	Queue bool
	// ID is the idempotency key, sent to JetStream as the Nats-Msg-Id header.
	ID string
	// Format is FormatRows or FormatValues.
	Format string
	// TimeoutMS bounds the whole request, in milliseconds.
	TimeoutMS int
}

// Encode returns the JSON object form of r, the form ParseRequest reads
// back to an equal Request: zero fields are omitted (they take the
// server's defaults), a statement without parameters is a bare string.
// Named parameters are written in map order.
func (r *Request) Encode() []byte {
	b := make([]byte, 0, 64)
	b = append(b, `{"statements":[`...)
	for i, st := range r.Statements {
		if i > 0 {
			b = append(b, ',')
		}
		if st.Params == nil && st.Named == nil {
			b = AppendString(b, st.SQL)
			continue
		}
		b = append(b, '[')
		b = AppendString(b, st.SQL)
		if st.Named != nil {
			b = append(b, ",{"...)
			j := 0
			for k, v := range st.Named {
				if j > 0 {
					b = append(b, ',')
				}
				j++
				b = AppendString(b, ":"+k)
				b = append(b, ':')
				b = AppendValue(b, v)
			}
			b = append(b, '}')
		}
		for _, v := range st.Params {
			b = append(b, ',')
			b = AppendValue(b, v)
		}
		b = append(b, ']')
	}
	b = append(b, ']')
	if r.Transaction {
		b = append(b, `,"transaction":true`...)
	}
	if r.Level != "" {
		b = append(b, `,"level":`...)
		b = AppendString(b, r.Level)
	}
	if r.AfterSeq != 0 {
		b = append(b, `,"after_seq":`...)
		b = strconv.AppendUint(b, r.AfterSeq, 10)
	}
	if r.Queue {
		b = append(b, `,"queue":true`...)
	}
	if r.ID != "" {
		b = append(b, `,"id":`...)
		b = AppendString(b, r.ID)
	}
	if r.Format != "" {
		b = append(b, `,"format":`...)
		b = AppendString(b, r.Format)
	}
	if r.TimeoutMS != 0 {
		b = append(b, `,"timeout_ms":`...)
		b = strconv.AppendInt(b, int64(r.TimeoutMS), 10)
	}
	return append(b, '}')
}

// Statement is one SQL statement with its bound parameters. At most one of
// Params (positional, ?/?NNN) and Named (:name, @name, $name; keys stored
// without the prefix) is set.
//
// Parameter values are nil (NULL), int64 (INTEGER), float64 (REAL), string
// (TEXT) or []byte (BLOB).
type Statement struct {
	SQL    string
	Params []any
	Named  map[string]any
}

var dbNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidDBName reports whether name is a valid database name:
// [A-Za-z0-9_-]{1,64}.
func ValidDBName(name string) bool { return dbNameRE.MatchString(name) }

// ParseRequest decodes a request payload in any of the three forms:
// plain SQL text (split into statements with Split), a JSON array of
// statements, or a JSON object with "statements" and options. Errors are
// *Error with CodeBadRequest and say what to change.
//
// Requests in the shapes client.Request.Encode writes are decoded by a
// single-pass fast path (parseRequestFast, fastjson.go); every other
// payload, and every payload that fails, goes through parseRequestJSON,
// the encoding/json decoding, so results and errors are the same either
// way.
func ParseRequest(data []byte) (*Request, error) {
	if req, ok := parseRequestFast(data); ok {
		return req, nil
	}
	return parseRequestJSON(data)
}

// parseRequestJSON is ParseRequest decoded with encoding/json: the
// reference the fast path must agree with.
func parseRequestJSON(data []byte) (*Request, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n\f\v")
	if len(trimmed) == 0 {
		return nil, Errorf(CodeBadRequest, "empty request: send SQL text, a JSON array of statements, or a JSON object with \"statements\"")
	}
	if !utf8.Valid(data) {
		return nil, Errorf(CodeBadRequest, "request is not valid UTF-8")
	}
	req := &Request{Level: LevelNone, Format: FormatRows, TimeoutMS: DefaultTimeoutMS}
	switch trimmed[0] {
	case '[':
		v, err := decodeJSON(trimmed)
		if err != nil {
			return nil, err
		}
		stmts, err := statementsFromJSON(v)
		if err != nil {
			return nil, err
		}
		req.Statements = stmts
	case '{':
		if err := parseObject(trimmed, req); err != nil {
			return nil, err
		}
	default:
		req.Statements = textStatements(string(data))
	}
	if len(req.Statements) == 0 {
		return nil, Errorf(CodeBadRequest, "request holds no SQL statement")
	}
	for i, st := range req.Statements {
		if j := strings.IndexByte(st.SQL, 0); j >= 0 {
			return nil, Errorf(CodeBadRequest, "statement %d holds a NUL byte at offset %d: SQLite ends SQL text there; pass such a value as a parameter", i+1, j)
		}
	}
	return req, nil
}

func textStatements(sql string) []Statement {
	parts := Split(sql)
	stmts := make([]Statement, len(parts))
	for i, p := range parts {
		stmts[i] = Statement{SQL: p}
	}
	return stmts
}

func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, Errorf(CodeBadRequest, "request is not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, Errorf(CodeBadRequest, "request is not valid JSON: data after the end of the JSON value")
	}
	return v, nil
}

type requestObject struct {
	Statements  any    `json:"statements"`
	Transaction bool   `json:"transaction"`
	Level       string `json:"level"`
	AfterSeq    uint64 `json:"after_seq"`
	Queue       bool   `json:"queue"`
	ID          string `json:"id"`
	Format      string `json:"format"`
	TimeoutMS   *int   `json:"timeout_ms"`
}

func parseObject(data []byte, req *Request) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var o requestObject
	if err := dec.Decode(&o); err != nil {
		return Errorf(CodeBadRequest, "request object: %v (fields: statements, transaction, level, after_seq, queue, id, format, timeout_ms)", err)
	}
	if dec.More() {
		return Errorf(CodeBadRequest, "request is not valid JSON: data after the end of the JSON object")
	}
	if o.Statements == nil {
		return Errorf(CodeBadRequest, "request object has no \"statements\"")
	}
	var err error
	switch s := o.Statements.(type) {
	case string:
		req.Statements = textStatements(s)
	default:
		if req.Statements, err = statementsFromJSON(s); err != nil {
			return err
		}
	}
	req.Transaction = o.Transaction
	req.AfterSeq = o.AfterSeq
	req.Queue = o.Queue
	switch o.Level {
	case "", LevelNone, "weak":
		req.Level = LevelNone
	case LevelStrong:
		req.Level = LevelStrong
	default:
		return Errorf(CodeBadRequest, "level %q is not known: use \"none\" or \"strong\"", o.Level)
	}
	switch o.Format {
	case "", FormatRows:
		req.Format = FormatRows
	case FormatValues:
		req.Format = FormatValues
	default:
		return Errorf(CodeBadRequest, "format %q is not known: use \"rows\" or \"values\"", o.Format)
	}
	if o.TimeoutMS != nil {
		if *o.TimeoutMS <= 0 || *o.TimeoutMS > MaxTimeoutMS {
			return Errorf(CodeBadRequest, "timeout_ms %d is out of range: give 1 to %d", *o.TimeoutMS, MaxTimeoutMS)
		}
		req.TimeoutMS = *o.TimeoutMS
	}
	if err := checkID(o.ID); err != nil {
		return err
	}
	req.ID = o.ID
	return nil
}

// statementsFromJSON converts the array form: each element is a SQL string,
// [sql, p1, p2, ...] or [sql, {"name": v}].
func statementsFromJSON(v any) ([]Statement, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, Errorf(CodeBadRequest, "statements must be a JSON array or a SQL string")
	}
	stmts := make([]Statement, 0, len(arr))
	for i, el := range arr {
		n := i + 1
		var st Statement
		switch e := el.(type) {
		case string:
			st.SQL = e
		case []any:
			if len(e) == 0 {
				return nil, Errorf(CodeBadRequest, "statement %d is an empty array: give [sql, params...]", n)
			}
			sql, ok := e[0].(string)
			if !ok {
				return nil, Errorf(CodeBadRequest, "statement %d: the first element must be the SQL string", n)
			}
			st.SQL = sql
			if obj, ok := namedObject(e); ok {
				st.Named = make(map[string]any, len(obj))
				for k, pv := range obj {
					name := strings.TrimLeft(k, ":@$")
					if name == "" {
						return nil, Errorf(CodeBadRequest, "statement %d: empty parameter name", n)
					}
					val, err := ValueFromJSON(pv)
					if err != nil {
						return nil, Errorf(CodeBadRequest, "statement %d, parameter %q: %v", n, k, err)
					}
					if _, dup := st.Named[name]; dup {
						return nil, Errorf(CodeBadRequest, "statement %d: parameter %q given twice", n, name)
					}
					st.Named[name] = val
				}
			} else if len(e) > 1 {
				st.Params = make([]any, len(e)-1)
				for j, pv := range e[1:] {
					val, err := ValueFromJSON(pv)
					if err != nil {
						return nil, Errorf(CodeBadRequest, "statement %d, parameter %d: %v", n, j+1, err)
					}
					st.Params[j] = val
				}
			}
		default:
			return nil, Errorf(CodeBadRequest, "statement %d must be a SQL string or an array [sql, params...]", n)
		}
		parts := Split(st.SQL)
		switch {
		case len(parts) == 0:
			return nil, Errorf(CodeBadRequest, "statement %d holds no SQL", n)
		case len(parts) > 1:
			return nil, Errorf(CodeBadRequest, "statement %d holds %d SQL statements: give each its own array element, or send plain SQL text", n, len(parts))
		}
		stmts = append(stmts, st)
	}
	return stmts, nil
}

// namedObject reports whether a statement array is [sql, {named params}].
// An object that is exactly {"base64": "<string>"} is a BLOB value, not
// named parameters; name such a parameter ":base64" to bind it by name.
func namedObject(e []any) (map[string]any, bool) {
	if len(e) != 2 {
		return nil, false
	}
	obj, ok := e[1].(map[string]any)
	if !ok || isBlobObject(obj) {
		return nil, false
	}
	return obj, true
}

func isBlobObject(obj map[string]any) bool {
	if len(obj) != 1 {
		return false
	}
	_, ok := obj["base64"].(string)
	return ok
}

// ValueFromJSON converts a JSON value decoded with UseNumber into a
// parameter value: null → nil, true/false → int64 1/0, a number without
// '.', 'e' or 'E' → int64 (error if it overflows 64 bits), any other number
// → float64, a string → string, {"base64": "..."} or an array of integers
// 0-255 → []byte.
func ValueFromJSON(v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case bool:
		if x {
			return int64(1), nil
		}
		return int64(0), nil
	case json.Number:
		return NumberValue(string(x))
	case string:
		return x, nil
	case map[string]any:
		if isBlobObject(x) {
			b, err := base64.StdEncoding.DecodeString(x["base64"].(string))
			if err != nil {
				return nil, fmt.Errorf("BLOB is not valid standard base64: %v", err)
			}
			return b, nil
		}
		return nil, errors.New(`an object is not a value: a BLOB is {"base64": "..."}`)
	case []any:
		b := make([]byte, len(x))
		for i, el := range x {
			n, ok := el.(json.Number)
			if !ok {
				return nil, errors.New("an array value is a BLOB and must hold integers 0-255")
			}
			iv, err := strconv.ParseUint(string(n), 10, 8)
			if err != nil {
				return nil, fmt.Errorf("BLOB byte %d (%s) is not an integer 0-255", i, n)
			}
			b[i] = byte(iv)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("unsupported value %T", v)
	}
}

// NumberValue converts a JSON number literal: int64 when it has no '.',
// 'e' or 'E', float64 otherwise.
func NumberValue(s string) (any, error) {
	if strings.ContainsAny(s, ".eE") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !math.IsInf(f, 0) {
			return nil, fmt.Errorf("number %s is out of range for REAL", s)
		}
		return f, nil
	}
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("integer %s does not fit SQLite's 64-bit INTEGER: send it as text or as a REAL (e.g. %s.0)", s, s)
	}
	return i, nil
}
