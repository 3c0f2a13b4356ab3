package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// Response is the reply to a request:
//
//	{"results": [...], "seq": N, "node": "<node id>", "time": <ms>}
//
// Seq is, for a write, the stream sequence of its entry; for a read, the
// sequence the node had applied when it read (pass it back as after_seq).
type Response struct {
	Results []Result
	Seq     uint64
	Node    string
	// Time is the node's processing time in milliseconds.
	Time float64
	// Duplicate is set when the idempotency key matched an entry already in
	// the stream's duplicate window: Seq is that entry's sequence and
	// Results is empty.
	Duplicate bool
	// Queued is set for a queue:true write answered once JetStream stored
	// the entry, before it was applied: Results is empty.
	Queued bool
	// Format is FormatRows or FormatValues; it chooses how Results encode.
	Format string
}

// Result is the outcome of one statement.
//
// A read gives Columns, Types (SQLite declared types, "" for
// expressions) and Values (one []any per row). A write gives LastInsertID
// and RowsAffected, and rows too when it has RETURNING. A failed statement
// gives only Error.
//
// Values are nil, int64, float64, string or []byte. Encoded as JSON, a
// REAL always carries a '.' or an exponent (1.0, not 1), so a client
// decoding with UseNumber tells INTEGER from REAL; ±Inf encode as ±1e999;
// a BLOB encodes as {"base64": "..."}.
type Result struct {
	Columns []string
	Types   []string
	Values  [][]any
	// Rows is filled only when decoding a rows-format response.
	Rows []map[string]any

	Write        bool
	LastInsertID int64
	RowsAffected int64

	Error string
}

// MarshalJSON encodes the response in its Format.
func (r *Response) MarshalJSON() ([]byte, error) {
	return r.AppendJSON(nil), nil
}

// AppendJSON appends the JSON encoding of r to b.
func (r *Response) AppendJSON(b []byte) []byte {
	b = append(b, `{"results":[`...)
	for i := range r.Results {
		if i > 0 {
			b = append(b, ',')
		}
		b = r.Results[i].appendJSON(b, r.Format)
	}
	b = append(b, `],"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"node":`...)
	b = AppendString(b, r.Node)
	b = append(b, `,"time":`...)
	b = strconv.AppendFloat(b, math.Round(r.Time*1000)/1000, 'f', -1, 64)
	if r.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	if r.Queued {
		b = append(b, `,"queued":true`...)
	}
	return append(b, '}')
}

func (res *Result) appendJSON(b []byte, format string) []byte {
	b = append(b, '{')
	if res.Error != "" {
		b = append(b, `"error":`...)
		b = AppendString(b, res.Error)
		return append(b, '}')
	}
	sep := false
	if res.Write {
		b = append(b, `"last_insert_id":`...)
		b = strconv.AppendInt(b, res.LastInsertID, 10)
		b = append(b, `,"rows_affected":`...)
		b = strconv.AppendInt(b, res.RowsAffected, 10)
		sep = true
	}
	if !res.Write || len(res.Columns) > 0 {
		if sep {
			b = append(b, ',')
		}
		if format == FormatValues {
			b = append(b, `"columns":[`...)
			for i, c := range res.Columns {
				if i > 0 {
					b = append(b, ',')
				}
				b = AppendString(b, c)
			}
			b = append(b, `],"types":[`...)
			for i, t := range res.Types {
				if i > 0 {
					b = append(b, ',')
				}
				b = AppendString(b, t)
			}
			b = append(b, `],"values":[`...)
			for i, row := range res.Values {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, '[')
				for j, v := range row {
					if j > 0 {
						b = append(b, ',')
					}
					b = AppendValue(b, v)
				}
				b = append(b, ']')
			}
			b = append(b, ']')
		} else {
			// Column names are encoded once and reused for every row.
			keys := make([][]byte, len(res.Columns))
			for i, c := range res.Columns {
				keys[i] = append(AppendString(nil, c), ':')
			}
			b = append(b, `"rows":[`...)
			for i, row := range res.Values {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, '{')
				for j, v := range row {
					if j > 0 {
						b = append(b, ',')
					}
					b = append(b, keys[j]...)
					b = AppendValue(b, v)
				}
				b = append(b, '}')
			}
			b = append(b, ']')
		}
	}
	return append(b, '}')
}

