package apply

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nqlite/nqlite/service/api"
)

// Entry is one message on a database's stream: the statements of a request
// that writes, and everything a node needs to apply them with the same
// outcome as every other node.
//
// Encoded as JSON:
//
//	{"v":1,"node":"n1","tok":"...","t":1732200000123,"seed":-42,"tx":true,
//	 "stmts":[{"sql":"INSERT ...","p":[1,2.0,"x",{"base64":"AAE="},null]},
//	          {"sql":"...","n":{"name":1}}]}
//
// Parameter values use the api package's JSON conventions (a REAL always
// has '.' or an exponent), so integers stay INTEGER.
type Entry struct {
	// Node is the id of the node that accepted the request; Token is that
	// node's handle for the waiting request. Other nodes ignore both.
	Node  string
	Token string
	// Time is 'now' for the whole entry, in Unix milliseconds.
	Time int64
	// Seed seeds random() and randomblob().
	Seed int64
	// Tx makes all statements commit or none.
	Tx         bool
	Statements []api.Statement
}

// EntryVersion is the entry format this code writes and reads.
const EntryVersion = 1

// Encode returns the entry's stream message body.
func (e *Entry) Encode() []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"v":1,"node":`...)
	b = api.AppendString(b, e.Node)
	b = append(b, `,"tok":`...)
	b = api.AppendString(b, e.Token)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, e.Time, 10)
	b = append(b, `,"seed":`...)
	b = strconv.AppendInt(b, e.Seed, 10)
	if e.Tx {
		b = append(b, `,"tx":true`...)
	}
	b = append(b, `,"stmts":[`...)
	for i, st := range e.Statements {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"sql":`...)
		b = api.AppendString(b, st.SQL)
		if st.Params != nil {
			b = append(b, `,"p":[`...)
			for j, v := range st.Params {
				if j > 0 {
					b = append(b, ',')
				}
				b = api.AppendValue(b, v)
			}
			b = append(b, ']')
		}
		if st.Named != nil {
			b = append(b, `,"n":{`...)
			j := 0
			for k, v := range st.Named {
				if j > 0 {
					b = append(b, ',')
				}
				j++
				b = api.AppendString(b, k)
				b = append(b, ':')
				b = api.AppendValue(b, v)
			}
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

type rawEntry struct {
	V     int    `json:"v"`
	Node  string `json:"node"`
	Tok   string `json:"tok"`
	T     int64  `json:"t"`
	Seed  int64  `json:"seed"`
	Tx    bool   `json:"tx"`
	Stmts []struct {
		SQL *string        `json:"sql"`
		P   []any          `json:"p"`
		N   map[string]any `json:"n"`
	} `json:"stmts"`
}

// ErrInvalidEntry is wrapped by DecodeEntry's errors: the message is not an
// entry this version can apply. Every node skips such a message the same way.
var ErrInvalidEntry = errors.New("invalid entry")

// DecodeEntry decodes a stream message body.
func DecodeEntry(data []byte) (*Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	var r rawEntry
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidEntry, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the entry", ErrInvalidEntry)
	}
	if r.V != EntryVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrInvalidEntry, r.V, EntryVersion)
	}
	if len(r.Stmts) == 0 {
		return nil, fmt.Errorf("%w: no statements", ErrInvalidEntry)
	}
	e := &Entry{Node: r.Node, Token: r.Tok, Time: r.T, Seed: r.Seed, Tx: r.Tx, Statements: make([]api.Statement, len(r.Stmts))}
	for i, s := range r.Stmts {
		if s.SQL == nil {
			return nil, fmt.Errorf("%w: statement %d has no sql", ErrInvalidEntry, i+1)
		}
		st := api.Statement{SQL: *s.SQL}
		if s.P != nil {
			st.Params = make([]any, len(s.P))
			for j, v := range s.P {
				val, err := api.ValueFromJSON(v)
				if err != nil {
					return nil, fmt.Errorf("%w: statement %d parameter %d: %v", ErrInvalidEntry, i+1, j+1, err)
				}
				st.Params[j] = val
			}
		}
		if s.N != nil {
			st.Named = make(map[string]any, len(s.N))
			for k, v := range s.N {
				val, err := api.ValueFromJSON(v)
				if err != nil {
					return nil, fmt.Errorf("%w: statement %d parameter %q: %v", ErrInvalidEntry, i+1, k, err)
				}
				st.Named[k] = val
			}
		}
		e.Statements[i] = st
	}
	return e, nil
}
