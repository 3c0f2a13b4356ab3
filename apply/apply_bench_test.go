package apply

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkApply applies one small INSERT per batch (the common case of a
// node keeping up), or batches of 100 (catching up).
//
//	go test -run '^$' -bench BenchmarkApply -benchtime 20000x ./apply/
func BenchmarkApply(b *testing.B) {
	for _, per := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", per), func(b *testing.B) {
			db := openDB(b, filepath.Join(b.TempDir(), "db.sqlite"))
			if err := db.ApplyBatch(context.Background(), []Msg{{Seq: 1, Data: entry(1, 1, false, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r INTEGER DEFAULT (random()))")}}); err != nil {
				b.Fatal(err)
			}
			msgs := make([]Msg, b.N)
			for i := range msgs {
				msgs[i] = Msg{Seq: uint64(i + 2), Data: entry(int64(i), int64(i), false, fmt.Sprintf("INSERT INTO t(v) VALUES('row %d')", i%100))}
			}
			b.ResetTimer()
			for i := 0; i < len(msgs); i += per {
				if err := db.ApplyBatch(context.Background(), msgs[i:min(i+per, len(msgs))]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
