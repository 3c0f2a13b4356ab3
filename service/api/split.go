package api

import "strings"

// Split divides SQL text into statements at top-level semicolons, the way
// SQLite's sqlite3_complete() sees statement ends: semicolons inside string
// literals, quoted identifiers ("x", `x`, [x]), comments (-- and /* */) and
// the body of CREATE TRIGGER ... BEGIN ... END do not end a statement.
//
// Each statement is returned without its terminating semicolon and without
// surrounding white space and comments; empty statements (only white space,
// comments or semicolons) are dropped. Split never fails: text SQLite
// cannot parse comes back as it is, for SQLite to report the error.
func Split(sql string) []string {
	var out []string
	var (
		start   = -1 // byte offset of the statement's first token
		end     = 0  // byte offset just past its last token
		words   []string
		trigger bool // statement is CREATE [TEMP] TRIGGER
		// In a trigger: 0 inside the body, 1 just after ';', 2 after
		// "; END" (the next ';' ends the statement).
		tstate int
	)
	flush := func() {
		if start >= 0 {
			out = append(out, sql[start:end])
		}
		start, words, trigger, tstate = -1, words[:0], false, 0
	}
	i := 0
	for i < len(sql) {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = len(sql)
			}
			continue
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			if j := strings.Index(sql[i+2:], "*/"); j >= 0 {
				i += j + 4
			} else {
				i = len(sql)
			}
			continue
		case c == ';':
			if trigger && tstate != 2 {
				tstate = 1
				end = i + 1
				i++
				continue
			}
			flush()
			i++
			continue
		}
		// A significant token.
		if start < 0 {
			start = i
		}
		tokStart := i
		switch {
		case c == '\'' || c == '"' || c == '`':
			i = skipQuoted(sql, i, c)
		case c == '[':
			if j := strings.IndexByte(sql[i:], ']'); j >= 0 {
				i += j + 1
			} else {
				i = len(sql)
			}
		case isIdentByte(c):
			for i < len(sql) && isIdentByte(sql[i]) {
				i++
			}
		default:
			i++
		}
		end = i
		tok := sql[tokStart:i]
		if isIdentByte(c) {
			w := strings.ToUpper(tok)
			if !trigger && len(words) < 4 {
				words = append(words, w)
				trigger = isCreateTrigger(words)
			}
		}
		if trigger {
			if tstate == 1 && strings.EqualFold(tok, "END") {
				tstate = 2
			} else {
				tstate = 0
			}
		}
	}
	flush()
	return out
}

// isCreateTrigger reports whether the leading keywords are
// CREATE [TEMP|TEMPORARY] TRIGGER (optionally after EXPLAIN).
func isCreateTrigger(w []string) bool {
	if len(w) > 0 && w[0] == "EXPLAIN" {
		w = w[1:]
		if len(w) > 1 && w[0] == "QUERY" {
			w = w[2:]
		}
	}
	if len(w) < 2 || w[0] != "CREATE" {
		return false
	}
	if w[1] == "TEMP" || w[1] == "TEMPORARY" {
		return len(w) > 2 && w[2] == "TRIGGER"
	}
	return w[1] == "TRIGGER"
}

func skipQuoted(s string, i int, q byte) int {
	i++
	for i < len(s) {
		if s[i] == q {
			if i+1 < len(s) && s[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		}
		i++
	}
	return len(s)
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}
