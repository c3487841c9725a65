package heraldtest

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"herald/channels"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// Root returns the repository root (the directory holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// Fixtures returns the webhook fixtures of a provider: every
// testdata/<provider>/*.json that is not a golden file, by name.
func Fixtures(t testing.TB, provider string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(Root(t), "testdata", provider, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.json") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = b
	}
	if len(out) == 0 {
		t.Fatalf("no fixtures in testdata/%s", provider)
	}
	return out
}

// GoldenClock is the received_at of every golden event.
var GoldenClock = time.Date(2026, 11, 22, 10, 0, 0, 123000000, time.UTC)

// Golden is what a fixture becomes: the HTTP answer, and for a published
// event the event itself as every target channel received it.
type Golden struct {
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
	Channels []string        `json:"channels,omitempty"`
	Event    json.RawMessage `json:"event,omitempty"`
}

// RunGoldens posts every fixture of provider to a fresh node (fixed clock,
// shared-secret authentication) and compares the outcome with
// testdata/<provider>/<fixture>.golden.json; -update rewrites them.
// Fixtures named *_noroute_* or bad_* are expected to be refused and have
// goldens too.
func RunGoldens(t *testing.T, provider string) {
	for name, body := range Fixtures(t, provider) {
		t.Run(name, func(t *testing.T) {
			cfg := Config()
			cfg.Now = func() time.Time { return GoldenClock }
			n := Start(t, cfg)
			got := n.Outcome(t, provider, body)
			path := filepath.Join(Root(t), "testdata", provider, name+".golden.json")
			CompareGolden(t, path, got)
		})
	}
}

// Outcome posts a webhook and collects what it became.
func (n *Node) Outcome(t testing.TB, provider string, body []byte) Golden {
	t.Helper()
	status, res := n.Ingress(t, provider, body)
	g := Golden{Status: status}
	g.Response, _ = json.Marshal(res)
	pubs, _ := res["publications"].([]any)
	for _, p := range pubs {
		p := p.(map[string]any)
		ch := p["channel"].(string)
		g.Channels = append(g.Channels, ch)
		h, err := n.Server.Broker().History(context.Background(), ch, channels.HistoryOptions{Limit: 1})
		if err != nil || len(h.Publications) != 1 {
			t.Fatalf("reading back %s: %v", ch, err)
		}
		data := h.Publications[0].Data
		if g.Event != nil && !bytes.Equal(g.Event, data) {
			t.Fatalf("channels received different events:\n%s\n%s", g.Event, data)
		}
		g.Event = data
	}
	sort.Strings(g.Channels)
	return g
}

// CompareGolden checks got against the golden file at path (indented
// JSON), or rewrites it under -update.
func CompareGolden(t *testing.T, path string, got any) {
	t.Helper()
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test with -update to create it)", err)
	}
	if !bytes.Equal(bytes.TrimSpace(want), bytes.TrimSpace(b)) {
		t.Fatalf("%s differs (run go test -update to accept):\n--- got\n%s\n--- want\n%s", filepath.Base(path), b, want)
	}
}
