package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fast paths (fastjson.go) must agree with the encoding/json decoding
// whenever they answer: same value (reflect.DeepEqual, and the same %#v,
// which tells -0 from 0 and nil from empty), and the encoding/json path
// must not fail there. When they decline, ParseRequest and DecodeResponse
// run that path itself.

// sameValue reports whether got and want are equal for DeepEqual and for
// %#v (which DeepEqual alone is not: 0.0 == -0.0, NaN != NaN).
func sameValue(got, want any) bool {
	return reflect.DeepEqual(got, want) && fmt.Sprintf("%#v", got) == fmt.Sprintf("%#v", want)
}

// checkRequest checks parseRequestFast against parseRequestJSON on data
// and reports whether the fast path answered.
func checkRequest(t testing.TB, data []byte) bool {
	t.Helper()
	return checkFast(t, data, parseRequestFast, parseRequestJSON, ParseRequest)
}

// checkResponse is checkRequest for decodeResponseFast.
func checkResponse(t testing.TB, data []byte) bool {
	t.Helper()
	old := func(data []byte) (*Response, error) { return decodeResponseJSON(data, 0) }
	public := func(data []byte) (*Response, error) { return DecodeResponse(data, 503) }
	return checkFast(t, data, decodeResponseFast, old, public)
}

// checkFast checks a fast path against the encoding/json path it stands
// in front of, and the public function against both, on data; it reports
// whether the fast path answered.
func checkFast[T any](t testing.TB, data []byte, fastPath func([]byte) (*T, bool), jsonPath, public func([]byte) (*T, error)) bool {
	t.Helper()
	fast, ok := fastPath(data)
	want, err := jsonPath(data)
	if !ok {
		return false
	}
	if err != nil {
		t.Fatalf("%q: the fast path answered %#v, encoding/json fails: %v", data, fast, err)
	}
	if !sameValue(*fast, *want) {
		t.Fatalf("%q:\nfast path     %#v\nencoding/json %#v", data, *fast, *want)
	}
	if pub, err := public(data); err != nil || !sameValue(*pub, *want) {
		t.Fatalf("%q: the public function gives %#v, %v", data, pub, err)
	}
	return true
}

// TestFastPath_Taken: the shapes the project's encoders write are decoded
// by the fast paths, not silently handed to encoding/json.
func TestFastPath_Taken(t *testing.T) {
	for _, s := range []string{
		`{"statements":[["SELECT id, v FROM kv WHERE id = ?",5123]]}`,
		`{"statements":["SELECT 1"]}`,
		`{"statements":"SELECT 1; SELECT 2"}`,
		`["SELECT 1",["SELECT ?, ?",1,2]]`,
		`{"statements":[["INSERT INTO t VALUES(?, ?, ?, ?, ?, ?)",null,-9223372036854775808,1.5e-300,"a\"\\\n\u0001é😀",{"base64":"AQI="},[1,2,255]]],"transaction":true,"level":"strong","after_seq":18446744073709551615,"queue":true,"id":"k-1","format":"values","timeout_ms":600000}`,
		`{"statements":[["SELECT :a, @b, $c",{":a":1,"@b":"x","$c":{"base64":""}}]],"level":"none"}`,
		` {"timeout_ms": 1, "statements": [ ["SELECT ?", true ] ] , "format":"rows"}` + "\n",
	} {
		if !checkRequest(t, []byte(s)) {
			t.Errorf("request %s: the fast path declined", s)
		}
	}
	r := Response{Results: []Result{
		{Columns: []string{"id", "v"}, Types: []string{"INTEGER", "TEXT"}, Values: [][]any{{int64(5123), "value-5123"}, {nil, 2.5}, {[]byte{1}, math.Inf(-1)}}},
		{Write: true, LastInsertID: 5, RowsAffected: 1},
		{Write: true, LastInsertID: 6, RowsAffected: 1, Columns: []string{"id"}, Types: []string{""}, Values: [][]any{{int64(6)}}},
		{Error: "no such table: x"},
		{Columns: []string{}, Types: []string{}, Values: [][]any{}},
	}, Seq: 10021, Node: "n1", Time: 0.031}
	for _, format := range []string{FormatValues, FormatRows} {
		r.Format = format
		if b := r.AppendJSON(nil); !checkResponse(t, b) {
			t.Errorf("response %s: the fast path declined", b)
		}
	}
	for _, s := range []string{
		`{"results":[],"seq":7,"node":"n2","time":0,"duplicate":true}`,
		`{"results":[],"seq":7,"node":"n2","time":0.5,"queued":true}`,
		`{"results":[{"rows":[{"id":5123,"v":"value-5123"}]}],"seq":10021,"node":"n1","time":0.031}`,
		` { "time" : 1 , "results" : [ { "rows" : [ ] } ] } trailing data is not read`,
	} {
		if !checkResponse(t, []byte(s)) {
			t.Errorf("response %s: the fast path declined", s)
		}
	}
	// service/client's TestRequestEncode_ParseRequest relies on this one
	// being left to encoding/json.
	if _, ok := parseRequestFast([]byte(`{"Statements":["SELECT 1"]}`)); ok {
		t.Error(`{"Statements": ...}: the fast path answered`)
	}
}

