package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/nqlite/nqlite/service/api"
)

// importOptions are the options of .import and nqctl import.
type importOptions struct {
	file, table string
	// skip drops the first skip rows of the file.
	skip int
	// progress shows a progress bar on stderr.
	progress bool
	// stdin is read when file is "-".
	stdin io.Reader
	// batchBytes bounds the JSON size of one request (default
	// chunkLimit).
	batchBytes int
}

// importCSV reads CSV from o.file and inserts its rows into o.table, like
// sqlite3's .import: when the table does not exist, it is created with a
// TEXT column for each field of the header row; when it exists, every row
// is data (use skip to drop a header). Rows with fewer fields are filled
// with NULL, extra fields are dropped, both with a warning.
//
// Rows go in batches: one request of parameterized INSERTs (JSON array
// form) of at most o.batchBytes, so a file of thousands of rows is a few
// stream entries. A row that fails (a constraint) is reported with its
// line and the others are kept, as in sqlite3.
func importCSV(ctx context.Context, s *session, stderr io.Writer, o importOptions) error {
	if o.batchBytes <= 0 {
		o.batchBytes = chunkLimit
	}
	var (
		in   io.Reader
		size int64 = -1
	)
	if o.file == "-" {
		in = o.stdin
	} else {
		f, err := os.Open(o.file)
		if err != nil {
			return failedf(".import: %v", err)
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		in = f
	}
	var bar *progressbar.ProgressBar
	if o.progress {
		bar = progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("importing "+o.table),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		r := progressbar.NewReader(in, bar)
		in = &r
	}
	br := bufio.NewReader(in)
	if b, err := br.Peek(3); err == nil && string(b) == "\xEF\xBB\xBF" {
		br.Discard(3) // a byte order mark
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true

	// The table's columns, or the header row to create it from.
	cols, err := tableColumns(ctx, s, o.table)
	if err != nil {
		return wrapErr(".import", err)
	}
	line := 0
	read := func() ([]string, error) {
		rec, err := cr.Read()
		if err == nil {
			line, _ = cr.FieldPos(0)
		}
		return rec, err
	}
	for i := 0; i < o.skip; i++ {
		if _, err := read(); err != nil {
			if err == io.EOF {
				return nil
			}
			return failedf(".import %s: %v", o.file, err)
		}
	}
	created := false
	if cols == nil {
		header, err := read()
		if err == io.EOF {
			return failedf(".import %s: the file is empty: no header row to create table %s from", o.file, o.table)
		}
		if err != nil {
			return failedf(".import %s: %v", o.file, err)
		}
		defs := make([]string, len(header))
		for i, h := range header {
			if h == "" {
				h = fmt.Sprintf("c%d", i+1)
			}
			defs[i] = quoteIdent(h) + " TEXT"
			cols = append(cols, h)
		}
		create := "CREATE TABLE " + quoteIdent(o.table) + "(" + strings.Join(defs, ", ") + ")"
		if _, err := s.query(ctx, api.Statement{SQL: create}); err != nil {
			return wrapErr(".import: create table "+o.table, err)
		}
		created = true
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = quoteIdent(c)
	}
	insert := "INSERT INTO " + quoteIdent(o.table) + "(" + strings.Join(quoted, ",") + ") VALUES(" +
		strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + ")"
	base := len(api.AppendString(nil, insert)) + 4

	var (
		batch     []api.Statement
		lines     []int
		bytes     int
		rows      int
		failed    int
		requests  int
		warnings  int
		lastError string
	)
	warn := func(line int, format string, args ...any) {
		warnings++
		if warnings <= 10 {
			if bar != nil {
				bar.Clear()
			}
			fmt.Fprintf(stderr, "%s:%d: %s\n", o.file, line, fmt.Sprintf(format, args...))
		}
	}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		req := s.request(batch, reqOptions{})
		req.Format = api.FormatValues
		_, resp, _, err := s.do(ctx, req)
		requests++
		if err != nil {
			return fmt.Errorf("rows of lines %d-%d: %w", lines[0], lines[len(lines)-1], err)
		}
		for i, r := range resp.Results {
			if r.Error != "" {
				failed++
				lastError = r.Error
				warn(lines[i], "INSERT failed: %s", r.Error)
				continue
			}
			rows++
		}
		batch, lines, bytes = batch[:0], lines[:0], 0
		return nil
	}
	var buf []byte
	for {
		rec, err := read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return failedf(".import %s:%d: %v", o.file, pe.Line, pe.Err)
			}
			return failedf(".import %s: %v", o.file, err)
		}
		params := make([]any, len(cols))
		switch {
		case len(rec) < len(cols):
			warn(line, "expected %d columns but found %d: filling the rest with NULL", len(cols), len(rec))
		case len(rec) > len(cols):
			warn(line, "expected %d columns but found %d: extras ignored", len(cols), len(rec))
		}
		n := base
		for i := range cols {
			if i < len(rec) {
				params[i] = rec[i]
				buf = api.AppendString(buf[:0], rec[i])
				n += len(buf) + 1
			} else {
				n += 5
			}
		}
		if len(batch) > 0 && bytes+n > o.batchBytes {
			if err := flush(); err != nil {
				return wrapErr(".import", err)
			}
		}
		batch = append(batch, api.Statement{SQL: insert, Params: params})
		lines = append(lines, line)
		bytes += n
	}
	if err := flush(); err != nil {
		return wrapErr(".import", err)
	}
	if bar != nil {
		bar.Finish()
	}
	if warnings > 10 {
		fmt.Fprintf(stderr, "%s: %d more warnings\n", o.file, warnings-10)
	}
	what := ""
	if created {
		what = " (created)"
	}
	fmt.Fprintf(stderr, "imported %d rows into %s%s in %d requests\n", rows, o.table, what, requests)
	if failed > 0 {
		return failedf(".import: %d rows failed (last: %s)", failed, lastError)
	}
	return nil
}

// tableColumns returns the insertable columns of table (not generated,
// not hidden), or nil when it does not exist.
func tableColumns(ctx context.Context, s *session, table string) ([]string, error) {
	resp, err := s.query(ctx, api.Statement{SQL: "PRAGMA table_xinfo(" + quoteIdent(table) + ")"})
	if err != nil {
		return nil, err
	}
	r := resp.Results[0]
	idx := map[string]int{}
	for i, c := range r.Columns {
		idx[c] = i
	}
	var cols []string
	for _, row := range r.Values {
		if hidden, _ := row[idx["hidden"]].(int64); hidden != 0 {
			continue
		}
		cols = append(cols, str(row[idx["name"]]))
	}
	if len(r.Values) == 0 {
		return nil, nil
	}
	return cols, nil
}
