package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/peterh/liner"
)

// errInterrupted is returned by a lineReader when the person pressed
// Ctrl-C at the prompt: the line being typed, and any unfinished
// statement, are dropped.
var errInterrupted = errors.New("interrupted")

// lineReader reads the shell's input a line at a time.
type lineReader interface {
	// readLine shows prompt and returns the next line without its line
	// end; io.EOF at the end of input (Ctrl-D), errInterrupted on Ctrl-C.
	readLine(prompt string) (string, error)
	// addHistory records an entered command (a whole multi-line statement
	// joined into one line).
	addHistory(entry string)
	close() error
}

// linerReader is the interactive line editor: github.com/peterh/liner
// (Emacs keys, history search with Ctrl-R, completion with Tab), with the
// history kept in a file.
type linerReader struct {
	st   *liner.State
	path string // history file, "" for none
	errw io.Writer
}

// historyFile returns the history path: $NQCTL_HISTORY, else
// ~/.nqctl_history; "" when there is no home directory.
func historyFile() string {
	if p := os.Getenv("NQCTL_HISTORY"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ""
	}
	return filepath.Join(home, ".nqctl_history")
}

func newLinerReader(historyPath string, errw io.Writer, complete liner.WordCompleter) *linerReader {
	st := liner.NewLiner()
	st.SetCtrlCAborts(true)
	st.SetMultiLineMode(true)
	st.SetTabCompletionStyle(liner.TabPrints)
	if complete != nil {
		st.SetWordCompleter(complete)
	}
	r := &linerReader{st: st, path: historyPath, errw: errw}
	if historyPath != "" {
		if f, err := os.Open(historyPath); err == nil {
			if _, err := st.ReadHistory(f); err != nil {
				fmt.Fprintf(errw, "nqctl: history %s: %v\n", historyPath, err)
			}
			f.Close()
		}
	}
	return r
}

func (r *linerReader) readLine(prompt string) (string, error) {
	line, err := r.st.Prompt(prompt)
	if errors.Is(err, liner.ErrPromptAborted) {
		return "", errInterrupted
	}
	return line, err
}

// addHistory appends entry and rewrites the history file, so that it
// survives a crash or a closed terminal.
func (r *linerReader) addHistory(entry string) {
	if strings.TrimSpace(entry) == "" {
		return
	}
	r.st.AppendHistory(entry)
	if r.path == "" {
		return
	}
	tmp := r.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = r.st.WriteHistory(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, r.path)
		}
	}
	if err != nil {
		os.Remove(tmp)
		fmt.Fprintf(r.errw, "nqctl: history %s: %v\n", r.path, err)
		r.path = "" // say it once
	}
}

func (r *linerReader) close() error { return r.st.Close() }

// promptReader reads lines from a reader, writing the prompt to w (the
// terminal's stderr when only stdin is a terminal). It keeps no history.
type promptReader struct {
	r *bufio.Reader
	w io.Writer
}

func (p *promptReader) readLine(prompt string) (string, error) {
	if p.w != nil && prompt != "" {
		io.WriteString(p.w, prompt)
	}
	line, err := p.r.ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (p *promptReader) addHistory(string) {}
func (p *promptReader) close() error      { return nil }
