package main

import "strings"

// stmtScanner follows SQL text, fed in pieces (lines), the way SQLite's
// sqlite3_complete() and api.Split see it: semicolons inside string
// literals, quoted identifiers, comments and the body of CREATE TRIGGER
// ... BEGIN ... END do not end a statement. The shell uses it to know
// when a multi-line statement is complete.
type stmtScanner struct {
	quote        byte // inside '...', "...", `...` or [...] (']')
	blockComment bool
	lineComment  bool
	// significant: a token was seen since the last statement end.
	significant bool
	// ended: a statement ended (at a top-level ';') since the last reset.
	ended bool

	words   []string
	trigger bool
	tstate  int // as in api.Split: 0 in the body, 1 after ';', 2 after "; END"
	// prev is the previous byte inside a block comment, to find "*/"
	// even when it straddles two pieces.
	prev byte
}

// reset forgets everything fed so far.
func (s *stmtScanner) reset() { *s = stmtScanner{words: s.words[:0]} }

// idle reports whether nothing but white space and comments was fed
// since the last reset or statement end, outside any quote or comment.
func (s *stmtScanner) idle() bool {
	return s.quote == 0 && !s.blockComment && !s.significant
}

// complete reports whether the text fed so far ends with a complete
// statement: at least one statement end, and after it only white space
// and finished comments.
func (s *stmtScanner) complete() bool { return s.ended && s.idle() }

// feed scans the next piece of text.
func (s *stmtScanner) feed(text string) {
	i := 0
	for i < len(text) {
		c := text[i]
		switch {
		case s.lineComment:
			if c == '\n' {
				s.lineComment = false
			}
			i++
			continue
		case s.blockComment:
			if c == '/' && s.prev == '*' {
				s.blockComment = false
				s.prev = 0
			} else {
				s.prev = c
			}
			i++
			continue
		case s.quote != 0:
			if c == s.quote {
				q := s.quote
				s.quote = 0
				// A doubled quote is an escaped quote.
				if q != ']' && i+1 < len(text) && text[i+1] == c {
					s.quote = q
					i += 2
					continue
				}
			}
			i++
			continue
		}
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '-' && i+1 < len(text) && text[i+1] == '-':
			s.lineComment = true
			i += 2
			continue
		case c == '/' && i+1 < len(text) && text[i+1] == '*':
			s.blockComment = true
			s.prev = 0
			i += 2
			continue
		case c == ';':
			if s.trigger && s.tstate != 2 {
				s.tstate = 1
				i++
				continue
			}
			s.ended, s.significant = true, false
			s.words, s.trigger, s.tstate = s.words[:0], false, 0
			i++
			continue
		}
		s.significant = true
		start := i
		ident := isIdentStart(c)
		switch {
		case c == '\'' || c == '"' || c == '`' || c == '[':
			s.quote = c
			if c == '[' {
				s.quote = ']'
			}
			if s.trigger {
				s.tstate = 0
			}
			i++
			continue
		case ident:
			for i < len(text) && isIdentStart(text[i]) {
				i++
			}
		default:
			i++
		}
		tok := text[start:i]
		if ident && !s.trigger && len(s.words) < 4 {
			s.words = append(s.words, strings.ToUpper(tok))
			s.trigger = isCreateTrigger(s.words)
		}
		if s.trigger {
			if s.tstate == 1 && strings.EqualFold(tok, "END") {
				s.tstate = 2
			} else {
				s.tstate = 0
			}
		}
	}
}

// sqlComplete reports whether sql ends with a complete statement, like
// sqlite3_complete().
func sqlComplete(sql string) bool {
	var s stmtScanner
	s.feed(sql)
	return s.complete()
}

// isCreateTrigger reports whether the leading keywords are
// CREATE [TEMP|TEMPORARY] TRIGGER (optionally after EXPLAIN), as in
// api.Split.
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

func isIdentStart(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}
