package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/mattn/go-runewidth"

	"github.com/nqlite/nqlite/service/api"
)

// Output modes, as in the sqlite3 shell's .mode, plus column (the aligned
// table nqctl has always printed) and raw (the server's JSON responses).
const (
	modeColumn = "column"
	modeTable  = "table"
	modeBox    = "box"
	modeCSV    = "csv"
	modeJSON   = "json"
	modeLine   = "line"
	modeList   = "list"
	modeRaw    = "raw"
)

// modes lists the output modes for help texts and validation.
var modes = []string{modeTable, modeBox, modeColumn, modeCSV, modeJSON, modeLine, modeList, modeRaw}

func validMode(m string) bool {
	for _, x := range modes {
		if x == m {
			return true
		}
	}
	return false
}

// machineMode reports whether mode is meant for programs: there, write
// results print no "N rows affected" line unless asked.
func machineMode(mode string) bool {
	return mode == modeCSV || mode == modeJSON || mode == modeList || mode == modeRaw
}

// printer writes results to stdout in one of the output modes.
type printer struct {
	w    *bufio.Writer
	mode string
	// headers prints column names (table-like modes, csv, list).
	headers bool
	// nullValue is how NULL prints; nil means the mode's default ("NULL",
	// or an empty unquoted field in csv).
	nullValue *string
	// separator divides values in list mode.
	separator string
	// maxWidth, when positive, is the terminal width that table, box and
	// column output is truncated to.
	maxWidth int
	// color dims NULL on a terminal.
	color bool
	// changes prints "N rows affected" for writes; nil means on except in
	// machine modes.
	changes *bool

	// n counts the results printed, to separate them.
	n        int
	hadTable bool
}

func newPrinter(w *bufio.Writer, mode string) *printer {
	return &printer{w: w, mode: mode, headers: true, separator: "|"}
}

func (p *printer) raw() bool { return p.mode == modeRaw }

func (p *printer) showChanges() bool {
	if p.changes != nil {
		return *p.changes
	}
	return !machineMode(p.mode)
}

func (p *printer) null() string {
	if p.nullValue != nil {
		return *p.nullValue
	}
	if p.mode == modeCSV {
		return ""
	}
	return "NULL"
}

// rawResponse writes a response body as one line (mode raw).
func (p *printer) rawResponse(body []byte) {
	p.w.Write(body)
	p.w.WriteByte('\n')
}

// result writes one successful result: rows for a read or a write with
// RETURNING, and a line for a write.
func (p *printer) result(res *api.Result) {
	hasRows := len(res.Columns) > 0
	separated := p.mode == modeColumn || p.mode == modeTable || p.mode == modeBox || p.mode == modeLine
	if separated && p.n > 0 && (hasRows || p.hadTable) {
		p.w.WriteByte('\n')
	}
	p.n++
	p.hadTable = hasRows
	if hasRows {
		p.rows(res.Columns, res.Values)
	}
	if res.Write && p.showChanges() {
		rows := "rows"
		if res.RowsAffected == 1 {
			rows = "row"
		}
		fmt.Fprintf(p.w, "%d %s affected", res.RowsAffected, rows)
		if res.LastInsertID != 0 {
			fmt.Fprintf(p.w, ", last insert id %d", res.LastInsertID)
		}
		p.w.WriteByte('\n')
	}
}

// rows writes a result set in the printer's mode.
func (p *printer) rows(cols []string, rows [][]any) {
	switch p.mode {
	case modeCSV:
		p.csv(cols, rows)
	case modeJSON:
		p.json(cols, rows)
	case modeLine:
		p.line(cols, rows)
	case modeList:
		p.list(cols, rows)
	case modeTable, modeBox:
		p.grid(cols, rows)
	default:
		p.column(cols, rows)
	}
}

// cell is one formatted value of a table.
type cell struct {
	s    string
	null bool
}

// cells formats rows for the table-like modes and measures the columns.
func (p *printer) cells(cols []string, rows [][]any) (header []cell, body [][]cell, widths []int, numeric []bool) {
	header = make([]cell, len(cols))
	widths = make([]int, len(cols))
	numeric = make([]bool, len(cols))
	seen := make([]bool, len(cols)) // a non-NULL value was seen
	for j, c := range cols {
		header[j] = cell{s: escapeControl(c)}
		if p.headers {
			widths[j] = runewidth.StringWidth(header[j].s)
		}
		numeric[j] = true
	}
	body = make([][]cell, len(rows))
	for i, row := range rows {
		body[i] = make([]cell, len(cols))
		for j := range cols {
			var v any
			if j < len(row) {
				v = row[j]
			}
			c := cell{s: formatValue(v), null: v == nil}
			if c.null {
				c.s = p.null()
			}
			body[i][j] = c
			widths[j] = max(widths[j], runewidth.StringWidth(c.s))
			switch v.(type) {
			case nil:
			case int64, float64:
				seen[j] = true
			default:
				seen[j], numeric[j] = true, false
			}
		}
	}
	for j := range numeric {
		numeric[j] = numeric[j] && seen[j]
	}
	return header, body, widths, numeric
}

