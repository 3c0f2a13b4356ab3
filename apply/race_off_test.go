//go:build !race

package apply

// raceDetector is true under go test -race (race_on_test.go).
const raceDetector = false
