package api

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// CheckRequest checks a Request built in Go rather than decoded by
// ParseRequest (an in-process caller of a node, such as the embedded
// replica's driver) against the rules ParseRequest applies to a payload,
// and fills in the defaults ParseRequest would: Level LevelNone, Format
// FormatRows, TimeoutMS DefaultTimeoutMS (for 0). Errors are *Error with
// CodeBadRequest and say what to change; r is then unchanged.
//
// Beyond ParseRequest's rules it checks what a decoded payload cannot get
// wrong: parameter values must be nil, int64, float64, string or []byte
// (what decoding yields), a statement has Params or Named but not both,
// Named keys are given without their prefix (":a" is "a"), and every
// string is valid UTF-8 (a payload must be). A Statement holding several
// SQL statements is not checked here: it fails alone when prepared
// ("more than one SQL statement in one statement").
func CheckRequest(r *Request) error {
	if len(r.Statements) == 0 {
		return Errorf(CodeBadRequest, "request holds no SQL statement")
	}
	for i := range r.Statements {
		if err := checkStatement(i+1, &r.Statements[i]); err != nil {
			return err
		}
	}
	level := r.Level
	switch level {
	case "", LevelNone, "weak":
		level = LevelNone
	case LevelStrong:
	default:
		return Errorf(CodeBadRequest, "level %q is not known: use \"none\" or \"strong\"", r.Level)
	}
	format := r.Format
	switch format {
	case "":
		format = FormatRows
	case FormatRows, FormatValues:
	default:
		return Errorf(CodeBadRequest, "format %q is not known: use \"rows\" or \"values\"", r.Format)
	}
	timeout := r.TimeoutMS
	if timeout == 0 {
		timeout = DefaultTimeoutMS
	}
	if timeout < 0 || timeout > MaxTimeoutMS {
		return Errorf(CodeBadRequest, "timeout_ms %d is out of range: give 1 to %d", r.TimeoutMS, MaxTimeoutMS)
	}
	if err := checkID(r.ID); err != nil {
		return err
	}
	r.Level, r.Format, r.TimeoutMS = level, format, timeout
	return nil
}

func checkStatement(n int, st *Statement) error {
	if !utf8.ValidString(st.SQL) {
		return Errorf(CodeBadRequest, "statement %d is not valid UTF-8", n)
	}
	if j := strings.IndexByte(st.SQL, 0); j >= 0 {
		return Errorf(CodeBadRequest, "statement %d holds a NUL byte at offset %d: SQLite ends SQL text there; pass such a value as a parameter", n, j)
	}
	if st.Params != nil && st.Named != nil {
		return Errorf(CodeBadRequest, "statement %d has both positional and named parameters: give one kind", n)
	}
	for j, v := range st.Params {
		if err := checkValue(v); err != nil {
			return Errorf(CodeBadRequest, "statement %d, parameter %d: %v", n, j+1, err)
		}
	}
	for k, v := range st.Named {
		switch {
		case k == "":
			return Errorf(CodeBadRequest, "statement %d: empty parameter name", n)
		case strings.ContainsAny(k[:1], ":@$"):
			return Errorf(CodeBadRequest, "statement %d: parameter %q: give the name without its prefix (%q)", n, k, k[1:])
		case !utf8.ValidString(k):
			return Errorf(CodeBadRequest, "statement %d: a parameter name is not valid UTF-8", n)
		}
		if err := checkValue(v); err != nil {
			return Errorf(CodeBadRequest, "statement %d, parameter %q: %v", n, k, err)
		}
	}
	return nil
}

// checkValue reports whether v is a parameter value as decoding yields it.
func checkValue(v any) error {
	switch x := v.(type) {
	case nil, int64, float64, []byte:
		return nil
	case string:
		if !utf8.ValidString(x) {
			return fmt.Errorf("text is not valid UTF-8: pass bytes as []byte (a BLOB)")
		}
		return nil
	}
	return fmt.Errorf("unsupported value of type %T: use nil, int64, float64, string or []byte", v)
}

// checkID checks an idempotency key: at most 256 bytes of printable text.
func checkID(id string) error {
	if len(id) > 256 {
		return Errorf(CodeBadRequest, "id is %d bytes long: at most 256", len(id))
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return Errorf(CodeBadRequest, "id holds a control character: use printable text")
		}
	}
	if !utf8.ValidString(id) {
		return Errorf(CodeBadRequest, "id is not valid UTF-8")
	}
	return nil
}
