package api

import (
	"reflect"
	"testing"
)

func TestSubjectToken(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"orders", "orders"},
		{"Orders", "orders"},
		{"order items", "order%20items"},
		{"a.b", "a%2Eb"},
		{"a*>", "a%2A%3E"},
		{"100%", "100%25"},
		{"Zoë", "zo%C3%AB"},
		{"", "%"},
		{"snake_case-1", "snake_case-1"},
	} {
		if got := SubjectToken(c.name); got != c.want {
			t.Errorf("SubjectToken(%q) = %q, want %q", c.name, got, c.want)
		}
	}
	if got := ChangeSubject("main", "Order Items"); got != "nqlite.changes.main.order%20items" {
		t.Errorf("ChangeSubject: %q", got)
	}
}

func TestChange_RoundTrip(t *testing.T) {
	for _, c := range []Change{
		{Seq: 9, Index: 2, Time: 1700000000000, Op: OpUpdate, Table: `we"ird`, RowID: 5, NewRowID: 6, PK: []string{"id"},
			Columns: []string{"id", "r", "t", "b", "n", "big"},
			Old:     []any{int64(5), 1.0, "x", []byte{0, 255}, nil, int64(9007199254740993)},
			New:     []any{int64(6), 2.5e300, "", []byte{}, nil, int64(-9223372036854775808)}},
		{Seq: 3, Time: 1, Op: OpInsert, Table: "w", WithoutRowID: true, PK: []string{"k", "j"}, Columns: []string{"j", "k"}, New: []any{int64(1), "a"}},
		{Seq: 3, Index: 1, Time: 1, Op: OpDelete, Table: "p", RowID: 7, NewRowID: 7, Columns: []string{"x"}, Old: []any{1.5}},
		{Seq: 4, Time: 2, Op: OpReset},
		{Op: OpLost},
	} {
		data := c.AppendJSON(nil)
		got, err := DecodeChange(data)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		want := c
		if want.Op == OpInsert || want.Op == OpDelete {
			want.NewRowID = want.RowID
		}
		if want.WithoutRowID {
			want.NewRowID = 0
		}
		// pk lists the names in key order.
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s:\n got  %+v\n want %+v", data, *got, want)
		}
	}
	if _, err := DecodeChange([]byte(`{"seq": 1}`)); err == nil {
		t.Error("an event without op decoded")
	}
}
