// Package docscheck finds the error sentences the machine can print, so a test can hold
// docs/troubleshooting.md to them.
//
// An error sentence, in this code base, is a string literal that says what is wrong and, after
// a semicolon, what to do ("MACHINE_HEALTH_PORT 9090 is not available (…); set
// MACHINE_HEALTH_PORT to a free port, or 0 for any"). The ones that count are those passed to
// fmt.Errorf, errors.New, fmt.Sprintf, the configuration's problem list, or a log call at
// Error or Warn level, in the packages compiled into cmd/machine.
package docscheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Sentence is one error sentence found in the code.
type Sentence struct {
	Text string // the format string, verbs and all
	Key  string // its longest fixed fragment: what the documentation must contain
	Pos  string // file:line
}

// calls are the functions whose string argument is an error sentence when it has a "; ".
var calls = map[string]bool{"Errorf": true, "New": true, "Sprintf": true, "problem": true, "Error": true, "Warn": true}

var verb = regexp.MustCompile(`%[-+# 0]*[0-9]*(\.[0-9]+)?[a-zA-Z%]`)

// KeyOf is the longest run of fixed text between a format's verbs, trimmed.
func KeyOf(format string) string {
	key := ""
	for _, part := range verb.Split(format, -1) {
		if p := strings.TrimSpace(part); len(p) > len(key) {
			key = p
		}
	}
	return key
}

// literal folds a string literal or a concatenation of string literals.
func literal(e ast.Expr) (string, bool) {
	switch x := e.(type) {
	case *ast.BasicLit:
		if x.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(x.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if x.Op != token.ADD {
			return "", false
		}
		a, ok1 := literal(x.X)
		b, ok2 := literal(x.Y)
		return a + b, ok1 && ok2
	case *ast.ParenExpr:
		return literal(x.X)
	}
	return "", false
}

// Find returns the error sentences of the Go files (tests left out) in dirs, relative to root.
func Find(root string, dirs []string) ([]Sentence, error) {
	var out []Sentence
	fset := token.NewFileSet()
	for _, dir := range dirs {
		entries, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			path := filepath.Join(root, dir, name)
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return nil, err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				var fn string
				switch f := call.Fun.(type) {
				case *ast.SelectorExpr:
					fn = f.Sel.Name
				case *ast.Ident:
					fn = f.Name
				}
				if !calls[fn] {
					return true
				}
				s, ok := literal(call.Args[0])
				if !ok || !strings.Contains(s, "; ") || strings.HasPrefix(s, "form-data;") { // a multipart header, not a sentence
					return true
				}
				p := fset.Position(call.Pos())
				rel, _ := filepath.Rel(root, p.Filename)
				out = append(out, Sentence{Text: s, Key: KeyOf(s), Pos: rel + ":" + strconv.Itoa(p.Line)})
				return true
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pos < out[j].Pos })
	return out, nil
}