// requestEdgeCases are hand-written requests, valid and not, around what
// the fast path decides.
var requestEdgeCases = []string{
	// White space and key order.
	" \t\r\n{ \"statements\" :\n[ [ \"SELECT ?\" ,\t1 ] , \"SELECT 2\" ] }\r\n\t ",
	"\f\v{\"statements\":[\"SELECT 1\"]}",
	"{\"statements\":[\"SELECT 1\"]}\f",
	"{\"statements\":[\"SELECT 1\"]}\v",
	`{"id":"x","format":"values","level":"strong","statements":["SELECT 1"]}`,
	`{"statements":["SELECT 1"]}   `,
	// Unknown, differently-cased and duplicate keys.
	`{"statements":["SELECT 1"],"foo":1}`,
	`{"Statements":["SELECT 1"]}`,
	`{"STATEMENTS":["SELECT 1"],"LEVEL":"strong"}`,
	`{"ſtatements":["SELECT 1"]}`,
	`{"st\u0061tements":["SELECT 1"]}`,
	`{"statements":["SELECT 1"],"statements":["SELECT 2"]}`,
	`{"statements":["SELECT 1"],"level":"strong","level":"none"}`,
	`{"statements":["SELECT 1"],"timeout_ms":5,"timeout_ms":null}`,
	`{"statements":["SELECT 1"],"Level":"strong"}`,
	// Nulls and empty arrays.
	`{"statements":null}`, `{"statements":["SELECT 1"],"level":null,"format":null,"id":null,"timeout_ms":null,"transaction":null,"queue":null,"after_seq":null}`,
	`[null]`, `[["SELECT ?",null]]`, `[["SELECT ?",null,null]]`, `{"statements":[]}`, `[]`, `[[]]`, `[["SELECT ?",[]]]`,
	`[["SELECT 1",{}]]`, `[["SELECT 1",{},1]]`, `{}`, `{"statements":[[null]]}`, `[[1]]`, `[["SELECT 1"]]`,
	// Numbers.
	`[["SELECT ?",9223372036854775807,-9223372036854775808]]`, `[["SELECT ?",9223372036854775808]]`, `[["SELECT ?",-9223372036854775809]]`,
	`[["SELECT ?",123456789012345678,-123456789012345678,1234567890123456789,-1234567890123456789]]`,
	`[["SELECT ?",1e400]]`, `[["SELECT ?",-1e400]]`, `[["SELECT ?",1e-400]]`, `[["SELECT ?",-1e-400]]`, `[["SELECT ?",4e-324,2e-324]]`,
	`[["SELECT ?",1.0,1E5,1e+5,1e-5,-0,-0.0,0.0e0,0e0,-0E-0,1.7976931348623157e308,1.7976931348623159e308]]`,
	`[["SELECT ?",00]]`, `[["SELECT ?",01]]`, `[["SELECT ?",1.]]`, `[["SELECT ?",.5]]`, `[["SELECT ?",-]]`, `[["SELECT ?",+1]]`,
	`[["SELECT ?",0x1]]`, `[["SELECT ?",1e]]`, `[["SELECT ?",1e+]]`, `[["SELECT ?",1.5.5]]`, `[["SELECT ?",--1]]`, `[["SELECT ?",Infinity]]`, `[["SELECT ?",NaN]]`,
	`[["SELECT ?",1` + strings.Repeat("0", 400) + `]]`, `[["SELECT ?",1` + strings.Repeat("0", 400) + `.0]]`, `[["SELECT ?",0.` + strings.Repeat("0", 400) + `1]]`,
	`[["SELECT ?",true,false]]`, `[["SELECT ?",tru]]`, `[["SELECT ?",truex]]`, `[["SELECT ?",nul]]`, `[["SELECT ?",True]]`,
	// Strings.
	`[["SELECT ?","\u00e9\u00E9","\uD83D\uDE00","\ud83d\ude00","\uD800","\uDC00","\uD800\u0041","\uD800\uD800\uDC00","\uDC00\uD800","\uD800\\u0041"]]`,
	`[["SELECT ?","\/\b\f\n\r\t\"\\","\u0000","\u001f","\u007f","\u2028"]]`,
	`[["SELECT ?","\'"]]`, `[["SELECT ?","\x41"]]`, `[["SELECT ?","\u12"]]`, `[["SELECT ?","\u12G4"]]`, `[["SELECT ?","\`, `[["SELECT ?","a` + "\x01" + `"]]`,
	`[["SELECT ?","a` + "\x7f" + `"]]`, `[["SELECT ?","a` + "\xff" + `"]]`, `[["SELECT ?","é日本😀"]]`, `[["SELECT ?","\ufffd` + "\xef\xbf\xbd" + `"]]`,
	`[["SELECT ?","a` + "\t" + `"]]`, `[["SELECT ?","a` + "\n" + `"]]`,
	// BLOBs.
	`[["SELECT ?",{"base64":"AQI="}]]`, `[["SELECT ?",{"base64":"!!"}]]`, `[["SELECT ?",{"base64":5}]]`, `[["SELECT ?",{"base64":"AQI=","x":1}]]`,
	`[["SELECT ?",{"base64":"AQI=","base64":"AA=="}]]`, `[["SELECT ?",{"base\u0036\u0034":"AQI="}]]`, `[["SELECT ?",{"BASE64":"AQI="}]]`,
	`[["SELECT ?",{"base64":"AQ\nI="}]]`, `[["SELECT ?",{"base64":"AQ\rI="}]]`, `[["SELECT ?",{"base64":"AQI"}]]`, `[["SELECT ?",{"base64":""}]]`, `[["SELECT ?",{"base64":null}]]`,
	`[["SELECT ?, ?",1,{"base64":"AQI="}]]`, `[["SELECT ?, ?",{"base64":"AQI="},1]]`, `[["SELECT ?, ?",1,{"base64":"!!"}]]`, `[["SELECT ?",{ "base64" : "AQI=" }]]`,
	`[["SELECT ?",[0,1,255]]]`, `[["SELECT ?",[256]]]`, `[["SELECT ?",[-1]]]`, `[["SELECT ?",[-0]]]`, `[["SELECT ?",[1.0]]]`, `[["SELECT ?",[1e0]]]`, `[["SELECT ?",["1"]]]`,
	`[["SELECT ?",[0E0]]]`, `[["SELECT ?",[0.0]]]`, `[["SELECT ?",[null]]]`, `[["SELECT ?",[[1]]]]`, `[["SELECT ?",[1000]]]`, `[["SELECT ?",[001]]]`,
	// Named parameters.
	`[["SELECT :a",{":a":1}]]`, `[["SELECT @a",{"@a":1}]]`, `[["SELECT $a",{"$a":1}]]`, `[["SELECT :a",{"a":1}]]`, `[["SELECT :a",{":a":1,"@a":2}]]`,
	`[["SELECT :a",{":a":1,":a":2}]]`, `[["SELECT :a",{":":1}]]`, `[["SELECT :a",{"":1}]]`, `[["SELECT :a",{"::a":1}]]`, `[["SELECT :a",{":\u0061":1,"b":2}]]`,
	`[["SELECT :a",{":a":{"base64":"AA=="}}]]`, `[["SELECT :a",{":a":[1,2]}]]`, `[["SELECT :a",{":a":{"b":1}}]]`, `[["SELECT :a",{":a":1},2]]`, `[["SELECT :a",1,{":a":1}]]`,
	`[["SELECT :a",{":a":true,":b":false,":c":null,":d":"x",":e":1.5,":f":9223372036854775808}]]`, `[["SELECT :a",{":a":1e400,":b":-0.0}]]`,
	`[["SELECT :base64",{"base64":1}]]`, `[["SELECT :base64",{":base64":"AA=="}]]`, `[["SELECT :a",{"base64":"AA==",":a":1}]]`, `[["SELECT :a",{":a":1,"base64":"AA=="}]]`,
	`[["SELECT :a",{":a":"` + "\xff" + `"}]]`, `[["SELECT :a",{":é":1}]]`, `[["SELECT :a",{":a" 1}]]`, `[["SELECT :a",{":a":1,}]]`, `[["SELECT :a",{,":a":1}]]`, `[["SELECT :a",{1:1}]]`,
	// Statements.
	`["SELECT 1; SELECT 2"]`, `[""]`, `["-- c"]`, `["SELECT 1;"]`, `[";SELECT 1;;"]`, `["SELECT '\u0000'"]`, `[["SELECT 1\u0000"]]`, `{"statements":"SELECT 1\u0000"}`,
	`{"statements":"SELECT 1; SELECT 2"}`, `{"statements":""}`, `{"statements":"-- only"}`, `{"statements":5}`, `{"statements":{}}`, `{"statements":true}`,
	`["CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END"]`, `[["SELECT 1",1],"SELECT 2",["SELECT 3"]]`,
	// Options.
	`{"statements":["SELECT 1"],"level":"weak"}`, `{"statements":["SELECT 1"],"level":""}`, `{"statements":["SELECT 1"],"level":"STRONG"}`, `{"statements":["SELECT 1"],"level":1}`,
	`{"statements":["SELECT 1"],"format":"values"}`, `{"statements":["SELECT 1"],"format":""}`, `{"statements":["SELECT 1"],"format":"csv"}`, `{"statements":["SELECT 1"],"format":"v\u0061lues"}`,
	`{"statements":["SELECT 1"],"timeout_ms":0}`, `{"statements":["SELECT 1"],"timeout_ms":1}`, `{"statements":["SELECT 1"],"timeout_ms":600000}`, `{"statements":["SELECT 1"],"timeout_ms":600001}`,
	`{"statements":["SELECT 1"],"timeout_ms":-1}`, `{"statements":["SELECT 1"],"timeout_ms":-0}`, `{"statements":["SELECT 1"],"timeout_ms":1.5}`, `{"statements":["SELECT 1"],"timeout_ms":1e3}`,
	`{"statements":["SELECT 1"],"timeout_ms":"5"}`, `{"statements":["SELECT 1"],"timeout_ms":99999999999999999999}`,
	`{"statements":["SELECT 1"],"after_seq":-1}`, `{"statements":["SELECT 1"],"after_seq":1.0}`, `{"statements":["SELECT 1"],"after_seq":18446744073709551615}`,
	`{"statements":["SELECT 1"],"after_seq":18446744073709551616}`, `{"statements":["SELECT 1"],"after_seq":-0}`, `{"statements":["SELECT 1"],"after_seq":0}`, `{"statements":["SELECT 1"],"after_seq":"7"}`,
	`{"statements":["SELECT 1"],"id":"` + strings.Repeat("x", 256) + `"}`, `{"statements":["SELECT 1"],"id":"` + strings.Repeat("x", 257) + `"}`,
	`{"statements":["SELECT 1"],"id":"a\nb"}`, `{"statements":["SELECT 1"],"id":"a\u007fb"}`, `{"statements":["SELECT 1"],"id":"é😀"}`, `{"statements":["SELECT 1"],"id":"\uD800"}`, `{"statements":["SELECT 1"],"id":5}`,
	`{"statements":["SELECT 1"],"transaction":1}`, `{"statements":["SELECT 1"],"transaction":"true"}`, `{"statements":["SELECT 1"],"queue":false,"transaction":false}`,
	// Trailing data and syntax.
	`{"statements":["SELECT 1"]} {}`, `{"statements":["SELECT 1"]}]`, `{"statements":["SELECT 1"]}}`, `{"statements":["SELECT 1"]}x`, `{"statements":["SELECT 1"]}` + "\x00",
	`["SELECT 1"]]`, `["SELECT 1"]}`, `["SELECT 1"] ["SELECT 2"]`, `{"statements":["SELECT 1"],}`, `{,"statements":["SELECT 1"]}`, `["SELECT 1",]`, `[,"SELECT 1"]`,
	`{"statements" ["SELECT 1"]}`, `{"statements":["SELECT 1"] "level":"strong"}`, `{statements:["SELECT 1"]}`, `{'statements':["SELECT 1"]}`, "\xef\xbb\xbf[\"SELECT 1\"]",
	"[\"SELECT 1\"]\xff", `SELECT 1`, ``, `   `,
}

var responseEdgeCases = []string{
	// White space and key order.
	" \t\r\n{ \"results\" :\n[ { \"columns\" : [ \"a\" ] , \"types\" : [ \"\" ] , \"values\" : [ [ 1 ] ] } ] ,\"seq\":1 }\r\n",
	`{"seq":1,"node":"n","time":2,"results":[{"values":[[1]],"types":["INTEGER"],"columns":["a"]}]}`,
	`{"results":[{"rows_affected":1,"last_insert_id":2}]}`,
	"\f{\"results\":[]}", "\xef\xbb\xbf{\"results\":[]}",
	// Unknown, differently-cased and duplicate keys.
	`{"results":[],"code":"x"}`, `{"Results":[]}`, `{"results":[],"SEQ":1}`, `{"results":[{"Values":[[1]]}]}`, `{"results":[{"x":1}]}`,
	`{"results":[],"seq":1,"seq":2}`, `{"results":[{"values":[[1]]}],"results":[{"columns":["a"]}]}`, `{"results":[{"values":[[1]],"values":[[2]]}]}`,
	`{"results":[{"rows":[{"a":1,"a":2}]}]}`, `{"results":[{"rows":[{"a":1,"b":2},{"b":3,"a":4},{"a":5}]}]}`, `{"res\u0075lts":[]}`,
	`{"results":[{"rows":[{"a":1}],"rows":[{"b":2}]}]}`, `{"results":[{"values":[[1,2]],"values":[[3]]}]}`, `{"results":[{"last_insert_id":1,"last_insert_id":null}]}`,
	`{"results":[{"columns":["a","b"]}],"results":[{"types":["c"]}]}`, `{"results":[{"error":"x","error":"y"}]}`, `{"results":[],"results":null}`, `{"results":[{"rows":[{"\u0061":1,"a":2}]}]}`,
	// Error bodies.
	`{"error":"x","code":"bad_request","node":"n2"}`, `{"results":[],"error":"x"}`, `{"error":null}`, `{"results":[{"error":"x"}]}`, `{"results":[{"error":null}]}`, `{"results":[{"error":""}]}`,
	`{"results":[{"error":5}]}`,
	// Nulls and empty arrays.
	`{"results":null}`, `{"results":[null]}`, `{"results":[{"columns":null,"types":null,"values":null,"rows":null}]}`, `{"results":[{"values":[null]}]}`,
	`{"results":[{"rows":[null]}]}`, `{"results":[{"values":[[null]]}]}`, `{"results":[{"columns":[null]}]}`, `{"results":[{"last_insert_id":null,"rows_affected":null}]}`,
	`{"results":[],"seq":null,"node":null,"time":null,"duplicate":null,"queued":null}`, `{"results":[{}]}`, `{"results":[{"values":[]}]}`, `{"results":[{"values":[[]]}]}`,
	`{"results":[{"rows":[]}]}`, `{"results":[{"rows":[{}]}]}`, `{"results":[{"columns":[],"types":[]}]}`, `{}`, `null`, `[]`, `"x"`, `5`, ``,
	// Numbers.
	`{"results":[{"values":[[9223372036854775807,-9223372036854775808,9223372036854775808,-9223372036854775809,123456789012345678,1234567890123456789]]}]}`,
	`{"results":[{"values":[[1e400,-1e400,1e-400,-1e-400,4e-324,-0,-0.0,0.0,1.0,1E5,1e+5,1` + strings.Repeat("0", 400) + `]]}]}`,
	`{"results":[{"values":[[01]]}]}`, `{"results":[{"values":[[1.]]}]}`, `{"results":[{"values":[[-]]}]}`, `{"results":[{"values":[[+1]]}]}`, `{"results":[{"values":[[.5]]}]}`,
	`{"results":[{"last_insert_id":1.5,"rows_affected":1e3}]}`, `{"results":[{"last_insert_id":99999999999999999999,"rows_affected":-99999999999999999999}]}`,
	`{"results":[{"last_insert_id":"5"}]}`, `{"results":[{"last_insert_id":-0}]}`, `{"results":[{"last_insert_id":true}]}`,
	`{"results":[],"seq":-1}`, `{"results":[],"seq":1.5}`, `{"results":[],"seq":18446744073709551615}`, `{"results":[],"seq":18446744073709551616}`, `{"results":[],"seq":"1"}`,
	`{"results":[],"time":1e400}`, `{"results":[],"time":-1e-400}`, `{"results":[],"time":-0}`, `{"results":[],"time":"1"}`, `{"results":[],"time":true}`,
	// Values.
	`{"results":[{"values":[[true,false,null,"s",{"base64":"AQI="}]]}]}`, `{"results":[{"values":[[[1]]]}]}`, `{"results":[{"values":[[{"a":1}]]}]}`,
	`{"results":[{"values":[[{"base64":"!!"}]]}]}`, `{"results":[{"values":[[{"base64":"AQI=","x":1}]]}]}`, `{"results":[{"values":[[{"base64":1}]]}]}`,
	`{"results":[{"values":[[{"base64":""}]]}]}`, `{"results":[{"values":[[{"base64":"AQ\nI="}]]}]}`, `{"results":[{"values":[[{}]]}]}`, `{"results":[{"values":[1]}]}`,
	`{"results":[{"rows":[{"a":[1]}]}]}`, `{"results":[{"rows":[{"a":{"base64":"AQI="}}]}]}`, `{"results":[{"rows":[1]}]}`, `{"results":[{"columns":"a"}]}`,
	// Strings and invalid UTF-8.
	`{"results":[{"values":[["\u00e9","\uD83D\uDE00","\uD800","\uDC00","\uD800\u0041","\uD800\uD800\uDC00","\/\b\f\n\r\t\"\\","\u0000"]]}]}`,
	`{"results":[{"values":[["` + "\xff" + `","a` + "\xc3" + `","` + "\xed\xa0\x80" + `","` + "\xef\xbf\xbd" + `","` + "\xf4\x90\x80\x80" + `"]]}],"node":"` + "\xfe" + `"}`,
	`{"results":[{"columns":["` + "\xff" + `"],"types":["` + "\xff" + `"],"rows":[{"` + "\xff" + `":1}]}]}`, `{"results":[{"values":[["a` + "\x01" + `"]]}]}`,
	`{"results":[{"values":[["\'"]]}]}`, `{"results":[{"values":[["\u12"]]}]}`, `{"results":[{"types":["INTEGER","TEXT","REAL","BLOB","NUMERIC","INT","","integer","INT\u0045GER"]}]}`,
	// Trailing data and syntax.
	`{"results":[]}xyz`, `{"results":[]}}`, `{"results":[]} {"results":[{}]}`, `{"results":[],}`, `{"results":[{},]}`, `{,"results":[]}`, `{"results" []}`,
	`{"results":[{"values":[[1,]]}]}`, `{"results":[{"values":[[1 2]]}]}`, `{"results":[],"node":"a"` + "\x00" + `}`, `{"results":[]`,
}

func TestFastPath_EdgeCases(t *testing.T) {
	for _, s := range requestEdgeCases {
		checkRequest(t, []byte(s))
	}
	for _, s := range responseEdgeCases {
		checkResponse(t, []byte(s))
	}
}

// TestFastPath_Truncated: every prefix of a few bodies.
func TestFastPath_Truncated(t *testing.T) {
	for _, s := range requestEdgeCases[:5] {
		for i := 0; i <= len(s); i++ {
			checkRequest(t, []byte(s[:i]))
		}
	}
	for _, s := range []string{
		`{"statements":[["INSERT INTO t VALUES(?, ?, ?, ?)",-1.5e-7,"a\u00e9\uD83D\uDE00\n",{"base64":"AQI="},[1,2]],["SELECT :a",{":a":null}]],"transaction":true,"timeout_ms":10,"id":"x"}`,
		`[["SELECT ?",true,false,null,123]]`,
	} {
		for i := 0; i <= len(s); i++ {
			checkRequest(t, []byte(s[:i]))
		}
	}
	for _, s := range responseEdgeCases[:3] {
		for i := 0; i <= len(s); i++ {
			checkResponse(t, []byte(s[:i]))
		}
	}
	for _, s := range []string{
		`{"results":[{"columns":["id","v"],"types":["INTEGER","TEXT"],"values":[[5123,"value-\u00e9",-0.5e3,true,null,{"base64":"AQI="}]]},{"last_insert_id":1,"rows_affected":2},{"error":"e"}],"seq":10021,"node":"n1","time":0.031,"duplicate":false,"queued":false}`,
		`{"results":[{"rows":[{"id":5123,"v":"value-5123"},{"id":1e5,"v":null}]}],"seq":10021,"node":"n1","time":0.031}`,
	} {
		for i := 0; i <= len(s); i++ {
			checkResponse(t, []byte(s[:i]))
		}
	}
}

// Random requests and responses, written by the project's encoders
// (Request.Encode, AppendValue), then respelled.

func randInt(r *rand.Rand) int64 {
	switch r.IntN(8) {
	case 0:
		return math.MinInt64
	case 1:
		return math.MaxInt64
	case 2:
		return 0
	case 3:
		return -1
	case 4:
		return int64(r.Uint64())
	case 5:
		return r.Int64N(256)
	}
	return r.Int64N(2e6) - 1e6
}

func randFloat(r *rand.Rand) float64 {
	switch r.IntN(14) {
	case 0:
		return 0
	case 1:
		return math.Copysign(0, -1)
	case 2:
		return math.SmallestNonzeroFloat64
	case 3:
		return -math.MaxFloat64
	case 4:
		return math.MaxFloat64
	case 5:
		return math.Inf(1)
	case 6:
		return math.Inf(-1)
	case 7:
		return float64(r.Int64N(2e6) - 1e6) // integral: AppendReal adds ".0"
	case 8:
		return 1e21 * float64(r.IntN(100)) // integral, written with an exponent
	case 9:
		return math.Float64frombits(r.Uint64()) // NaN among them: null
	case 10:
		return math.NaN()
	case 11:
		return 9007199254740993 // beyond float64's integers
	}
	return r.NormFloat64() * math.Pow(10, float64(r.IntN(60)-30))
}

var textPieces = []string{
	"a", "Z", "0", " ", "'", `"`, `\`, "/", "\x00", "\x01", "\b", "\f", "\n", "\r", "\t", "\x1f", "\x7f", "é", "日本", "😀", "\u2028", "\u2029",
	"\ufffd", "\xff", "\xc3", "\xed\xa0\x80", "<>&", "\u0085", "value-", ";", "--",
}

