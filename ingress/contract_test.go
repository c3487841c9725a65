package ingress

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"herald/channels/memory"
	"herald/metrics"
)

// An adapter that breaks its contract (an event without id, type or
// status) is herald's fault, not the provider's: the answer is 500, so the
// provider retries once herald is mended, and the request is kept.
func TestBrokenAdapterIs500AndKept(t *testing.T) {
	broken := Provider{Slug: "broken", Parse: func(*Request) (*Event, error) {
		return &Event{Type: "x", Status: StatusInfo, User: "1"}, nil // no id
	}}
	dead := NewMemoryDeadLetters(10)
	m := metrics.New(metrics.Options{Providers: []string{"broken"}})
	in, err := New(Options{
		Broker:      memory.New(memory.Options{}),
		Providers:   map[string]Enabled{"broken": {Provider: broken, Config: Config{Secret: "s"}}},
		DeadLetters: dead,
		Metrics:     m.Ingress,
	})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/ingress/broken", strings.NewReader(`{"a":1}`))
	req.Header.Set("Authorization", "Bearer s")
	rec := httptest.NewRecorder()
	in.ServeHTTP(rec, req)
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, body %s", rec.Code, rec.Body)
	}
	kept, _, err := dead.List(t.Context(), 10, 1<<20)
	if err != nil || len(kept) != 1 || kept[0].Status != http.StatusInternalServerError {
		t.Fatalf("dead letters %+v, %v", kept, err)
	}
	// Counted as herald's fault, not as the provider's malformed webhook.
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, f := range families {
		if f.GetName() != "herald_dead_letters_total" {
			continue
		}
		for _, c := range f.GetMetric() {
			for _, l := range c.GetLabel() {
				if l.GetName() == "reason" {
					reasons = append(reasons, fmt.Sprintf("%s=%v", l.GetValue(), c.GetCounter().GetValue()))
				}
			}
		}
	}
	if len(reasons) != 1 || reasons[0] != "internal=1" {
		t.Errorf("herald_dead_letters_total by reason: %v, want [internal=1]", reasons)
	}
}
