package api_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want []string
	}{
		{"SELECT 1", []string{"SELECT 1"}},
		{"SELECT 1;", []string{"SELECT 1"}},
		{" SELECT 1 ; SELECT 2 ;; ", []string{"SELECT 1", "SELECT 2"}},
		{"-- only a comment\n", nil},
		{"/* c */ ; ;", nil},
		{"SELECT ';' AS a; SELECT \"x;y\" FROM [a;b]; SELECT `q;`", []string{"SELECT ';' AS a", "SELECT \"x;y\" FROM [a;b]", "SELECT `q;`"}},
		{"SELECT 'it''s;'; SELECT 2", []string{"SELECT 'it''s;'", "SELECT 2"}},
		{"SELECT 1 -- c;\n; SELECT /* ; */ 2", []string{"SELECT 1", "SELECT /* ; */ 2"}},
		{
			"CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = CASE WHEN 1 THEN 2 END; INSERT INTO u VALUES(1); END; SELECT 1",
			[]string{"CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = CASE WHEN 1 THEN 2 END; INSERT INTO u VALUES(1); END", "SELECT 1"},
		},
		{
			"create temp trigger tr before delete on t begin select raise(abort, 'no'); end;insert into t values(1)",
			[]string{"create temp trigger tr before delete on t begin select raise(abort, 'no'); end", "insert into t values(1)"},
		},
		{"SELECT 'unterminated; SELECT 2", []string{"SELECT 'unterminated; SELECT 2"}},
	} {
		if got := api.Split(tc.sql); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Split(%q):\n got %q\nwant %q", tc.sql, got, tc.want)
		}
	}
}

