package ingress_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"herald/ingress"
)

func TestNewAmount_KeepsDigits(t *testing.T) {
	for _, s := range []string{"2.00", "0.0623414132", "123456789012345678.123456789", "-1.50", "100", "1e3"} {
		a, err := ingress.NewAmount("x", json.Number(s), "EUR")
		if err != nil || a.Value != s {
			t.Errorf("%s: %+v %v", s, a, err)
		}
	}
	for _, s := range []string{"", "abc", "1e999999", "1e-99", "NaN", "0x10", "1,5"} {
		if _, err := ingress.NewAmount("x", json.Number(s), "EUR"); !errors.Is(err, ingress.ErrMalformed) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseTime(t *testing.T) {
	for in, want := range map[string]string{
		"2018-11-27T13:46:22.658":    "2018-11-27T13:46:22.658Z",
		"2018-07-18 11:27:53+0000":   "2018-07-18T11:27:53Z",
		"2022-03-15T12:13:05.909616": "2022-03-15T12:13:05.909616Z",
		"2024-01-02T03:04:05+02:00":  "2024-01-02T01:04:05Z",
		"2024-01-02T03:04:05Z":       "2024-01-02T03:04:05Z",
	} {
		got, err := ingress.ParseTime("t", in)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	if _, err := ingress.ParseTime("t", "yyyy-mm-ddThh:mm:ss.msZ"); !errors.Is(err, ingress.ErrMalformed) {
		t.Error("a placeholder date was accepted")
	}
}

func TestMaskCard(t *testing.T) {
	for in, want := range map[string]string{
		"4111111111111111":    "411111******1111",
		"4111 1111 1111 1111": "4111 11** **** 1111",
		"12345":               "*****",
	} {
		if got := ingress.MaskCard(in); got != want {
			t.Errorf("MaskCard(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRewrite_KeepsOrderAndDigits(t *testing.T) {
	maskTo := map[string]func(string) string{"to": ingress.MaskCard}
	in := `{"b": 1.50, "to": "4111111111111111", "nested": [{"to": "5500000000000004", "n": 1e2}], "a": null, "t": true}`
	got, err := ingress.Rewrite([]byte(in), maskTo)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"b":1.50,"to":"411111******1111","nested":[{"to":"550000******0004","n":1e2}],"a":null,"t":true}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// A name spelled with an escape is still the name.
	got, err = ingress.Rewrite([]byte(`{"a":{"t\u006f":"4111111111111111"}}`), maskTo)
	if err != nil || string(got) != `{"a":{"to":"411111******1111"}}` {
		t.Fatalf("escaped name: %s %v", got, err)
	}
	// Without the name (a value equal to it is not a member), the body is
	// only compacted, and refused as it would be otherwise.
	got, err = ingress.Rewrite([]byte(`{"x": "to", "n": [1.0, "tone"]}`), maskTo)
	if err != nil || string(got) != `{"x":"to","n":[1.0,"tone"]}` {
		t.Fatalf("no such member: %s %v", got, err)
	}
	for _, bad := range []string{`{"x":1} {}`, `{"x":`, ``} {
		if _, err := ingress.Rewrite([]byte(bad), maskTo); !errors.Is(err, ingress.ErrMalformed) {
			t.Errorf("%q accepted: %v", bad, err)
		}
	}
	// Nesting is bounded where rewriting recurses (the ingress refuses
	// deep bodies before any adapter sees them).
	deep := []byte(`{"to":"4111111111111111","x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`)
	if _, err := ingress.Rewrite(deep, maskTo); !errors.Is(err, ingress.ErrMalformed) {
		t.Fatalf("deep nesting accepted: %v", err)
	}
}

func TestDepth_CountsBracketsOutsideStrings(t *testing.T) {
	for doc, want := range map[string]int{
		`1`:                          0,
		`{}`:                         1,
		`{"a":[1,{"b":[]}]}`:         4,
		`{"a":"[[[{{{"}`:             1,
		`{"a":"\"[[","b":[]}`:        2,
		`{"a\\":[[]],"s":"\\"}`:      3,
		"[[[\n]]]":                   3,
		strings.Repeat("[", 100):     100,
		`{"x":"` + "\xff[" + `"}`:    1,
		`[{"k":"}}}}"},[{"k":"]"}]]`: 3,
	} {
		if got := ingress.Depth([]byte(doc)); got != want {
			t.Errorf("Depth(%s) = %d, want %d", doc, got, want)
		}
	}
}

// The in-memory dead letters are bounded by their JSON, which escapes can
// make six times their bodies.
func TestMemoryDeadLetters_BoundedByTheirJSON(t *testing.T) {
	d := ingress.NewMemoryDeadLetters(1000)
	body := strings.Repeat("<", 64<<10) // \u003c in JSON
	for range 100 {
		if err := d.Add(context.Background(), ingress.DeadLetter{Provider: "p", Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	got, more, err := d.List(context.Background(), 1000, 4<<20)
	if err != nil || !more {
		t.Fatalf("%d dead letters, more %v, %v", len(got), more, err)
	}
	b, _ := json.Marshal(got)
	if len(b) > 4<<20 || len(got) < 9 {
		t.Fatalf("%d dead letters in %d bytes of JSON, want the most that fit in 4 MiB", len(got), len(b))
	}
}