// AppendValue appends the JSON encoding of a SQLite value (see Result).
func AppendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case float64:
		return AppendReal(b, x)
	case string:
		return AppendString(b, x)
	case []byte:
		b = append(b, `{"base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, x)
		return append(b, `"}`...)
	default:
		return AppendString(b, fmt.Sprint(x))
	}
}

// AppendReal appends f as a JSON number that always reads back as a REAL:
// shortest round-trip digits, with ".0" added to integral values; +Inf and
// -Inf become 1e999 and -1e999; NaN becomes null.
func AppendReal(b []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(b, "1e999"...)
	case math.IsInf(f, -1):
		return append(b, "-1e999"...)
	case math.IsNaN(f):
		return append(b, "null"...)
	}
	n := len(b)
	b = strconv.AppendFloat(b, f, 'g', -1, 64)
	if bytes.IndexAny(b[n:], ".e") < 0 {
		b = append(b, ".0"...)
	}
	return b
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// DecodeResponse decodes a response body (either format) with UseNumber
// semantics: JSON integers become int64, other numbers float64,
// {"base64": ...} objects []byte. A body {"error": "..."} with no results
// is returned as an *Error (see DecodeError) with code (pass the
// Nats-Service-Error-Code header, or 0 when absent: CodeInternal), its
// kind ("code"), node and "seq".
//
// Bodies in the shapes AppendJSON writes are decoded by a single-pass fast
// path (decodeResponseFast, fastjson.go); every other body, and every body
// that is an error or fails, goes through decodeResponseJSON, the
// encoding/json decoding, so results and errors are the same either way.
func DecodeResponse(data []byte, code int) (*Response, error) {
	if resp, ok := decodeResponseFast(data); ok {
		return resp, nil
	}
	return decodeResponseJSON(data, code)
}

// decodeResponseJSON is DecodeResponse decoded with encoding/json: the
// reference the fast path must agree with.
func decodeResponseJSON(data []byte, code int) (*Response, error) {
	var raw struct {
		Results []struct {
			Error        *string          `json:"error"`
			LastInsertID *json.Number     `json:"last_insert_id"`
			RowsAffected *json.Number     `json:"rows_affected"`
			Columns      []string         `json:"columns"`
			Types        []string         `json:"types"`
			Values       [][]any          `json:"values"`
			Rows         []map[string]any `json:"rows"`
		} `json:"results"`
		Seq       uint64  `json:"seq"`
		Node      string  `json:"node"`
		Time      float64 `json:"time"`
		Duplicate bool    `json:"duplicate"`
		Queued    bool    `json:"queued"`
		Error     *string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		if code != 0 {
			return nil, DecodeError(data, code, "")
		}
		return nil, fmt.Errorf("decode response: %w", err)
	}
	if raw.Error != nil && raw.Results == nil {
		return nil, DecodeError(data, code, "")
	}
	resp := &Response{Seq: raw.Seq, Node: raw.Node, Time: raw.Time, Duplicate: raw.Duplicate, Queued: raw.Queued, Format: FormatRows}
	for _, r := range raw.Results {
		var res Result
		if r.Error != nil {
			res.Error = *r.Error
		}
		if r.LastInsertID != nil {
			res.Write = true
			res.LastInsertID, _ = r.LastInsertID.Int64()
		}
		if r.RowsAffected != nil {
			res.RowsAffected, _ = r.RowsAffected.Int64()
		}
		res.Columns, res.Types = r.Columns, r.Types
		if r.Values != nil {
			resp.Format = FormatValues
			res.Values = make([][]any, len(r.Values))
			for i, row := range r.Values {
				res.Values[i] = make([]any, len(row))
				for j, v := range row {
					res.Values[i][j] = decodeValue(v)
				}
			}
		}
		if r.Rows != nil {
			res.Rows = r.Rows
			for _, row := range r.Rows {
				for k, v := range row {
					row[k] = decodeValue(v)
				}
			}
		}
		resp.Results = append(resp.Results, res)
	}
	return resp, nil
}

func decodeValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		val, err := NumberValue(string(x))
		if err != nil {
			if f, ferr := strconv.ParseFloat(string(x), 64); ferr == nil || math.IsInf(f, 0) {
				return f
			}
			return string(x)
		}
		return val
	case map[string]any:
		if isBlobObject(x) {
			if b, err := base64.StdEncoding.DecodeString(x["base64"].(string)); err == nil {
				return b
			}
		}
	}
	return v
}