func randText(r *rand.Rand) string {
	var b strings.Builder
	for n := r.IntN(8); n > 0; n-- {
		b.WriteString(textPieces[r.IntN(len(textPieces))])
	}
	return b.String()
}

func randBytes(r *rand.Rand) []byte {
	b := make([]byte, r.IntN(12))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

func randValue(r *rand.Rand) any {
	switch r.IntN(6) {
	case 0:
		return nil
	case 1, 2:
		return randInt(r)
	case 3:
		return randFloat(r)
	case 4:
		return randText(r)
	}
	return randBytes(r)
}

var (
	sqlPieces = []string{
		"SELECT ?", "SELECT id, v FROM kv WHERE id = ?", "INSERT INTO t VALUES(?, ?)", "SELECT :a, @b, $c", "SELECT 'it''s é😀 \\'",
		"SELECT \"x\\y\" -- c\n", "SELECT 1;", "SELECT \t\n\u2028 1", "UPDATE t SET a = ? WHERE b = ?", "SELECT '\x01\x1f\\\"/'",
	}
	// badSQL are statements statementsFromJSON or ParseRequest refuse.
	badSQL = []string{"SELECT 1; SELECT 2", "", "  ", "-- only", "SELECT '\x00'"}
)

// pick returns a random element of good, or one of bad once in 20 times.
func pick[T any](r *rand.Rand, good, bad []T) T {
	if len(bad) > 0 && r.IntN(20) == 0 {
		return bad[r.IntN(len(bad))]
	}
	return good[r.IntN(len(good))]
}

var names = []string{"a", "b", "id", "v", "é", "x_1", "base64", "", ":a", "a b"}

// randRequest returns a random request as client.Request holds it.
func randRequest(r *rand.Rand) *Request {
	req := &Request{}
	for n := 1 + r.IntN(3); n > 0; n-- {
		st := Statement{SQL: pick(r, sqlPieces, badSQL)}
		if r.IntN(20) == 0 {
			st.SQL += randText(r)
		}
		switch r.IntN(4) {
		case 1:
			st.Params = []any{}
			for k := r.IntN(5); k > 0; k-- {
				st.Params = append(st.Params, randValue(r))
			}
		case 2:
			st.Named = map[string]any{}
			for k := r.IntN(4); k > 0; k-- {
				st.Named[names[r.IntN(len(names))]] = randValue(r)
			}
		case 3:
			if r.IntN(10) == 0 { // both: refused
				st.Params, st.Named = []any{int64(1)}, map[string]any{"a": int64(2)}
			}
		}
		req.Statements = append(req.Statements, st)
	}
	req.Transaction = r.IntN(3) == 0
	req.Queue = r.IntN(4) == 0
	req.Level = pick(r, []string{"", "", LevelNone, LevelStrong, "weak"}, []string{"WEAK", "strong "})
	req.Format = pick(r, []string{"", "", FormatRows, FormatValues}, []string{"csv", "Rows"})
	switch r.IntN(5) {
	case 0:
		req.AfterSeq = r.Uint64()
	case 1:
		req.AfterSeq = uint64(r.IntN(1e6))
	}
	switch r.IntN(6) {
	case 0:
		req.TimeoutMS = 1 + r.IntN(MaxTimeoutMS)
	case 1:
		req.TimeoutMS = pick(r, []int{MaxTimeoutMS, 1}, []int{-1, MaxTimeoutMS + 1})
	}
	switch r.IntN(4) {
	case 0:
		req.ID = "w-" + strconv.Itoa(r.IntN(1e6))
	case 1:
		req.ID = pick(r, []string{"é😀 \"\\/<>", strings.Repeat("k", 256)}, []string{randText(r), strings.Repeat("k", 257)})
	}
	return req
}

// randResponse returns a random response as a node builds it.
func randResponse(r *rand.Rand) *Response {
	resp := &Response{Seq: r.Uint64() >> r.IntN(64), Node: []string{"n1", "node-é", randText(r)}[r.IntN(3)], Time: randFloat(r) / 1e3}
	if math.IsNaN(resp.Time) || math.IsInf(resp.Time, 0) || math.Abs(resp.Time) > 1e300 {
		resp.Time = 0.031
	}
	resp.Format = []string{FormatRows, FormatValues}[r.IntN(2)]
	switch r.IntN(8) {
	case 0:
		resp.Duplicate = true
		return resp
	case 1:
		resp.Queued = true
		return resp
	}
	for n := r.IntN(4); n > 0; n-- {
		var res Result
		switch r.IntN(5) {
		case 0:
			res.Error = randText(r)
		case 1:
			res.Write, res.LastInsertID, res.RowsAffected = true, randInt(r), randInt(r)
			if r.IntN(3) > 0 {
				break
			}
			fallthrough // RETURNING
		default:
			ncol := r.IntN(4)
			for c := 0; c < ncol; c++ {
				res.Columns = append(res.Columns, names[r.IntN(len(names))]) // duplicates among them
				res.Types = append(res.Types, []string{"INTEGER", "TEXT", "REAL", "BLOB", "", "VARCHAR(10)"}[r.IntN(6)])
			}
			for k := r.IntN(4); k > 0; k-- {
				row := make([]any, ncol)
				for c := range row {
					row[c] = randValue(r)
				}
				res.Values = append(res.Values, row)
			}
		}
		resp.Results = append(resp.Results, res)
	}
	return resp
}

// jnode is a JSON value read back token by token, so respell can write it
// again differently spelled.
type jnode struct {
	delim byte    // '{' or '[', or 0 for a scalar
	str   *string // a string scalar
	raw   string  // another scalar, as written
	keys  []string
	kids  []*jnode
}

func readTree(dec *json.Decoder) (*jnode, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch x := tok.(type) {
	case json.Delim:
		n := &jnode{delim: byte(x)}
		for dec.More() {
			if n.delim == '{' {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k.(string))
			}
			kid, err := readTree(dec)
			if err != nil {
				return nil, err
			}
			n.kids = append(n.kids, kid)
		}
		_, err := dec.Token()
		return n, err
	case string:
		return &jnode{str: &x}, nil
	case json.Number:
		return &jnode{raw: string(x)}, nil
	case bool:
		return &jnode{raw: strconv.FormatBool(x)}, nil
	case nil:
		return &jnode{raw: "null"}, nil
	}
	return nil, fmt.Errorf("token %v", tok)
}

