package api_test

import (
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

// Bodies of a single point read and a write, as client.Request.Encode and
// Response.AppendJSON write them.
const (
	benchPointRequest  = `{"statements":[["SELECT id, v FROM kv WHERE id = ?",5123]]}`
	benchInsertRequest = `{"statements":[["INSERT INTO kv(id, v, r) VALUES(?, ?, ?)",5124,"value-5124",0.5]],"id":"w-5124"}`
	benchValuesResp    = `{"results":[{"columns":["id","v"],"types":["INTEGER","TEXT"],"values":[[5123,"value-5123"]]}],"seq":10021,"node":"n1","time":0.031}`
	benchRowsResp      = `{"results":[{"rows":[{"id":5123,"v":"value-5123"}]}],"seq":10021,"node":"n1","time":0.031}`
	benchWriteResp     = `{"results":[{"last_insert_id":5124,"rows_affected":1}],"seq":10022,"node":"n1","time":0.254}`
)

// BenchmarkParseRequest: the server's decoding of a request, run on every
// request.
func BenchmarkParseRequest(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"point", benchPointRequest},
		{"insert", benchInsertRequest},
	} {
		b.Run(bc.name, func(b *testing.B) {
			data := []byte(bc.body)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := api.ParseRequest(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeResponse: the Go client's decoding of a response, run on
// every response.
func BenchmarkDecodeResponse(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"values", benchValuesResp},
		{"rows", benchRowsResp},
		{"write", benchWriteResp},
	} {
		b.Run(bc.name, func(b *testing.B) {
			data := []byte(bc.body)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := api.DecodeResponse(data, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
