package api_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
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
	_, err = api.DecodeResponse((&api.Error{Code: 400, Kind: api.KindBadRequest, Message: "bad", Node: "n2"}).Body(), 400)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Kind != api.KindBadRequest || ae.Message != "bad" || ae.Node != "n2" {
		t.Fatalf("error body: %v", err)
	}
}

// TestError_Body: an error body carries the kind and the seq, decodes
// back to the same *Error, and a body of a node older than the kinds
// still decodes, with the kind its number stands for alone.
func TestError_Body(t *testing.T) {
	stored := api.NewError(api.KindStored, "entry 7 is stored")
	stored.Node, stored.Seq = "n1", 7
	if got, want := string(stored.Body()), `{"error":"entry 7 is stored","code":"stored","node":"n1","seq":7}`; got != want {
		t.Fatalf("body:\n got %s\nwant %s", got, want)
	}
	for _, tc := range []struct {
		name string
		body string
		code int
		want api.Error
	}{
		{"stored", string(stored.Body()), 408, *stored},
		{"no seq", `{"error":"JetStream is unreachable","code":"not_stored","node":"n2"}`, 503,
			api.Error{Code: 503, Kind: api.KindNotStored, Message: "JetStream is unreachable", Node: "n2"}},
		{"old 400", `{"error":"bad","node":"n2"}`, 400, api.Error{Code: 400, Kind: api.KindBadRequest, Message: "bad", Node: "n2"}},
		{"old 413", `{"error":"big","node":"n2"}`, 413, api.Error{Code: 413, Kind: api.KindTooLarge, Message: "big", Node: "n2"}},
		{"old 408 says no kind", `{"error":"late","node":"n2"}`, 408, api.Error{Code: 408, Message: "late", Node: "n2"}},
		{"old 503 says no kind", `{"error":"down","node":"n2"}`, 503, api.Error{Code: 503, Message: "down", Node: "n2"}},
		{"kind from a newer node", `{"error":"x","code":"something_new","node":"n2"}`, 503,
			api.Error{Code: 503, Kind: "something_new", Message: "x", Node: "n2"}},
		{"no header", `{"error":"x","node":"n2"}`, 0, api.Error{Code: 500, Kind: api.KindInternal, Message: "x", Node: "n2"}},
		{"not JSON", `oops`, 503, api.Error{Code: 503, Message: "oops"}},
	} {
		_, err := api.DecodeResponse([]byte(tc.body), tc.code)
		var ae *api.Error
		if !errors.As(err, &ae) || *ae != tc.want {
			t.Errorf("%s: got %#v, want %#v", tc.name, err, tc.want)
		}
	}
}

// TestError_Kinds: each kind has its number and its sentinel, errors.Is
// matches the kind through wrapping and nothing else, 408 is only
// "stored", and the README's request-level errors table lists every kind.
func TestError_Kinds(t *testing.T) {
	sentinels := map[api.ErrorKind]error{
		api.KindBadRequest: api.ErrBadRequest, api.KindForbidden: api.ErrForbidden, api.KindTooLarge: api.ErrTooLarge,
		api.KindStored: api.ErrStored, api.KindNotStored: api.ErrNotStored, api.KindUnknown: api.ErrUnknown,
		api.KindNotReached: api.ErrNotReached, api.KindReadTimeout: api.ErrReadTimeout, api.KindUnavailable: api.ErrUnavailable,
		api.KindRestoring: api.ErrRestoring, api.KindIncompatible: api.ErrIncompatible, api.KindDiverged: api.ErrDiverged, api.KindInternal: api.ErrInternal,
	}
	if len(api.Kinds()) != len(sentinels) {
		t.Fatalf("%d kinds, %d sentinels", len(api.Kinds()), len(sentinels))
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range api.Kinds() {
		err := fmt.Errorf("context: %w", api.NewError(k, "m"))
		if got := api.ErrorCode(err); got != k.Code() || got == 0 {
			t.Errorf("%s: number %d, want %d", k, got, k.Code())
		}
		if (k.Code() == api.CodeTimeout) != (k == api.KindStored) {
			t.Errorf("%s: number %d; 408 is for stored writes only", k, k.Code())
		}
		if api.KindOf(err) != k {
			t.Errorf("KindOf: %s, want %s", api.KindOf(err), k)
		}
		for k2, s := range sentinels {
			if errors.Is(err, s) != (k2 == k) {
				t.Errorf("errors.Is(%s error, %v) = %v", k, s, !(k2 == k))
			}
		}
		row := fmt.Sprintf("| `%s` | %d |", k, k.Code())
		if !strings.Contains(string(readme), row) {
			t.Errorf("README has no row starting %q", row)
		}
	}
	if errors.Is(&api.Error{Code: 408, Message: "old"}, api.ErrStored) {
		t.Error("an error without kind matches ErrStored")
	}
	if api.KindOf(errors.New("x")) != api.KindInternal {
		t.Error("a plain error is not internal")
	}
	for code, want := range map[int]api.ErrorKind{400: api.KindBadRequest, 403: api.KindForbidden, 413: api.KindTooLarge, 500: api.KindInternal, 503: api.KindUnavailable, 408: "", 504: ""} {
		if got := api.Errorf(code, "x").Kind; got != want {
			t.Errorf("Errorf(%d): kind %q, want %q", code, got, want)
		}
	}
}
