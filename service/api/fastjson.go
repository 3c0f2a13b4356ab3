package api

// Single-pass decoders for the two JSON documents decoded on every
// request: the request a node parses (ParseRequest) and the response the Go
// client decodes (DecodeResponse). encoding/json's reflection, its scanner
// run twice over the input and its intermediate map[string]any and
// json.Number values cost microseconds on a point read; these decode the
// shapes the project's own encoders write straight into the result.
//
// The contract: parseRequestFast and decodeResponseFast return (result,
// true) only when encoding/json (parseRequestJSON, decodeResponseJSON)
// would return an equal result (reflect.DeepEqual) with no error; on
// anything they do not fully understand they return false and the caller
// runs the encoding/json decoding, unchanged, which gives the result or the
// error. They never produce an error themselves. What makes them decline:
//
//   - a key other than the exact lower-case field names (encoding/json
//     matches keys case-insensitively, and ignores unknown ones in a
//     response), a key with an escape, a key given twice;
//   - a value of another JSON type than the field's (a JSON string in a
//     number field, a nested array or object other than a BLOB
//     {"base64": "..."} among values, null in a string list, ...);
//   - any syntax error, and, in a request, invalid UTF-8 or data after the
//     value other than white space;
//   - anything the encoding/json path reports as an error (an integer
//     parameter beyond 64 bits, bad base64, a level, format, timeout_ms or
//     id it refuses, a statement Split does not see as one, a NUL byte in
//     SQL, no statement, an "error" body, ...).
//
// Values follow the encoding/json path's rules exactly: numbers as
// NumberValue (request) and decodeValue (response) read them, strings
// unescaped as encoding/json unescapes them (an invalid surrogate escape,
// and in a response invalid UTF-8, become U+FFFD), null lists stay nil and
// empty ones are empty but not nil.
//
// Measured on the shared 2-core VM (go test -run '^$' -bench
// 'ParseRequest|DecodeResponse' -count 3 ./service/api/, encoding/json
// before, fast path after): ParseRequest of a point read 1930-2495 ns, 27
// allocs before, 461-516 ns, 5 allocs after; of an insert 2609-3195 ns,
// 35 allocs, then 687-772 ns, 9 allocs. DecodeResponse of a values-format
// point read 4612-4926 ns, 36 allocs, then 634-688 ns, 11 allocs; rows
// format 2993-4787 ns, 31 allocs, then 561-670 ns, 10 allocs; a write
// 2619-3155 ns, 20 allocs, then 308-388 ns, 3 allocs. The tests
// (fastjson_test.go) compare both paths on random, hand-written, damaged
// and fuzzed inputs.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// parseRequestFast decodes a request in the JSON array or object form: the
// statements array holds SQL strings and [sql, params...] arrays whose
// parameters are null, true/false, numbers, strings, {"base64": "..."}
// and arrays of integers 0-255, or [sql, {named parameters}]; the object
// form adds statements as SQL text and the options transaction, level,
// after_seq, queue, id, format and timeout_ms, in any order. ok is false
// when the payload is anything else or ParseRequest would fail: the caller
// then runs parseRequestJSON.
func parseRequestFast(data []byte) (req *Request, ok bool) {
	trimmed := bytes.TrimLeft(data, " \t\r\n\f\v")
	if len(trimmed) == 0 {
		return nil, false
	}
	d := fastDecoder{b: trimmed, strict: true}
	req = &Request{Level: LevelNone, Format: FormatRows, TimeoutMS: DefaultTimeoutMS}
	switch trimmed[0] {
	case '[':
		req.Statements, ok = d.statements()
	case '{':
		ok = d.requestObject(req)
	}
	if d.skipWS(); !ok || d.i != len(d.b) || len(req.Statements) == 0 {
		return nil, false
	}
	for _, st := range req.Statements {
		if strings.IndexByte(st.SQL, 0) >= 0 {
			return nil, false
		}
	}
	return req, true
}

