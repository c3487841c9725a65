package server_test

import (
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// loadDoc reads one of docs/*.yaml and checks that every local $ref in it
// points at something.
func loadDoc(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("../../docs/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, err := resolve(doc, ref); err != "" {
					t.Errorf("%s: %s: $ref %s: %s", name, at, ref, err)
				}
			}
			for k, e := range v {
				walk(e, at+"/"+k)
			}
		case []any:
			for i, e := range v {
				walk(e, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(doc, "")
	return doc
}

// resolve follows a local JSON pointer ("#/components/…").
func resolve(doc map[string]any, ref string) (any, string) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, "not a local reference"
	}
	var cur any = doc
	for _, part := range strings.Split(ref[2:], "/") {
		part = strings.NewReplacer("~1", "/", "~0", "~").Replace(part)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, "runs through a non-object at " + part
		}
		if cur, ok = m[part]; !ok {
			return nil, "no " + part
		}
	}
	return cur, ""
}

// deref follows v's $ref, if it has one.
func deref(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	m, _ := v.(map[string]any)
	if ref, ok := m["$ref"].(string); ok {
		r, _ := resolve(doc, ref)
		return deref(t, doc, r)
	}
	return m
}

// get walks keys through nested objects.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// set is a sorted list, for comparing what is documented with what is seen.
type set map[string]bool

func (s set) add(v string) { s[v] = true }

func (s set) String() string {
	var out []string
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// compare fails unless the documented and the observed sets are equal.
func compare(t *testing.T, what string, documented, observed set) {
	t.Helper()
	for k := range observed {
		if !documented[k] {
			t.Errorf("%s %q happens but is not documented", what, k)
		}
	}
	for k := range documented {
		if !observed[k] {
			t.Errorf("%s %q is documented but did not happen", what, k)
		}
	}
}
