package api_test

import (
	"testing"

	"github.com/nqlite/nqlite/service/api"
)

func BenchmarkSplit(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		api.Split("SELECT v FROM kv WHERE id = ?")
	}
}
