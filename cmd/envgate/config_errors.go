package main

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FieldError is a configuration problem at a place in a file: made where
// the problem is found (the key check of checkNode, a value's decoding,
// validation), never recovered from an error's text.
type FieldError struct {
	File  string
	Line  int    // 0 if unknown
	Field string // templates[0].port; an unknown key as written; "" for the file as a whole
	Err   error
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %v", loc, e.Field, e.Err)
	}
	return fmt.Sprintf("%s: %v", loc, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// errAt builds a FieldError for the key at path (e.g. "templates.0.port"),
// its message as fmt.Errorf's.
func (c *Config) errAt(path, msg string, args ...any) *FieldError {
	return &FieldError{File: c.file, Line: lineOf(c.root, path), Field: displayPath(path), Err: fmt.Errorf(msg, args...)}
}

// errUnknownKey is the Err of a FieldError for a key no field has.
var errUnknownKey = errors.New("unknown key")

// maxNodes bounds the nodes checkNode visits, aliases expanded: a config
// is small, and a few nested aliases could otherwise make it huge.
const maxNodes = 1 << 20

// nodeChecker checks a YAML tree against the Go type it is to be decoded
// into, before yaml.v3 decodes it: every key must be a field's, and every
// value must decode into its field. Each problem is a FieldError with the
// line of the key or value at fault.
type nodeChecker struct {
	file      string
	errs      []error
	expanding map[*yaml.Node]bool // aliases being expanded, against loops
	visited   int
}

// checkConfig checks a parsed config file against Config.
func checkConfig(file string, root *yaml.Node) []error {
	ch := &nodeChecker{file: file, expanding: map[*yaml.Node]bool{}}
	if len(root.Content) > 0 {
		ch.check(root.Content[0], reflect.TypeFor[Config](), "")
	}
	return ch.errs
}

func (ch *nodeChecker) fail(n *yaml.Node, path string, err error) {
	ch.errs = append(ch.errs, &FieldError{File: ch.file, Line: n.Line, Field: displayPath(path), Err: err})
}

var (
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// check checks node n against type t; path is n's dotted path.
func (ch *nodeChecker) check(n *yaml.Node, t reflect.Type, path string) {
	if ch.visited++; ch.visited > maxNodes {
		if ch.visited == maxNodes+1 {
			ch.fail(n, path, fmt.Errorf("more than %d values, aliases expanded", maxNodes))
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		if ch.expanding[n] {
			ch.fail(n, path, fmt.Errorf("alias *%s contains itself", n.Value))
			return
		}
		ch.expanding[n] = true
		ch.check(n.Alias, t, path)
		delete(ch.expanding, n)
		return
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) || pt.Implements(textUnmarshalerType) {
		// Its own rules (Duration, Size, EgressConfig): its error says
		// what is wrong with the value, this says where.
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			ch.fail(n, path, err)
		}
		return
	}
	isNull := n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
	switch t.Kind() {
	case reflect.Pointer:
		if !isNull {
			ch.check(n, t.Elem(), path)
		}
	case reflect.Struct:
		switch {
		case isNull:
		case n.Kind != yaml.MappingNode:
			ch.fail(n, path, fmt.Errorf("want a section of keys, not %s", kindOf(n)))
		default:
			ch.checkMapping(n, t, path, false)
		}
	case reflect.Slice, reflect.Array:
		switch {
		case isNull:
		case n.Kind != yaml.SequenceNode:
			ch.fail(n, path, fmt.Errorf("want a list, not %s", kindOf(n)))
		default:
			for i, item := range n.Content {
				ch.check(item, t.Elem(), join(path, strconv.Itoa(i)))
			}
		}
	case reflect.Map:
		switch {
		case isNull:
		case n.Kind != yaml.MappingNode:
			ch.fail(n, path, fmt.Errorf("want a map of keys to values, not %s", kindOf(n)))
		default:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if err := k.Decode(reflect.New(t.Key()).Interface()); err != nil {
					ch.fail(k, join(path, k.Value), fmt.Errorf("%q: want %s as a key", k.Value, valueWord(t.Key())))
					continue
				}
				ch.check(v, t.Elem(), join(path, k.Value))
			}
		}
	case reflect.Interface:
		// Anything goes.
	default:
		if n.Kind != yaml.ScalarNode {
			ch.fail(n, path, fmt.Errorf("want %s, not %s", valueWord(t), kindOf(n)))
		} else if err := n.Decode(reflect.New(t).Interface()); err != nil {
			ch.fail(n, path, fmt.Errorf("%q: want %s", n.Value, valueWord(t)))
		}
	}
}

// checkMapping checks mapping n against struct type t. A key written
// twice is an error, but not one that a merge (<<: *base) brings in, as
// keys written out override merged ones.
func (ch *nodeChecker) checkMapping(n *yaml.Node, t reflect.Type, path string, merged bool) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			ch.checkMerge(v, t, path)
			continue
		}
		f, ok := fieldByKey(t, k.Value)
		if !ok {
			where := ""
			if path != "" {
				where = " in " + displayPath(path)
			}
			ch.errs = append(ch.errs, &FieldError{File: ch.file, Line: k.Line, Field: k.Value,
				Err: fmt.Errorf("%w%s (check its spelling and section against the documented keys)", errUnknownKey, where)})
			continue
		}
		if line, dup := seen[k.Value]; dup && !merged {
			ch.fail(k, join(path, k.Value), fmt.Errorf("set twice (first on line %d)", line))
			continue
		}
		seen[k.Value] = k.Line
		ch.check(v, f.Type, join(path, k.Value))
	}
}

// checkMerge checks the value of a merge key (<<: *base, or a list of
// them) against struct type t.
func (ch *nodeChecker) checkMerge(v *yaml.Node, t reflect.Type, path string) {
	for v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.MappingNode:
		ch.checkMapping(v, t, path, true)
	case yaml.SequenceNode:
		for _, m := range v.Content {
			ch.checkMerge(m, t, path)
		}
	default:
		ch.fail(v, path, fmt.Errorf("<<: want a mapping to merge, not %s", kindOf(v)))
	}
}

// fieldByKey finds the field of struct type t that YAML key decodes into,
// by yaml.v3's rules: the yaml tag's name, else the lower-cased name.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// kindOf names what a node holds, for messages.
func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a section of keys"
	}
	return strconv.Quote(n.Value)
}

// valueWord names what a Go type wants, for messages.
func valueWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number of 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// displayPath turns "templates.0.port" into "templates[0].port".
func displayPath(p string) string {
	if p == "" {
		return ""
	}
	var b strings.Builder
	for s := range strings.SplitSeq(p, ".") {
		if _, err := strconv.Atoi(s); err == nil {
			b.WriteString("[" + s + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	return b.String()
}

// dottedPath turns a field as the lifecycle writes it, command[0], into
// the dotted path errAt takes, command.0.
func dottedPath(field string) string {
	return strings.NewReplacer("[", ".", "]", "").Replace(field)
}

// lineOf finds the line of the value at a dotted path in the YAML tree, or
// of its nearest ancestor that exists.
func lineOf(root *yaml.Node, path string) int {
	if root == nil || len(root.Content) == 0 {
		return 0
	}
	n := root.Content[0]
	line := 0
	for key := range strings.SplitSeq(path, ".") {
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					next = n.Content[i+1]
					line = n.Content[i].Line
				}
			}
		case yaml.SequenceNode:
			if i, err := strconv.Atoi(key); err == nil && i < len(n.Content) {
				next = n.Content[i]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}
