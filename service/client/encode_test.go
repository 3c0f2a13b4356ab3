package client_test

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// TestRequestEncode_ParseRequest: random requests written by
// Request.Encode decode with api.ParseRequest's fast path (an exact
// "statements" key) to what its encoding/json path gives (the same body
// with the key spelled "Statements", which encoding/json matches
// case-insensitively and the fast path leaves to it), errors included.
func TestRequestEncode_ParseRequest(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	values := []any{nil, int64(0), int64(-1), int64(math.MaxInt64), int64(math.MinInt64), int64(5123), 0.5, -0.0, 1.0, 1e21, 5e-324,
		math.MaxFloat64, math.Inf(1), math.Inf(-1), math.NaN(), "", "value-5123", "a\"\\/\n\r\t\x00\x1f\x7fé日本😀\u2028\ufffd\xff",
		[]byte{}, []byte{0, 1, 255}, []byte("base64")}
	sqls := []string{"SELECT ?", "SELECT id, v FROM kv WHERE id = ?", "INSERT INTO t VALUES(?, ?)", "SELECT :a, @b", "SELECT 'é😀\"\\'",
		"SELECT 1; SELECT 2", "", "SELECT '\x00'"}
	names := []string{"a", "b", "é", "base64", "", ":a"}
	for i := 0; i < 2000; i++ {
		var req client.Request
		for n := 1 + r.IntN(3); n > 0; n-- {
			st := api.Statement{SQL: sqls[r.IntN(len(sqls))]}
			switch r.IntN(3) {
			case 1:
				for k := r.IntN(4); k > 0; k-- {
					st.Params = append(st.Params, values[r.IntN(len(values))])
				}
			case 2:
				st.Named = map[string]any{}
				for k := r.IntN(3); k > 0; k-- {
					st.Named[names[r.IntN(len(names))]] = values[r.IntN(len(values))]
				}
			}
			req.Statements = append(req.Statements, st)
		}
		req.Transaction, req.Queue = r.IntN(2) == 0, r.IntN(4) == 0
		req.Level = []string{"", api.LevelNone, api.LevelStrong, "weak", "bad"}[r.IntN(5)]
		req.Format = []string{"", api.FormatRows, api.FormatValues, "bad"}[r.IntN(4)]
		req.AfterSeq = r.Uint64() >> r.IntN(64)
		req.TimeoutMS = []int{0, 1, 250, api.MaxTimeoutMS, api.MaxTimeoutMS + 1, -1}[r.IntN(6)]
		req.ID = []string{"", "w-1", "é😀", "a\nb", strings.Repeat("k", 257)}[r.IntN(5)]

		body := req.Encode()
		fast, ferr := api.ParseRequest(body)
		slow, serr := api.ParseRequest(bytes.Replace(body, []byte(`{"statements":`), []byte(`{"Statements":`), 1))
		if (ferr == nil) != (serr == nil) || (ferr != nil && !sameNamedErr(ferr, serr)) {
			t.Fatalf("%s:\nfast path     %v\nencoding/json %v", body, ferr, serr)
		}
		if ferr == nil && (!reflect.DeepEqual(fast, slow) || fmt.Sprintf("%#v", *fast) != fmt.Sprintf("%#v", *slow)) {
			t.Fatalf("%s:\nfast path     %#v\nencoding/json %#v", body, *fast, *slow)
		}
	}
}

// sameNamedErr compares two errors, but not which of several refused
// named parameters each names: statementsFromJSON reports the first in
// map order.
func sameNamedErr(a, b error) bool {
	if strings.Contains(a.Error(), "parameter \"") {
		return strings.Contains(b.Error(), "parameter \"")
	}
	return a.Error() == b.Error()
}
