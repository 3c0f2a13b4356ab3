package apply

// pin is a ContentHashAt call waiting for a sequence (contenthash.go).
type pin struct{ seq uint64 }

func (db *DB) pinCut(msgs []Msg) int { return -1 }

func (db *DB) servePins(applied uint64) {}