// decodeResponseFast decodes a response body in the shapes AppendJSON
// writes: "results" (each result with error, last_insert_id,
// rows_affected, columns, types, values or rows, values being null,
// true/false, numbers, strings and {"base64": "..."}), "seq", "node",
// "time", "duplicate" and "queued", in any order. As with json.Decoder,
// data after the object is not read. ok is false for anything else, an
// error body ({"error": ...}) included: the caller then runs
// decodeResponseJSON.
func decodeResponseFast(data []byte) (resp *Response, ok bool) {
	d := fastDecoder{b: data}
	if !d.consume('{') {
		return nil, false
	}
	resp = &Response{Format: FormatRows}
	var (
		seen uint
		bad  bool
	)
	for n := 0; d.more('}', n, &bad); n++ {
		k, ok := d.key()
		if !ok {
			return nil, false
		}
		var bit uint
		switch string(k) {
		case "results":
			bit, ok = 1<<0, d.results(resp)
		case "seq":
			bit, ok = 1<<1, d.uintField(&resp.Seq)
		case "node":
			bit, ok = 1<<2, d.stringField(&resp.Node)
		case "time":
			bit, ok = 1<<3, d.floatField(&resp.Time)
		case "duplicate":
			bit, ok = 1<<4, d.boolField(&resp.Duplicate)
		case "queued":
			bit, ok = 1<<5, d.boolField(&resp.Queued)
		default:
			return nil, false
		}
		if !ok || seen&bit != 0 {
			return nil, false
		}
		seen |= bit
	}
	if bad {
		return nil, false
	}
	return resp, true
}

// fastDecoder is a cursor over one JSON text. Its methods return ok=false
// on anything they do not fully understand, leaving the cursor anywhere.
type fastDecoder struct {
	b []byte
	i int
	// strict refuses invalid UTF-8 in strings (a request must be valid
	// UTF-8); otherwise it becomes U+FFFD, as encoding/json makes it.
	strict bool
}

// skipWS skips JSON white space.
func (d *fastDecoder) skipWS() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte (0 at the end).
func (d *fastDecoder) peek() byte {
	d.skipWS()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// more steps to the n-th member (n from 0) of an array or object whose
// opening bracket is consumed, consuming the ',' before a member after the
// first, and reports whether a member follows. It returns false at the
// closing byte close (consumed), and where a ',' or close is missing or
// misplaced, setting *bad then; it never clears *bad, so one bad serves a
// whole loop:
//
//	var bad bool
//	for n := 0; d.more(']', n, &bad); n++ {
//		// read member n
//	}
//	if bad {
//		return false
//	}
//
// It is small enough to inline, which a loop taking the member as a func
// is not: that costs a call per member.
func (d *fastDecoder) more(close byte, n int, bad *bool) bool {
	switch d.peek() {
	case close:
		d.i++
		return false
	case ',':
		if n > 0 {
			d.i++
			return true
		}
	default:
		if n == 0 {
			return true
		}
	}
	*bad = true
	return false
}

// consume skips white space and consumes c if it comes next; it reports
// whether it did.
func (d *fastDecoder) consume(c byte) bool {
	if d.peek() != c {
		return false
	}
	d.i++
	return true
}

// literal consumes lit (true, false or null) if it comes next.
func (d *fastDecoder) literal(lit string) bool {
	if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
		d.i += len(lit)
		return true
	}
	return false
}

// key reads an object key holding no escape, and the ':' after it; it
// returns the key's bytes as they are in the input.
func (d *fastDecoder) key() ([]byte, bool) {
	if d.peek() != '"' {
		return nil, false
	}
	start := d.i + 1
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			d.i = j + 1
			if !d.consume(':') {
				return nil, false
			}
			return d.b[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// strBytes reads a string and returns its value: a slice of the input when
// it holds no escape and no invalid UTF-8 (plain), else a new buffer
// unescaped as encoding/json unescapes.
func (d *fastDecoder) strBytes() (s []byte, plain, ok bool) {
	if d.peek() != '"' {
		return nil, false, false
	}
	b := d.b
	start := d.i + 1
	plain = true
	for j := start; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			d.i = j + 1
			if plain {
				return b[start:j], true, true
			}
			return unquote(b[start:j]), false, true
		case c == '\\':
			plain = false
			if j+1 >= len(b) {
				return nil, false, false
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) || hex4(b[j+2:j+6]) < 0 {
					return nil, false, false
				}
				j += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				if d.strict {
					return nil, false, false
				}
				plain = false
			}
			j += size
		}
	}
	return nil, false, false
}

