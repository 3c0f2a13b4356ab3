package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nqlite/nqlite/service/api"
)

// printer writes results to stdout as tables or raw JSON.
type printer struct {
	w    *bufio.Writer
	json bool
	// n counts the results printed, to separate them.
	n        int
	hadTable bool
}

// raw writes a response body as one line.
func (p *printer) raw(body []byte) {
	p.w.Write(body)
	p.w.WriteByte('\n')
}

// result writes one successful result: a table for rows (a read, or a
// write with RETURNING) and a line for a write.
func (p *printer) result(res *api.Result) {
	table := len(res.Columns) > 0
	if p.n > 0 && (table || p.hadTable) {
		p.w.WriteByte('\n')
	}
	p.n++
	p.hadTable = table
	if table {
		writeTable(p.w, res.Columns, res.Values)
	}
	if res.Write {
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

// writeTable writes an aligned table: a header, a rule, the rows and a
// row count. Numeric columns are right-aligned, NULL is shown as NULL, a
// BLOB as a SQL hex literal x'0a1b', control characters in text as
// escapes (\n, \t, \x01).
func writeTable(w *bufio.Writer, cols []string, rows [][]any) {
	cells := make([][]string, len(rows))
	widths := make([]int, len(cols))
	numeric := make([]bool, len(cols))
	seen := make([]bool, len(cols)) // a non-NULL value was seen
	for j, c := range cols {
		widths[j] = utf8.RuneCountInString(c)
		numeric[j] = true
	}
	for i, row := range rows {
		cells[i] = make([]string, len(cols))
		for j := range cols {
			var v any
			if j < len(row) {
				v = row[j]
			}
			cells[i][j] = formatValue(v)
			widths[j] = max(widths[j], utf8.RuneCountInString(cells[i][j]))
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
	line := func(vals []string, rightAlign bool) {
		for j, v := range vals {
			pad := widths[j] - utf8.RuneCountInString(v)
			if j > 0 {
				w.WriteString("  ")
			}
			if rightAlign && numeric[j] {
				w.WriteString(strings.Repeat(" ", pad))
				w.WriteString(v)
				continue
			}
			w.WriteString(v)
			if j < len(vals)-1 {
				w.WriteString(strings.Repeat(" ", pad))
			}
		}
		w.WriteByte('\n')
	}
	header := make([]string, len(cols))
	for j, c := range cols {
		header[j] = escapeControl(c)
	}
	line(header, true)
	rule := make([]string, len(cols))
	for j := range cols {
		rule[j] = strings.Repeat("-", widths[j])
	}
	line(rule, false)
	for _, r := range cells {
		line(r, true)
	}
	if len(rows) == 1 {
		w.WriteString("(1 row)\n")
	} else {
		fmt.Fprintf(w, "(%d rows)\n", len(rows))
	}
}

// formatValue renders a value for a table cell. A REAL keeps the wire
// encoding (always with a '.' or an exponent, so 1.0 is not 1).
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