// fitWidths shrinks the widest columns so that the table, with overhead
// characters of borders and gaps, fits maxWidth. A column keeps its
// header's width (floors) when the table fits that way, else at least 3
// characters (or its own width, if smaller).
func fitWidths(widths, floors []int, overhead, maxWidth int) {
	if maxWidth <= 0 {
		return
	}
	fits := func(c int, floor func(j int) int) bool {
		t := overhead
		for j, w := range widths {
			t += min(w, max(c, floor(j)))
		}
		return t <= maxWidth
	}
	if fits(1<<30, func(int) int { return 0 }) {
		return
	}
	floor := func(j int) int { return min(widths[j], max(3, floors[j])) }
	if !fits(0, floor) {
		floor = func(j int) int { return min(widths[j], 3) }
	}
	// The largest cap that fits (at worst, the floors).
	lo, hi := 0, 0
	for _, w := range widths {
		hi = max(hi, w)
	}
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if fits(mid, floor) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	for j, w := range widths {
		widths[j] = min(w, max(lo, floor(j)))
	}
}

// headerWidths are the widths of the column names, or zeros without
// headers.
func headerWidths(header []cell, on bool) []int {
	w := make([]int, len(header))
	if on {
		for j, c := range header {
			w[j] = runewidth.StringWidth(c.s)
		}
	}
	return w
}

// pad writes c in a field of width w, truncated with an ellipsis when
// wider, right-aligned when right. last omits trailing padding.
func (p *printer) pad(c cell, w int, right, last bool) {
	s := c.s
	sw := runewidth.StringWidth(s)
	if sw > w {
		s = runewidth.Truncate(s, w, "…")
		sw = runewidth.StringWidth(s)
	}
	gap := w - sw
	if right {
		p.w.WriteString(strings.Repeat(" ", gap))
	}
	if c.null {
		p.writeNull(s)
	} else {
		p.w.WriteString(s)
	}
	if !right && !last {
		p.w.WriteString(strings.Repeat(" ", gap))
	}
}

// writeNull writes the text of a NULL, dimmed on a color terminal.
func (p *printer) writeNull(s string) {
	if p.color {
		p.w.WriteString("\x1b[2m")
		p.w.WriteString(s)
		p.w.WriteString("\x1b[0m")
		return
	}
	p.w.WriteString(s)
}

// column writes an aligned table without borders: a header, a rule, the
// rows and a row count. Numeric columns are right-aligned.
func (p *printer) column(cols []string, rows [][]any) {
	header, body, widths, numeric := p.cells(cols, rows)
	fitWidths(widths, headerWidths(header, p.headers), 2*(len(cols)-1), p.maxWidth)
	line := func(cells []cell, align bool) {
		for j, c := range cells {
			if j > 0 {
				p.w.WriteString("  ")
			}
			p.pad(c, widths[j], align && numeric[j], j == len(cells)-1)
		}
		p.w.WriteByte('\n')
	}
	if p.headers {
		line(header, true)
		rule := make([]cell, len(cols))
		for j := range cols {
			rule[j] = cell{s: strings.Repeat("-", widths[j])}
		}
		line(rule, false)
	}
	for _, r := range body {
		line(r, true)
	}
	if p.headers {
		if len(rows) == 1 {
			p.w.WriteString("(1 row)\n")
		} else {
			fmt.Fprintf(p.w, "(%d rows)\n", len(rows))
		}
	}
}

// grid writes a bordered table: ASCII in table mode, Unicode box drawing
// in box mode.
func (p *printer) grid(cols []string, rows [][]any) {
	header, body, widths, numeric := p.cells(cols, rows)
	fitWidths(widths, headerWidths(header, p.headers), 3*len(cols)+1, p.maxWidth)
	type borders struct{ left, mid, right, fill string }
	var top, sep, bottom borders
	vert := "|"
	if p.mode == modeBox {
		top = borders{"┌", "┬", "┐", "─"}
		sep = borders{"├", "┼", "┤", "─"}
		bottom = borders{"└", "┴", "┘", "─"}
		vert = "│"
	} else {
		top = borders{"+", "+", "+", "-"}
		sep, bottom = top, top
	}
	rule := func(b borders) {
		p.w.WriteString(b.left)
		for j, w := range widths {
			if j > 0 {
				p.w.WriteString(b.mid)
			}
			p.w.WriteString(strings.Repeat(b.fill, w+2))
		}
		p.w.WriteString(b.right)
		p.w.WriteByte('\n')
	}
	line := func(cells []cell) {
		p.w.WriteString(vert)
		for j, c := range cells {
			p.w.WriteByte(' ')
			p.pad(c, widths[j], numeric[j], false)
			p.w.WriteByte(' ')
			p.w.WriteString(vert)
		}
		p.w.WriteByte('\n')
	}
	rule(top)
	if p.headers {
		line(header)
		if len(body) > 0 {
			rule(sep)
		}
	}
	for _, r := range body {
		line(r)
	}
	if p.headers || len(body) > 0 {
		rule(bottom)
	}
}