// str reads a string.
func (d *fastDecoder) str() (string, bool) {
	s, _, ok := d.strBytes()
	return string(s), ok
}

// hex4 returns the value of 4 hex digits, -1 if they are not.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// unquote unescapes the inside of a string strBytes has checked, the way
// encoding/json's unquoteBytes does: a \u escape of a surrogate not
// followed by the \u escape of its pair, and each byte of invalid UTF-8,
// become U+FFFD.
func unquote(s []byte) []byte {
	b := make([]byte, 0, len(s)+utf8.UTFMax)
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			switch e := s[r+1]; e {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := hex4(s[r+2:])
				r += 6
				if utf16.IsSurrogate(rr) {
					rr1 := rune(-1)
					if r+6 <= len(s) && s[r] == '\\' && s[r+1] == 'u' {
						rr1 = hex4(s[r+2:])
					}
					if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
						r += 6
						b = utf8.AppendRune(b, dec)
						continue
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
				continue
			default: // '"', '\\', '/'
				b = append(b, e)
			}
			r += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			b = utf8.AppendRune(b, rr)
			r += size
		}
	}
	return b
}

// number reads a JSON number and returns its text; isInt is false when it
// has a fraction or an exponent.
func (d *fastDecoder) number() (num []byte, isInt, ok bool) {
	b, j := d.b, d.i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && '1' <= b[j] && b[j] <= '9':
		j = skipDigits(b, j+1)
	default:
		return nil, false, false
	}
	isInt = true
	if j < len(b) && b[j] == '.' {
		isInt = false
		if j++; j >= len(b) || !isDigit(b[j]) {
			return nil, false, false
		}
		j = skipDigits(b, j)
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		isInt = false
		if j++; j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if j >= len(b) || !isDigit(b[j]) {
			return nil, false, false
		}
		j = skipDigits(b, j)
	}
	num, d.i = b[d.i:j], j
	return num, isInt, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func skipDigits(b []byte, j int) int {
	for j < len(b) && isDigit(b[j]) {
		j++
	}
	return j
}

// smallInt converts an integer literal of at most 18 digits (it cannot
// overflow); ok is false for longer ones.
func smallInt(num []byte) (int64, bool) {
	digits := num
	if num[0] == '-' {
		digits = num[1:]
	}
	if len(digits) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		n = n*10 + int64(c-'0')
	}
	if num[0] == '-' {
		n = -n
	}
	return n, true
}

// base64Bytes is base64.StdEncoding.DecodeString(string(s)).
func base64Bytes(s []byte) ([]byte, bool) {
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, s)
	return b[:n], err == nil
}

// blob reads {"base64": "<standard base64>"}, the cursor on its '{'.
func (d *fastDecoder) blob() ([]byte, bool) {
	d.i++
	if k, ok := d.key(); !ok || string(k) != "base64" {
		return nil, false
	}
	s, _, ok := d.strBytes()
	if !ok || !d.consume('}') {
		return nil, false
	}
	return base64Bytes(s)
}

// nullOrNumber reads null (null true) or a number, the opening of the
// numeric field readers; signed admits a leading '-'. ok is false for
// anything else, or a malformed number.
func (d *fastDecoder) nullOrNumber(signed bool) (num []byte, isInt, null, ok bool) {
	switch c := d.peek(); {
	case c == 'n':
		return nil, false, true, d.literal("null")
	case !isDigit(c) && (!signed || c != '-'):
		return nil, false, false, false
	}
	num, isInt, ok = d.number()
	return num, isInt, false, ok
}

