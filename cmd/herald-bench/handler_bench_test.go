package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"herald/internal/heraldtest"
	"herald/internal/server"
)

// BenchmarkIngressHandler is herald's own work per webhook: the webhooks
// herald-bench posts (every provider's samples in turn, signed as the
// provider signs) served by a node's handler in process, on the embedded
// broker — authenticate, verify, parse, normalize, encode, deduplicate,
// rank, append to every channel, instrument. Nothing is fanned out (no
// client is connected: BenchmarkDeliver in hub measures that) and nothing
// crosses a socket. herald-bench's CPU per webhook, less this, is what the
// network, the Go runtime and the kernel cost around it.
func BenchmarkIngressHandler(b *testing.B) {
	samples, _, err := loadSamples("../../testdata", nil)
	if err != nil {
		b.Fatal(err)
	}
	users := []string{"7001", "7002", "7003", "7004"}
	// Event ids must differ, or the rest would be duplicates: a pool of
	// distinct webhooks, signed once, and a fresh node (with nothing to
	// deduplicate against) each time the pool is used up.
	const pool = 4096
	hooks, _, err := buildWebhooks(samples, users, pool, 0)
	if err != nil {
		b.Fatal(err)
	}
	type request struct {
		path   string
		header http.Header
		body   []byte
	}
	reqs := make([]request, len(hooks))
	for i, w := range hooks {
		path, header := w.signed(heraldtest.ProviderSecret, time.Now())
		reqs[i] = request{path, header, w.body}
	}
	node := func() *server.Server {
		srv, err := server.New(heraldtest.Config())
		if err != nil {
			b.Fatal(err)
		}
		return srv
	}
	srv := node()
	b.Cleanup(func() { _ = srv.Close() })
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i > 0 && i%pool == 0 {
			b.StopTimer()
			_ = srv.Close()
			srv = node()
			b.StartTimer()
		}
		r := reqs[i%pool]
		req := httptest.NewRequest(http.MethodPost, r.path, bytes.NewReader(r.body))
		req.Header = r.header
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", r.path, rec.Code, rec.Body)
		}
	}
}