// respeller writes JSON text again with random white space, object
// members in random order (shuffle) and strings with random escapes
// (escapes, lone surrogates among them: they change the value, for both
// decoders alike).
type respeller struct {
	r       *rand.Rand
	shuffle bool
	escapes bool
}

func (p *respeller) ws(b []byte) []byte {
	for n := p.r.IntN(3) - 1; n > 0; n-- {
		b = append(b, " \t\n\r"[p.r.IntN(4)])
	}
	return b
}

func (p *respeller) write(b []byte, n *jnode) []byte {
	b = p.ws(b)
	switch {
	case n.str != nil:
		b = p.string(b, *n.str)
	case n.delim == 0:
		b = append(b, n.raw...)
	default:
		order := make([]int, len(n.kids))
		for i := range order {
			order[i] = i
		}
		if p.shuffle && n.delim == '{' {
			p.r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		b = append(b, n.delim)
		for j, i := range order {
			if j > 0 {
				b = append(p.ws(b), ',')
			}
			if n.delim == '{' {
				b = p.string(p.ws(b), n.keys[i])
				b = append(p.ws(b), ':')
			}
			b = p.write(b, n.kids[i])
		}
		b = append(p.ws(b), n.delim+2) // '{'+2 is '}', '['+2 is ']'
	}
	return p.ws(b)
}

func (p *respeller) string(b []byte, s string) []byte {
	if !p.escapes || p.r.IntN(2) == 0 {
		return AppendString(b, s)
	}
	b = append(b, '"')
	for _, c := range s {
		switch x := p.r.IntN(6); {
		case c == '"' || c == '\\' || c < 0x20 || x == 0:
			if e := strings.IndexRune("\"\\/\b\f\n\r\t", c); e >= 0 && x < 3 {
				b = append(b, '\\', `"\/bfnrt`[e])
				break
			}
			if c > 0xffff {
				r1, r2 := utf16Pair(c)
				b = fmt.Appendf(b, `\u%04x\u%04X`, r1, r2)
				break
			}
			b = fmt.Appendf(b, []string{`\u%04x`, `\u%04X`}[x%2], c)
		case x == 1 && p.r.IntN(8) == 0:
			b = append(b, []string{`\ud800`, `\uDFFF`, `\ud83d`, `\ud83d\u0041`}[p.r.IntN(4)]...)
			b = utf8.AppendRune(b, c)
		default:
			b = utf8.AppendRune(b, c)
		}
	}
	return append(b, '"')
}

func utf16Pair(c rune) (rune, rune) {
	c -= 0x10000
	return 0xd800 + (c>>10)&0x3ff, 0xdc00 + c&0x3ff
}

func respell(t testing.TB, data []byte, p *respeller) []byte {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tree, err := readTree(dec)
	if err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	return p.write(nil, tree)
}

// TestFastPath_Random: random requests and responses as the encoders write
// them and respelled: the fast path answers every one encoding/json
// accepts, with the same value, unless respelled with escapes (it then
// declines escaped keys).
func TestFastPath_Random(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	type variant struct {
		body []byte
		// plain: written by the encoder, or respelled without escapes:
		// the fast path must answer when encoding/json accepts it.
		plain bool
	}
	variants := func(body []byte) []variant {
		return []variant{
			{body, true},
			{respell(t, body, &respeller{r: r, shuffle: true}), true},
			{respell(t, body, &respeller{r: r, shuffle: true, escapes: true}), false},
		}
	}
	var answered, declined [2]int
	count := func(kind int, v variant, ok, jsonOK bool) {
		t.Helper()
		switch {
		case ok:
			answered[kind]++
		case jsonOK && v.plain:
			t.Fatalf("%q: encoding/json decodes it, the fast path declined", v.body)
		default:
			declined[kind]++
		}
	}
	for i := 0; i < n; i++ {
		req := randRequest(r).Encode()
		if r.IntN(4) == 0 { // the array form
			req = []byte(strings.TrimSuffix(strings.TrimPrefix(string(req), `{"statements":`), "}"))
			if end := bytes.LastIndexByte(req, ']'); end >= 0 && !json.Valid(req) {
				req = req[:end+1] // options cut off
			}
		}
		for _, v := range variants(req) {
			_, err := parseRequestJSON(v.body)
			count(0, v, checkRequest(t, v.body), err == nil)
		}
		resp := randResponse(r).AppendJSON(nil)
		for _, v := range variants(resp) {
			_, err := decodeResponseJSON(v.body, 0)
			count(1, v, checkResponse(t, v.body), err == nil)
		}
		// Damage: a byte replaced, dropped or doubled.
		for _, b := range [][]byte{req, resp} {
			for k := 0; k < 4; k++ {
				m := mutate(r, b)
				checkRequest(t, m)
				checkResponse(t, m)
			}
		}
	}
	t.Logf("requests: fast path %d, declined %d; responses: fast path %d, declined %d", answered[0], declined[0], answered[1], declined[1])
	if answered[0] < 3*n/2 || answered[1] < 3*n/2 {
		t.Errorf("the fast paths answered only %v of %d", answered, 3*n)
	}
}

var damage = []byte(`"\{}[],:0-.eE tfnu` + "\x00\xff\xc3")

func mutate(r *rand.Rand, b []byte) []byte {
	m := bytes.Clone(b)
	if len(m) == 0 {
		return m
	}
	i := r.IntN(len(m))
	switch r.IntN(3) {
	case 0:
		m[i] = damage[r.IntN(len(damage))]
	case 1:
		m = append(m[:i], m[i+1:]...)
	default:
		m = append(m[:i+1], m[i:]...)
	}
	return m
}

// FuzzParseRequest checks ParseRequest never panics and either returns
// statements or a 400 with a message, and that the fast path, when it
// answers, gives what the encoding/json path gives.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"SELECT 1", `["SELECT 1"]`, `[["SELECT ?", 1, 2.0, "x", null, [1], {"base64": "AA=="}]]`,
		`{"statements": "SELECT 1", "level": "strong", "timeout_ms": 10}`, `[["SELECT :a", {"a": true}]]`, "\x00", "[" + "\xff"} {
		f.Add([]byte(s))
	}
	for _, s := range requestEdgeCases {
		f.Add([]byte(s))
	}
	r := rand.New(rand.NewPCG(2, 3))
	for i := 0; i < 20; i++ {
		f.Add(randRequest(r).Encode())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkRequest(t, data)
		req, err := ParseRequest(data)
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) || ae.Code != CodeBadRequest || ae.Message == "" {
				t.Fatalf("error %v is not a 400 with a message", err)
			}
			return
		}
		if len(req.Statements) == 0 {
			t.Fatal("no statements and no error")
		}
	})
}

// FuzzDecodeResponse checks DecodeResponse never panics and that the fast
// path, when it answers, gives what the encoding/json path gives.
func FuzzDecodeResponse(f *testing.F) {
	for _, s := range responseEdgeCases {
		f.Add([]byte(s))
	}
	r := rand.New(rand.NewPCG(4, 5))
	for i := 0; i < 20; i++ {
		f.Add(randResponse(r).AppendJSON(nil))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkResponse(t, data)
		resp, err := DecodeResponse(data, 0)
		if (resp == nil) == (err == nil) {
			t.Fatalf("response %v, error %v", resp, err)
		}
	})
}