// boolField reads true or false into *p; null leaves it.
func (d *fastDecoder) boolField(p *bool) bool {
	switch d.peek() {
	case 't':
		*p = true
		return d.literal("true")
	case 'f':
		*p = false
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	return false
}

// stringField reads a string into *p; null leaves it.
func (d *fastDecoder) stringField(p *string) bool {
	if d.peek() == 'n' {
		return d.literal("null")
	}
	s, ok := d.str()
	*p = s
	return ok
}

// uintField reads an integer into a uint64 as encoding/json does
// (strconv.ParseUint: no sign, no fraction); null leaves it.
func (d *fastDecoder) uintField(p *uint64) bool {
	num, isInt, null, ok := d.nullOrNumber(false)
	if null || !ok {
		return ok
	}
	if !isInt {
		return false
	}
	v, err := strconv.ParseUint(string(num), 10, 64)
	*p = v
	return err == nil
}

// floatField reads a number into a float64 as encoding/json does
// (strconv.ParseFloat, out of range refused); null leaves it.
func (d *fastDecoder) floatField(p *float64) bool {
	num, _, null, ok := d.nullOrNumber(true)
	if null || !ok {
		return ok
	}
	f, err := strconv.ParseFloat(string(num), 64)
	*p = f
	return err == nil
}

// Requests.

// requestObject reads the object form into req; its checks are
// parseObject's, and it declines where parseObject fails.
func (d *fastDecoder) requestObject(req *Request) bool {
	d.i++
	var (
		seen                 uint
		o                    Request
		timeout              int64
		level, format        string
		stmtsOK, hasTMO, bad bool
	)
	for n := 0; d.more('}', n, &bad); n++ {
		k, ok := d.key()
		if !ok {
			return false
		}
		var bit uint
		switch string(k) {
		case "statements":
			bit = 1 << 0
			o.Statements, ok = d.statementsField()
			stmtsOK = ok
		case "transaction":
			bit, ok = 1<<1, d.boolField(&o.Transaction)
		case "level":
			bit, ok = 1<<2, d.stringField(&level)
		case "after_seq":
			bit, ok = 1<<3, d.uintField(&o.AfterSeq)
		case "queue":
			bit, ok = 1<<4, d.boolField(&o.Queue)
		case "id":
			bit, ok = 1<<5, d.stringField(&o.ID)
		case "format":
			bit, ok = 1<<6, d.stringField(&format)
		case "timeout_ms":
			bit = 1 << 7
			timeout, hasTMO, ok = d.timeoutField()
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
	if bad {
		return false
	}
	switch level {
	case "", LevelNone, "weak":
		o.Level = LevelNone
	case LevelStrong:
		o.Level = LevelStrong
	default:
		return false
	}
	switch format {
	case "", FormatRows:
		o.Format = FormatRows
	case FormatValues:
		o.Format = FormatValues
	default:
		return false
	}
	o.TimeoutMS = DefaultTimeoutMS
	if hasTMO {
		if timeout <= 0 || timeout > MaxTimeoutMS {
			return false
		}
		o.TimeoutMS = int(timeout)
	}
	if !stmtsOK || checkID(o.ID) != nil {
		return false
	}
	*req = o
	return true
}

// statementsField reads "statements": an array, or SQL text split with
// Split.
func (d *fastDecoder) statementsField() ([]Statement, bool) {
	switch d.peek() {
	case '[':
		return d.statements()
	case '"':
		s, ok := d.str()
		if !ok {
			return nil, false
		}
		return textStatements(s), true
	}
	return nil, false
}

// timeoutField reads "timeout_ms": an integer (has), or null.
func (d *fastDecoder) timeoutField() (v int64, has, ok bool) {
	num, isInt, null, ok := d.nullOrNumber(true)
	if null || !ok {
		return 0, false, ok
	}
	if !isInt {
		return 0, false, false
	}
	v, err := strconv.ParseInt(string(num), 10, 64)
	return v, true, err == nil
}

// statements reads the statements array, the cursor on its '['. Each
// statement must be one statement for Split, as statementsFromJSON wants.
func (d *fastDecoder) statements() ([]Statement, bool) {
	d.i++
	var (
		stmts []Statement
		bad   bool
	)
	for n := 0; d.more(']', n, &bad); n++ {
		st, ok := d.statement()
		if !ok || countStatements(st.SQL) != 1 {
			return nil, false
		}
		stmts = append(stmts, st)
	}
	if bad {
		return nil, false
	}
	return stmts, true
}

// countStatements is len(Split(sql)) without building the statements.
func countStatements(sql string) int {
	var s Scanner
	s.Feed(sql)
	s.finish()
	return s.n
}

// statement reads a SQL string or [sql, params...].
func (d *fastDecoder) statement() (Statement, bool) {
	switch d.peek() {
	case '"':
		sql, ok := d.str()
		return Statement{SQL: sql}, ok
	case '[':
		return d.statementArray()
	}
	return Statement{}, false
}

// statementArray reads [sql, p1, p2, ...] or [sql, {named}], the cursor on
// its '['. An object right after the SQL is named parameters unless it is
// a BLOB (see namedObject), and must then end the array.
func (d *fastDecoder) statementArray() (Statement, bool) {
	d.i++
	var st Statement
	if d.peek() != '"' {
		return st, false
	}
	sql, ok := d.str()
	if !ok {
		return st, false
	}
	st.SQL = sql
	var buf [8]any
	params := buf[:0]
	var bad bool
	for n := 1; d.more(']', n, &bad); n++ {
		if st.Named != nil {
			return st, false
		}
		if n == 1 && d.peek() == '{' {
			blob, named, ok := d.paramObject()
			if !ok {
				return st, false
			}
			if named != nil {
				st.Named = named
				continue
			}
			params = append(params, blob)
			continue
		}
		v, ok := d.param()
		if !ok {
			return st, false
		}
		params = append(params, v)
	}
	if bad {
		return st, false
	}
	if st.Named == nil && len(params) > 0 {
		st.Params = make([]any, len(params))
		copy(st.Params, params)
	}
	return st, true
}

// paramObject reads the object after a statement's SQL, the cursor on its
// '{': a BLOB when it is exactly {"base64": "<string>"} (isBlobObject),
// else named parameters, keys without their prefix. A name given twice
// (":a" and "@a", or a key repeated) is left to encoding/json.
func (d *fastDecoder) paramObject() (blob []byte, named map[string]any, ok bool) {
	d.i++
	var (
		firstKey string
		firstVal any
		firstStr bool
		count    int
		bad      bool
	)
	for n := 0; d.more('}', n, &bad); n++ {
		k, ok := d.str()
		if !ok || !d.consume(':') {
			return nil, nil, false
		}
		isStr := d.peek() == '"'
		v, ok := d.param()
		if !ok {
			return nil, nil, false
		}
		count++
		switch count {
		case 1:
			firstKey, firstVal, firstStr = k, v, isStr
			continue
		case 2:
			named = make(map[string]any)
			if !addNamed(named, firstKey, firstVal) {
				return nil, nil, false
			}
		}
		if !addNamed(named, k, v) {
			return nil, nil, false
		}
	}
	if bad {
		return nil, nil, false
	}
	switch {
	case count == 1 && firstKey == "base64" && firstStr:
		b, err := base64.StdEncoding.DecodeString(firstVal.(string))
		return b, nil, err == nil
	case count == 0:
		return nil, map[string]any{}, true
	case count == 1:
		named = make(map[string]any, 1)
		return nil, named, addNamed(named, firstKey, firstVal)
	}
	return nil, named, true
}

// addNamed adds a named parameter under its name without prefix; false if
// the name is empty or already there.
func addNamed(m map[string]any, key string, v any) bool {
	name := strings.TrimLeft(key, ":@$")
	if _, dup := m[name]; dup || name == "" {
		return false
	}
	m[name] = v
	return true
}

// param reads a parameter value as ValueFromJSON converts it: null → nil,
// true/false → int64 1/0, numbers as NumberValue reads them, strings,
// {"base64": "..."} and arrays of integers 0-255 → []byte.
func (d *fastDecoder) param() (any, bool) {
	switch c := d.peek(); c {
	case '"':
		return d.str()
	case 't':
		return int64(1), d.literal("true")
	case 'f':
		return int64(0), d.literal("false")
	case 'n':
		return nil, d.literal("null")
	case '{':
		return d.blob()
	case '[':
		return d.byteArray()
	default:
		if c != '-' && !isDigit(c) {
			return nil, false
		}
		num, isInt, ok := d.number()
		if !ok {
			return nil, false
		}
		return paramNumber(num, isInt)
	}
}

// paramNumber is NumberValue: ok is false where it fails.
func paramNumber(num []byte, isInt bool) (any, bool) {
	if isInt {
		if n, ok := smallInt(num); ok {
			return n, true
		}
		n, err := strconv.ParseInt(string(num), 10, 64)
		return n, err == nil
	}
	f, err := strconv.ParseFloat(string(num), 64)
	return f, err == nil || math.IsInf(f, 0)
}

// byteArray reads a BLOB given as an array of integers 0-255, the cursor
// on its '['.
func (d *fastDecoder) byteArray() ([]byte, bool) {
	d.i++
	b := []byte{}
	var bad bool
	for n := 0; d.more(']', n, &bad); n++ {
		if !isDigit(d.peek()) {
			return nil, false
		}
		num, isInt, ok := d.number()
		if !ok || !isInt || len(num) > 3 {
			return nil, false
		}
		v := 0
		for _, c := range num {
			v = v*10 + int(c-'0')
		}
		if v > 255 {
			return nil, false
		}
		b = append(b, byte(v))
	}
	if bad {
		return nil, false
	}
	return b, true
}

// Responses.

// results reads "results" into resp.Results (nil for null or []).
func (d *fastDecoder) results(resp *Response) bool {
	if !d.consume('[') {
		return d.literal("null") // else not a list
	}
	var bad bool
	for n := 0; d.more(']', n, &bad); n++ {
		if d.peek() != '{' {
			return false
		}
		var res Result
		if !d.result(&res) {
			return false
		}
		if res.Values != nil {
			resp.Format = FormatValues
		}
		resp.Results = append(resp.Results, res)
	}
	return !bad
}

// result reads one result object, the cursor on its '{'.
func (d *fastDecoder) result(res *Result) bool {
	d.i++
	var (
		seen uint
		bad  bool
	)
	for n := 0; d.more('}', n, &bad); n++ {
		k, ok := d.key()
		if !ok {
			return false
		}
		var bit uint
		switch string(k) {
		case "error":
			bit, ok = 1<<0, d.stringField(&res.Error)
		case "last_insert_id":
			bit, ok = 1<<1, d.int64Field(&res.LastInsertID, &res.Write)
		case "rows_affected":
			bit, ok = 1<<2, d.int64Field(&res.RowsAffected, nil)
		case "columns":
			bit = 1 << 3
			res.Columns, ok = d.stringList(false)
		case "types":
			bit = 1 << 4
			res.Types, ok = d.stringList(true)
		case "values":
			bit = 1 << 5
			res.Values, ok = d.valueRows()
		case "rows":
			bit = 1 << 6
			res.Rows, ok = d.objectRows()
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
	return !bad
}

// int64Field reads a number into *p as json.Number.Int64 converts it,
// ignoring its error (as DecodeResponse does), and sets *set; null leaves
// both.
func (d *fastDecoder) int64Field(p *int64, set *bool) bool {
	num, isInt, null, ok := d.nullOrNumber(true)
	if null || !ok {
		return ok
	}
	n, small := int64(0), false
	if isInt {
		n, small = smallInt(num)
	}
	if !small {
		n, _ = strconv.ParseInt(string(num), 10, 64)
	}
	*p = n
	if set != nil {
		*set = true
	}
	return true
}

// stringList reads an array of strings (nil for null); types interns the
// usual declared types.
func (d *fastDecoder) stringList(types bool) ([]string, bool) {
	if !d.consume('[') {
		return nil, d.literal("null") // else not a list
	}
	var buf [16]string
	list := buf[:0]
	var bad bool
	for n := 0; d.more(']', n, &bad); n++ {
		s, _, ok := d.strBytes()
		if !ok {
			return nil, false
		}
		if types {
			list = append(list, declType(s))
		} else {
			list = append(list, string(s))
		}
	}
	if bad {
		return nil, false
	}
	out := make([]string, len(list))
	copy(out, list)
	return out, true
}

// declType returns s as a string, without allocating for the usual
// declared types.
func declType(s []byte) string {
	switch string(s) {
	case "INTEGER":
		return "INTEGER"
	case "TEXT":
		return "TEXT"
	case "REAL":
		return "REAL"
	case "BLOB":
		return "BLOB"
	case "NUMERIC":
		return "NUMERIC"
	case "INT":
		return "INT"
	}
	return string(s)
}

// valueRows reads "values": an array of rows, each an array of values
// (nil for null).
func (d *fastDecoder) valueRows() ([][]any, bool) {
	if !d.consume('[') {
		return nil, d.literal("null") // else not a list
	}
	rows := [][]any{}
	var bad bool
	for n := 0; d.more(']', n, &bad); n++ {
		if d.peek() != '[' {
			return nil, false
		}
		row, ok := d.valueRow()
		if !ok {
			return nil, false
		}
		rows = append(rows, row)
	}
	if bad {
		return nil, false
	}
	return rows, true
}

// valueRow reads one row of the values format, the cursor on its '['.
func (d *fastDecoder) valueRow() ([]any, bool) {
	d.i++
	var buf [16]any
	vals := buf[:0]
	var bad bool
	for n := 0; d.more(']', n, &bad); n++ {
		v, ok := d.value()
		if !ok {
			return nil, false
		}
		vals = append(vals, v)
	}
	if bad {
		return nil, false
	}
	row := make([]any, len(vals))
	copy(row, vals)
	return row, true
}

// objectRows reads "rows": an array of objects keyed by column name (nil
// for null). Key strings equal to the previous row's are shared.
func (d *fastDecoder) objectRows() ([]map[string]any, bool) {
	if !d.consume('[') {
		return nil, d.literal("null") // else not a list
	}
	rows := []map[string]any{}
	var buf [16]string
	keys := buf[:0]
	var bad bool
	for n := 0; d.more(']', n, &bad); n++ {
		if d.peek() != '{' {
			return nil, false
		}
		var (
			row map[string]any
			ok  bool
		)
		if row, keys, ok = d.objectRow(keys); !ok {
			return nil, false
		}
		rows = append(rows, row)
	}
	if bad {
		return nil, false
	}
	return rows, true
}

// objectRow reads one row of the rows format, the cursor on its '{'; keys
// are the previous row's keys, returned updated. A key given twice keeps
// its last value, as in encoding/json.
func (d *fastDecoder) objectRow(keys []string) (map[string]any, []string, bool) {
	d.i++
	row := make(map[string]any, len(keys))
	var bad bool
	for n := 0; d.more('}', n, &bad); n++ {
		s, plain, ok := d.strBytes()
		if !ok || !d.consume(':') {
			return nil, keys, false
		}
		var k string
		switch {
		case plain && n < len(keys) && keys[n] == string(s):
			k = keys[n]
		case n < len(keys):
			k = string(s)
			keys[n] = k
		default:
			k = string(s)
			keys = append(keys, k)
		}
		v, ok := d.value()
		if !ok {
			return nil, keys, false
		}
		row[k] = v
	}
	if bad {
		return nil, keys, false
	}
	return row, keys, true
}

// value reads a result value as decodeValue leaves it: null → nil,
// true/false → bool, numbers as NumberValue reads them (falling back to
// float64, then to the text, as decodeValue does), strings, and
// {"base64": "..."} → []byte.
func (d *fastDecoder) value() (any, bool) {
	switch c := d.peek(); c {
	case '"':
		return d.str()
	case 't':
		return true, d.literal("true")
	case 'f':
		return false, d.literal("false")
	case 'n':
		return nil, d.literal("null")
	case '{':
		return d.blob()
	default:
		if c != '-' && !isDigit(c) {
			return nil, false
		}
		num, isInt, ok := d.number()
		if !ok {
			return nil, false
		}
		return resultNumber(num, isInt), true
	}
}

// resultNumber is decodeValue of a json.Number.
func resultNumber(num []byte, isInt bool) any {
	if isInt {
		if n, ok := smallInt(num); ok {
			return n
		}
	} else if f, err := strconv.ParseFloat(string(num), 64); err == nil {
		return f
	}
	return decodeValue(json.Number(num))
}
