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
	var one [1][2]int // most texts hold one statement
	s := Scanner{record: true, stmts: one[:0]}
	s.Feed(sql)
	s.finish()
	if len(s.stmts) == 0 {
		return nil
	}
	out := make([]string, 0, len(s.stmts))
	for _, r := range s.stmts {
		out = append(out, sql[r[0]:r[1]])
	}
	return out
}

// Complete reports whether sql ends with a complete statement, like
// sqlite3_complete(): at least one statement end, and after it only white
// space and finished comments.
func Complete(sql string) bool {
	var s Scanner
	s.Feed(sql)
	return s.Complete()
}

// Scanner follows SQL text fed in pieces (lines of a shell, chunks of a
// file) with the rules of Split, so a shell knows when a multi-line
// statement is complete. The zero value is ready to use.
type Scanner struct {
	quote        byte // inside '...', "...", `...` or [...] (']')
	blockComment bool
	lineComment  bool
	prev         byte // previous byte inside a block comment ("*/" across pieces)
	// significant: a token was seen since the last statement end.
	significant bool
	// ended: a statement ended (at a top-level ';') since the last Reset.
	ended bool

	words   [4]string // leading keywords (keyword's), to recognise CREATE TRIGGER
	nwords  int
	trigger bool
	// In a trigger: 0 inside the body, 1 just after ';', 2 after "; END"
	// (the next ';' ends the statement).
	tstate int

	// For Split: statement byte ranges of everything fed.
	record     bool
	pos        int // bytes fed before the current piece
	start, end int // current statement: first significant byte, just past the last
	stmts      [][2]int
	// n counts the statements ended, recorded or not.
	n int
}

// Reset forgets everything fed so far.
func (s *Scanner) Reset() { *s = Scanner{} }

// Idle reports whether nothing but white space and comments was fed since
// the last Reset or statement end, outside any quote or comment.
func (s *Scanner) Idle() bool { return s.quote == 0 && !s.blockComment && !s.significant }

// Ended reports whether a statement ended since the last Reset.
func (s *Scanner) Ended() bool { return s.ended }

// Complete reports whether the text fed so far ends with a complete
// statement: at least one statement end, and after it only white space and
// finished comments.
func (s *Scanner) Complete() bool { return s.ended && s.Idle() }

// Feed scans the next piece of text.
func (s *Scanner) Feed(text string) {
	defer func() { s.pos += len(text) }()
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
			i++
			if c == s.quote {
				// A doubled quote is an escaped quote ([...] has none).
				if s.quote != ']' && i < len(text) && text[i] == c {
					i++
					continue
				}
				s.quote = 0
				s.end = s.pos + i
			}
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
			i++
			if s.trigger && s.tstate != 2 {
				s.tstate = 1
				s.end = s.pos + i
				continue
			}
			s.endStatement()
			s.ended = true
			continue
		}
		// A significant token.
		if !s.significant {
			s.significant = true
			s.start = s.pos + i
		}
		tokStart := i
		ident := isIdentByte(c)
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
			s.end = s.pos + i
			continue
		case ident:
			for i < len(text) && isIdentByte(text[i]) {
				i++
			}
		default:
			i++
		}
		s.end = s.pos + i
		tok := text[tokStart:i]
		if ident && !s.trigger && s.nwords < len(s.words) {
			s.words[s.nwords] = keyword(tok)
			s.nwords++
			s.trigger = isCreateTrigger(s.words[:s.nwords])
			if s.nwords == 1 && s.words[0] != "EXPLAIN" && s.words[0] != "CREATE" {
				s.nwords = len(s.words) // no trigger: stop looking
			}
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

// endStatement closes the current statement (recording its range).
func (s *Scanner) endStatement() {
	if s.significant {
		s.n++
		if s.record {
			s.stmts = append(s.stmts, [2]int{s.start, s.end})
		}
	}
	s.significant = false
	s.nwords, s.trigger, s.tstate = 0, false, 0
}

// finish closes a last statement without ';'. An unterminated quote runs
// to the end of the text.
func (s *Scanner) finish() {
	if s.quote != 0 {
		s.end = s.pos
	}
	s.endStatement()
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

// keywords are the words isCreateTrigger looks for.
var keywords = []string{"EXPLAIN", "QUERY", "CREATE", "TEMP", "TEMPORARY", "TRIGGER"}

// keyword returns tok in upper case if it is one of keywords, else ""
// (without allocating: Split runs for every statement a client sends).
func keyword(tok string) string {
	for _, k := range keywords {
		if strings.EqualFold(tok, k) {
			return k
		}
	}
	return ""
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}