func TestParseRequest(t *testing.T) {
	req, err := api.ParseRequest([]byte(`{"statements": [["INSERT INTO t VALUES(?, ?, ?, ?, ?)", 1, 1.5, "s", null, {"base64": "AQI="}], ["SELECT :a", {"a": 9007199254740993}], "SELECT 1"],
		"transaction": true, "level": "strong", "after_seq": 7, "queue": true, "id": "k1", "format": "values", "timeout_ms": 250}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &api.Request{
		Statements: []api.Statement{
			{SQL: "INSERT INTO t VALUES(?, ?, ?, ?, ?)", Params: []any{int64(1), 1.5, "s", nil, []byte{1, 2}}},
			{SQL: "SELECT :a", Named: map[string]any{"a": int64(9007199254740993)}},
			{SQL: "SELECT 1"},
		},
		Transaction: true, Level: "strong", AfterSeq: 7, Queue: true, ID: "k1", Format: "values", TimeoutMS: 250,
	}
	if !reflect.DeepEqual(req, want) {
		t.Fatalf("got  %+v\nwant %+v", req, want)
	}
	req, err = api.ParseRequest([]byte("  SELECT 1; SELECT 2"))
	if err != nil || len(req.Statements) != 2 || req.Level != api.LevelNone || req.Format != api.FormatRows || req.TimeoutMS != api.DefaultTimeoutMS {
		t.Fatalf("text form: %+v %v", req, err)
	}
	if v, _ := api.NumberValue("1e999"); v != math.Inf(1) {
		t.Fatalf("1e999: %v", v)
	}
}

func TestParseRequest_Errors(t *testing.T) {
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	for _, in := range []string{
		"", " \n", "\xff\xfe", "[", "[1]", "[[]]", "[[1]]", `[["SELECT ?", {"a": 1}, 2]]`, `[["SELECT ?", [256]]]`, `[["SELECT ?", {"x": {"y": 1}}]]`,
		`{"statements": 1}`, `{"statements": []}`, `{}`, `{"statements": ["SELECT 1"]} {}`, `{"statements": ["SELECT 1"], "id": "a\nb"}`,
		`[["SELECT ?", 123456789012345678901234567890]]`, `[["SELECT ?", {"base64": "!!"}]]`, `["SELECT 1; SELECT 2"]`, deep,
	} {
		_, err := api.ParseRequest([]byte(in))
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || ae.Message == "" {
			t.Errorf("%.40q: got %v, want a 400 error", in, err)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	// Defaults filled in as ParseRequest fills them.
	r := api.Request{Statements: []api.Statement{{SQL: "SELECT ?, ?, ?, ?, ?", Params: []any{nil, int64(1), 1.5, "s", []byte{1}}},
		{SQL: "SELECT :a", Named: map[string]any{"a": int64(2)}}}}
	if err := api.CheckRequest(&r); err != nil {
		t.Fatal(err)
	}
	if r.Level != api.LevelNone || r.Format != api.FormatRows || r.TimeoutMS != api.DefaultTimeoutMS {
		t.Errorf("defaults: got level %q, format %q, timeout %d", r.Level, r.Format, r.TimeoutMS)
	}
	one := func(st api.Statement) []api.Statement { return []api.Statement{st} }
	for _, tt := range []struct {
		name string
		req  api.Request
		want string
	}{
		{"no statement", api.Request{}, "no SQL statement"},
		{"NUL", api.Request{Statements: one(api.Statement{SQL: "SELECT 1\x00"})}, "NUL byte"},
		{"SQL not UTF-8", api.Request{Statements: one(api.Statement{SQL: "SELECT '\xff'"})}, "UTF-8"},
		{"text not UTF-8", api.Request{Statements: one(api.Statement{SQL: "SELECT ?", Params: []any{"\xff"}})}, "UTF-8"},
		{"int", api.Request{Statements: one(api.Statement{SQL: "SELECT ?", Params: []any{7}})}, "type int"},
		{"both kinds", api.Request{Statements: one(api.Statement{SQL: "SELECT ?", Params: []any{nil}, Named: map[string]any{"a": nil}})}, "both"},
		{"prefix", api.Request{Statements: one(api.Statement{SQL: "SELECT :a", Named: map[string]any{":a": nil}})}, "without its prefix"},
		{"empty name", api.Request{Statements: one(api.Statement{SQL: "SELECT :a", Named: map[string]any{"": nil}})}, "empty parameter name"},
		{"level", api.Request{Statements: one(api.Statement{SQL: "SELECT 1"}), Level: "weakest"}, "level"},
		{"format", api.Request{Statements: one(api.Statement{SQL: "SELECT 1"}), Format: "csv"}, "format"},
		{"timeout", api.Request{Statements: one(api.Statement{SQL: "SELECT 1"}), TimeoutMS: -1}, "timeout_ms"},
		{"long timeout", api.Request{Statements: one(api.Statement{SQL: "SELECT 1"}), TimeoutMS: api.MaxTimeoutMS + 1}, "timeout_ms"},
		{"id", api.Request{Statements: one(api.Statement{SQL: "SELECT 1"}), ID: "a\nb"}, "control character"},
	} {
		req := tt.req
		err := api.CheckRequest(&req)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || !strings.Contains(ae.Message, tt.want) {
			t.Errorf("%s: got %v, want a 400 error with %q", tt.name, err, tt.want)
		}
		if !reflect.DeepEqual(req, tt.req) {
			t.Errorf("%s: the request changed: %+v", tt.name, req)
		}
	}
}

func TestResponse_RoundTrip(t *testing.T) {
	resp := &api.Response{
		Results: []api.Result{
			{Columns: []string{"i", "r", "s", "b", "n", "inf"}, Types: []string{"INTEGER", "REAL", "TEXT", "BLOB", "", ""},
				Values: [][]any{{int64(-9007199254740993), 2.0, "a\"\n\x00\u2028", []byte{0, 255}, nil, math.Inf(-1)}}},
			{Write: true, LastInsertID: 5, RowsAffected: 1},
			{Error: "no such table: x"},
		},
		Seq: 42, Node: "n1", Time: 1.23456, Format: api.FormatValues,
	}
	b := resp.AppendJSON(nil)
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	if !strings.Contains(string(b), `2.0,`) || !strings.Contains(string(b), `"time":1.235`) {
		t.Fatalf("encoding: %s", b)
	}
	got, err := api.DecodeResponse(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Results[0].Values, resp.Results[0].Values) || got.Seq != 42 || !reflect.DeepEqual(got.Results[1], api.Result{Write: true, LastInsertID: 5, RowsAffected: 1}) || got.Results[2].Error != "no such table: x" {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, resp)
	}
	resp.Format = api.FormatRows
	got, err = api.DecodeResponse(resp.AppendJSON(nil), 0)
	if err != nil || got.Results[0].Rows[0]["r"] != 2.0 || got.Results[0].Rows[0]["i"] != int64(-9007199254740993) {
		t.Fatalf("rows: %+v %v", got, err)
	}
	_, err = api.DecodeResponse(api.ErrorBody("bad", "n2"), 400)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Message != "bad" || ae.Node != "n2" {
		t.Fatalf("error body: %v", err)
	}
}

// FuzzParseRequest checks the decoder never panics and either returns
// statements or a 400 with a message.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"SELECT 1", `["SELECT 1"]`, `[["SELECT ?", 1, 2.0, "x", null, [1], {"base64": "AA=="}]]`,
		`{"statements": "SELECT 1", "level": "strong", "timeout_ms": 10}`, `[["SELECT :a", {"a": true}]]`, "\x00", "[" + "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := api.ParseRequest(data)
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || ae.Message == "" {
				t.Fatalf("error %v is not a 400 with a message", err)
			}
			return
		}
		if len(req.Statements) == 0 {
			t.Fatal("no statements and no error")
		}
	})
}
