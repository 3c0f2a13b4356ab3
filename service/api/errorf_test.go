package api_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorf_Numbers reads the module's source: every api.Errorf call
// gives a number that stands for one kind (400, 403, 413, 500, 503), and
// every api.Error literal names its Kind. 408 and 504 are shared by kinds
// that mean opposite things for a write (stored, not_reached, unknown...),
// so an error with one of them must come from api.NewError with its kind:
// an Errorf(CodeTimeout, ...) once answered a read that timed out with
// 408, which says "stored, do not retry". The one Errorf with a number
// from a variable, apply/policy.go's deny, is checked at its callers.
func TestErrorf_Numbers(t *testing.T) {
	single := map[string]bool{"CodeBadRequest": true, "CodeForbidden": true, "CodeTooLarge": true, "CodeInternal": true, "CodeUnavailable": true}
	name := func(e ast.Expr) string {
		switch x := e.(type) {
		case *ast.Ident:
			return x.Name
		case *ast.SelectorExpr:
			return x.Sel.Name
		}
		return ""
	}
	// isAPI reports whether e names api.<sel> (or <sel> inside package api).
	isAPI := func(pkg string, e ast.Expr, sel string) bool {
		switch x := e.(type) {
		case *ast.Ident:
			return pkg == "api" && x.Name == sel
		case *ast.SelectorExpr:
			id, ok := x.X.(*ast.Ident)
			return ok && id.Name == "api" && x.Sel.Name == sel
		}
		return false
	}
	calls := 0
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		pkg := f.Name.Name
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.FuncDecl:
				// DecodeError reads other nodes' answers, kind or none.
				return !(rel == "service/api/errors.go" && x.Name.Name == "DecodeError")
			case *ast.CallExpr:
				switch {
				case isAPI(pkg, x.Fun, "Errorf") && len(x.Args) > 0:
					calls++
					arg := name(x.Args[0])
					if rel == "apply/policy.go" && arg == "code" {
						return true // deny's, checked below
					}
					if !single[arg] {
						t.Errorf("%s: api.Errorf(%s, ...): give a number that stands for one kind, or use api.NewError with the kind", fset.Position(x.Pos()), arg)
					}
				case rel == "apply/policy.go" && name(x.Fun) == "deny" && len(x.Args) > 0:
					if arg := name(x.Args[0]); !single[arg] {
						t.Errorf("%s: deny(%s, ...): give a number that stands for one kind", fset.Position(x.Pos()), arg)
					}
				}
			case *ast.CompositeLit:
				if !isAPI(pkg, x.Type, "Error") {
					return true
				}
				kind := false
				for _, el := range x.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok && name(kv.Key) == "Kind" {
						kind = true
					}
				}
				if !kind {
					t.Errorf("%s: an api.Error without its Kind", fset.Position(x.Pos()))
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls < 50 {
		t.Fatalf("found %d api.Errorf calls: the walk missed the sources", calls)
	}
}
