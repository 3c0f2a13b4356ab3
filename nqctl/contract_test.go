package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOneWireContract checks that nqctl speaks to the nodes only through
// service/client and service/api: its sources hold no subject of the
// nqlite API, no micro error header and no request or subscription of
// their own on the NATS connection, and do not import micro (whose stats
// client.Stats decodes). A second copy of any of them would drift from
// the nodes' (the README's "one wire contract").
func TestOneWireContract(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	// NATS calls that send a request or subscribe; the Object Store and
	// JetStream clients nqctl uses for uploads have other names.
	natsCalls := map[string]bool{"Request": true, "RequestWithContext": true, "RequestMsg": true, "RequestMsgWithContext": true,
		"Publish": true, "PublishMsg": true, "Subscribe": true, "SubscribeSync": true, "QueueSubscribe": true, "ChanSubscribe": true}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/nats-io/nats.go/micro" {
				t.Errorf("%s imports %s: take stats from client.Stats", fset.Position(imp.Pos()), p)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.BasicLit:
				if x.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(x.Value)
				if err != nil {
					return true
				}
				if strings.HasPrefix(s, "nqlite.") && !strings.ContainsAny(s, " <") {
					t.Errorf("%s: subject %q: use service/api's subject functions through service/client", fset.Position(x.Pos()), s)
				}
				if strings.Contains(s, "Nats-Service-Error") || strings.HasPrefix(s, "$SRV.") {
					t.Errorf("%s: %q: decode replies with service/client", fset.Position(x.Pos()), s)
				}
			case *ast.CallExpr:
				if sel, ok := x.Fun.(*ast.SelectorExpr); ok && natsCalls[sel.Sel.Name] {
					t.Errorf("%s: %s call: send requests through service/client", fset.Position(x.Pos()), sel.Sel.Name)
				}
			}
			return true
		})
	}
	if checked < 10 {
		t.Fatalf("checked %d source files: run the test in nqctl's directory", checked)
	}
}
