package ingress

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"herald/channels/memory"
)

// An adapter that breaks its contract (an event without id, type or
// status) is herald's fault, not the provider's: the answer is 500, so the
// provider retries once herald is mended, and the request is kept.
func TestBrokenAdapterIs500AndKept(t *testing.T) {
	broken := Provider{Slug: "broken", Parse: func(*Request) (*Event, error) {
		return &Event{Type: "x", Status: StatusInfo, User: "1"}, nil // no id
	}}
	dead := NewMemoryDeadLetters(10)
	in, err := New(Options{
		Broker:      memory.New(memory.Options{}),
		Providers:   map[string]Enabled{"broken": {Provider: broken, Config: Config{Secret: "s"}}},
		DeadLetters: dead,
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
}
