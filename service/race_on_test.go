//go:build race

package service_test

// raceDetector is true under go test -race: SQLite (C translated to Go)
// runs many times slower, and tests that measure out large amounts of
// SQLite work scale it down or skip.
const raceDetector = true
