//go:build !windows

package main

import (
	"bytes"
	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestMain lets the tests run nqctl as a process: the test binary with
// NQCTL_TEST_MAIN=1 is nqctl.
func TestMain(m *testing.M) {
	if os.Getenv("NQCTL_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// ptyShell is nqctl running on a pseudo-terminal.
type ptyShell struct {
	t    *testing.T
	cmd  *exec.Cmd
	tty  *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	mark int // expect looks after here
	done chan struct{}
}

// startPTY starts nqctl with args on a terminal of cols columns, with
// HOME (and so the history file) in home.
func startPTY(t *testing.T, home string, cols uint16, args ...string) *ptyShell {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "NQCTL_TEST_MAIN=1", "HOME="+home, "XDG_CONFIG_HOME="+home,
		"NQCTL_HISTORY=", "TERM=xterm", "NO_COLOR=1", "NATS_URL=", "NATS_CONTEXT=")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: cols})
	if err != nil {
		t.Fatalf("start on a pty: %v", err)
	}
	p := &ptyShell{t: t, cmd: cmd, tty: tty, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		tty.Close()
	})
	return p
}

// expect waits until the output after the last match holds s.
func (p *ptyShell) expect(s string) {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p.mu.Lock()
		out := p.out.String()
		p.mu.Unlock()
		if i := strings.Index(out[p.mark:], s); i >= 0 {
			p.mark += i + len(s)
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %q; output after the last match:\n%q", s, out[p.mark:])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// send types keys once the line editor has the terminal in raw mode: in
// the moment between printing a prompt and switching modes, the terminal
// is still cooked, and a Ctrl-C would become a SIGINT instead of a key.
func (p *ptyShell) send(keys string) {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(p.tty.Fd()), unix.TCGETS)
		if err != nil {
			p.t.Fatalf("termios: %v", err)
		}
		if tio.Lflag&unix.ICANON == 0 {
			break
		}
		if time.Now().After(deadline) {
			p.t.Fatal("the terminal never left canonical mode")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := p.tty.Write([]byte(keys)); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for nqctl to exit and returns its exit code.
func (p *ptyShell) wait() int {
	p.t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		p.t.Fatal("nqctl did not exit")
	}
	return p.cmd.ProcessState.ExitCode()
}

func TestShellPTY(t *testing.T) {
	url := startNode(t)
	home := t.TempDir()
	const prompt = "nqlite:main> "
	const cont = "        ...> "

	sh := startPTY(t, home, 100, "--server", url)
	sh.expect(".help for help, Ctrl-D to leave")
	sh.expect(prompt)
	sh.send("CREATE TABLE p(id INTEGER PRIMARY KEY, name TEXT);\r")
	sh.expect("0 rows affected")
	sh.expect(prompt)
	// A statement over two lines, with the continuation prompt.
	sh.send("INSERT INTO p(name)\r")
	sh.expect(cont)
	sh.send("VALUES ('pty');\r")
	sh.expect("1 row affected, last insert id 1")
	sh.expect(prompt)
	sh.send("SELECT id, name\r")
	sh.expect(cont)
	sh.send("  FROM p;\r")
	sh.expect("|  1 | pty  |")
	sh.expect(prompt)
	// Ctrl-C drops the unfinished statement.
	sh.send("SELECT 1 +\r")
	sh.expect(cont)
	sh.send("\x03")
	sh.expect(prompt)
	sh.send("SELECT 'after' AS a;\r")
	sh.expect("| after |")
	sh.expect(prompt)
	// Line editing: Ctrl-A goes to the start of the line.
	sh.send(" 2 AS two;\x01SELECT\r")
	sh.expect("| two |")
	sh.expect(prompt)
	sh.send(".exit\r")
	if code := sh.wait(); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	// The history file holds each command, a multi-line statement as one
	// line.
	data, err := os.ReadFile(filepath.Join(home, ".nqctl_history"))
	if err != nil {
		t.Fatal(err)
	}
	want := "CREATE TABLE p(id INTEGER PRIMARY KEY, name TEXT);\nINSERT INTO p(name) VALUES ('pty');\nSELECT id, name FROM p;\nSELECT 'after' AS a;\nSELECT 2 AS two;\n.exit\n"
	if string(data) != want {
		t.Errorf("history:\n%s\nwant:\n%s", data, want)
	}

	// A new shell recalls the history: three times Up is the SELECT of
	// the first session. A narrow terminal truncates wide values.
	sh = startPTY(t, home, 40, "--server", url)
	sh.expect(prompt)
	sh.send("\x1b[A\x1b[A\x1b[A\x1b[A")
	sh.expect("SELECT id, name FROM p;")
	sh.send("\r")
	sh.expect("|  1 | pty  |")
	sh.expect(prompt)
	sh.send("SELECT printf('%.60c', 'w') AS wide, 1 AS n;\r")
	sh.expect("\n| " + strings.Repeat("w", 31) + "… | 1 |\r\n")
	sh.expect(prompt)
	sh.send("SELECT nope FROM p;\r")
	sh.expect("Error: no such column: nope (line 1, column 8)")
	sh.expect("^--- error here")
	sh.expect(prompt)
	sh.send("\x04") // Ctrl-D
	if code := sh.wait(); code != 1 {
		t.Errorf("exit code %d after a failed statement, want 1", code)
	}
}
