package providers_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"herald/ingress"
	"herald/ingress/providers"
	"herald/internal/heraldtest"
)

// BenchmarkParse runs every registered provider's adapter on each of its
// testdata payloads and encodes the event as the ingress publishes it:
// the per-webhook work of parsing and normalizing, without HTTP, the
// signature, dedup or the append (herald-bench measures those end to end).
func BenchmarkParse(b *testing.B) {
	for _, p := range providers.All() {
		fixtures := heraldtest.Fixtures(b, p.Slug)
		for _, name := range slices.Sorted(mapKeys(fixtures)) {
			body := fixtures[name]
			b.Run(p.Slug+"/"+name, func(b *testing.B) {
				req := request(p, body)
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if ev, err := p.Parse(req); err == nil {
						if _, err := json.Marshal(ev); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkVerify checks the provider's own signature on one of its
// payloads, for every provider that signs.
func BenchmarkVerify(b *testing.B) {
	for _, p := range providers.All() {
		if p.Sign == nil || p.Verify == nil {
			continue
		}
		fixtures := heraldtest.Fixtures(b, p.Slug)
		body := fixtures[slices.Sorted(mapKeys(fixtures))[0]]
		b.Run(p.Slug, func(b *testing.B) {
			req := request(p, body)
			p.Sign(req.Header, req.Method, req.Path, body, req.Config, req.Now)
			if err := p.Verify(req); err != nil {
				b.Fatalf("own signature refused: %v", err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				_ = p.Verify(req)
			}
		})
	}
}

func request(p ingress.Provider, body []byte) *ingress.Request {
	return &ingress.Request{
		Method: http.MethodPost, Path: "/ingress/" + p.Slug, Host: "127.0.0.1:8080", Header: http.Header{},
		Body: body, Config: ingress.Config{Secret: heraldtest.ProviderSecret, Merchant: heraldtest.Merchant}, Now: time.Now(),
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
