//go:build race

package apply

// raceDetector is true under go test -race: SQLite (C translated to Go)
// runs many times slower, and tests that measure out large amounts of
// SQLite work skip.
const raceDetector = true