// line writes each row as "column = value" lines, one blank line between
// rows, like sqlite3's line mode.
func (p *printer) line(cols []string, rows [][]any) {
	w := 0
	for _, c := range cols {
		w = max(w, runewidth.StringWidth(c))
	}
	for i, row := range rows {
		if i > 0 {
			p.w.WriteByte('\n')
		}
		for j, c := range cols {
			var v any
			if j < len(row) {
				v = row[j]
			}
			name := escapeControl(c)
			p.w.WriteString(strings.Repeat(" ", max(0, w-runewidth.StringWidth(name))))
			p.w.WriteString(name)
			p.w.WriteString(" = ")
			if v == nil {
				p.writeNull(p.null())
			} else {
				p.w.WriteString(formatValue(v))
			}
			p.w.WriteByte('\n')
		}
	}
}

// list writes values separated by the separator, raw (text is not
// escaped), with a header line when headers are on.
func (p *printer) list(cols []string, rows [][]any) {
	if p.headers {
		p.w.WriteString(strings.Join(cols, p.separator))
		p.w.WriteByte('\n')
	}
	for _, row := range rows {
		for j, v := range row {
			if j > 0 {
				p.w.WriteString(p.separator)
			}
			p.w.WriteString(p.plain(v))
		}
		p.w.WriteByte('\n')
	}
}

// plain renders a value without escaping (list and csv modes).
func (p *printer) plain(v any) string {
	switch x := v.(type) {
	case nil:
		return p.null()
	case string:
		return x
	default:
		return formatValue(v)
	}
}

// csv writes RFC 4180 CSV. NULL is an empty field and the empty string a
// quoted "", so the two stay distinct.
func (p *printer) csv(cols []string, rows [][]any) {
	if p.headers {
		for j, c := range cols {
			if j > 0 {
				p.w.WriteByte(',')
			}
			p.w.WriteString(csvQuote(c, false))
		}
		p.w.WriteByte('\n')
	}
	for _, row := range rows {
		for j, v := range row {
			if j > 0 {
				p.w.WriteByte(',')
			}
			if v == nil {
				p.w.WriteString(csvQuote(p.null(), false))
				continue
			}
			_, isText := v.(string)
			p.w.WriteString(csvQuote(p.plain(v), isText))
		}
		p.w.WriteByte('\n')
	}
}

// csvQuote quotes a CSV field when it needs it; an empty text is quoted
// when emptyQuoted.
func csvQuote(s string, emptyQuoted bool) string {
	if s == "" {
		if emptyQuoted {
			return `""`
		}
		return ""
	}
	if !strings.ContainsAny(s, ",\"\r\n") && s[0] != ' ' && s[len(s)-1] != ' ' {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// json writes a result as a JSON array of objects, one row per line, like
// sqlite3's json mode. Values use the API's encoding (a BLOB is
// {"base64": "..."}, a REAL always has a '.' or an exponent).
func (p *printer) json(cols []string, rows [][]any) {
	keys := make([][]byte, len(cols))
	for j, c := range cols {
		keys[j] = append(api.AppendString(nil, c), ':')
	}
	p.w.WriteByte('[')
	var b []byte
	for i, row := range rows {
		if i > 0 {
			p.w.WriteString(",\n")
		}
		b = append(b[:0], '{')
		for j, v := range row {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, keys[j]...)
			b = api.AppendValue(b, v)
		}
		b = append(b, '}')
		p.w.Write(b)
	}
	p.w.WriteString("]\n")
}

// formatValue renders a value for a table cell. A REAL keeps the wire
// encoding (always with a '.' or an exponent, so 1.0 is not 1); a BLOB is a
// SQL hex literal; control characters in text are escaped.
func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return string(api.AppendReal(nil, x))
	case string:
		return escapeControl(x)
	case []byte:
		return "x'" + hex.EncodeToString(x) + "'"
	default:
		return escapeControl(fmt.Sprint(x))
	}
}

// escapeControl replaces control characters so that a value stays on one
// line and in its column.
func escapeControl(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case isControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
