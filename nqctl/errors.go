package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/nqlite/nqlite/service/api"
	"github.com/nqlite/nqlite/service/client"
)

// Exit codes of nqctl.
const (
	exitOK     = 0
	exitFailed = 1 // a statement or request failed
	exitUsage  = 2 // bad flags or arguments
	exitConn   = 3 // NATS unreachable, or no node serves the database
)

// exitError carries an exit code. An empty msg means the error was already
// printed.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.msg
}

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

func connErrorf(format string, args ...any) error {
	return &exitError{code: exitConn, msg: fmt.Sprintf(format, args...)}
}

func failedf(format string, args ...any) error {
	return &exitError{code: exitFailed, msg: fmt.Sprintf(format, args...)}
}

// errFailedPrinted is a failure whose messages are already on stderr.
var errFailedPrinted = &exitError{code: exitFailed}

// errRequestFailed is a failed request, already reported, after which a
// script stops.
var errRequestFailed = &exitError{code: exitFailed}

// errUsagePrinted is a usage error the flag package already printed.
var errUsagePrinted = &exitError{code: exitUsage}

// errHelp reports that -h or --help was given: usage was printed, exit 0.
var errHelp = errors.New("help requested")

// isConnError reports whether err means nqctl cannot reach a node at all.
func isConnError(err error) bool {
	return errors.Is(err, client.ErrNoNode) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrDisconnected)
}

// exitCode maps err to nqctl's exit code.
func exitCode(err error) int {
	if err == nil || errors.Is(err, errHelp) {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isConnError(err) {
		return exitConn
	}
	return exitFailed
}

// errorMessage is the text to print for err, "" when already printed. A
// request-level error names its code: "error (not_stored): ...".
func errorMessage(err error) string {
	if err == nil {
		return ""
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.msg
	}
	return withKind(err, err.Error())
}

// kindTag names the kind of the request-level error in err: its code
// ("not_stored", see the README's request-level errors table) or, from a
// node older than the codes, its number; "" when err holds no *api.Error.
func kindTag(err error) string {
	var ae *api.Error
	switch {
	case !errors.As(err, &ae):
		return ""
	case ae.Kind != "":
		return string(ae.Kind)
	case ae.Code != 0:
		return strconv.Itoa(ae.Code)
	}
	return ""
}

// withKind prefixes msg, the text of err, with err's kind:
// "error (not_stored): msg"; msg alone when err holds no *api.Error.
func withKind(err error, msg string) string {
	if tag := kindTag(err); tag != "" {
		return "error (" + tag + "): " + msg
	}
	return msg
}

// wrapErr prefixes err's message and keeps its exit code: 3 for a
// connection error, else 1.
func wrapErr(prefix string, err error) error {
	code := exitCode(err)
	if code == exitOK || code == exitUsage {
		code = exitFailed
	}
	return &exitError{code: code, msg: prefix + ": " + errorMessage(err)}
}
