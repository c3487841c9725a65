package providers_test

import (
	"bytes"
	"net/http"
	"sort"
	"testing"
	"time"

	"herald/ingress"
	"herald/ingress/providers"
	"herald/internal/heraldtest"
)

// bodySigned are the providers whose signature covers the body; the
// partner API sends a static token instead.
var bodySigned = map[string]bool{"coinify": true, "0xpay": true, "gateway": true}

// For every provider that signs (or sends a token): a request as the
// provider sends it is accepted without the shared secret; one signed with
// another secret, one without the headers, and (where the signature covers
// the body) one with a tampered body are refused with 401.
func TestSignedRequests(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	for _, p := range providers.All() {
		if p.Sign == nil {
			if bodySigned[p.Slug] {
				t.Errorf("%s signs its webhooks but has no Sign", p.Slug)
			}
			continue
		}
		t.Run(p.Slug, func(t *testing.T) {
			path := "/ingress/" + p.Slug
			body := first(heraldtest.Fixtures(t, p.Slug))
			signed := func(secret string, body []byte) http.Header {
				h := http.Header{}
				p.Sign(h, http.MethodPost, path, body, ingress.Config{Secret: secret, Merchant: heraldtest.Merchant}, time.Now())
				return h
			}
			if code, res := n.Post(t, path, body, signed(heraldtest.ProviderSecret, body)); code != http.StatusOK {
				t.Fatalf("signed as the provider does: %d %v", code, res)
			}
			if code, _ := n.Post(t, path, body, signed("another-secret", body)); code != http.StatusUnauthorized {
				t.Errorf("wrong secret: %d", code)
			}
			if code, _ := n.Post(t, path, body, nil); code != http.StatusUnauthorized {
				t.Errorf("no signature: %d", code)
			}
			if bodySigned[p.Slug] {
				tampered := bytes.Replace(body, []byte(":"), []byte(": "), 1)
				tampered = append(tampered, ' ')
				if code, _ := n.Post(t, path, tampered, signed(heraldtest.ProviderSecret, body)); code != http.StatusUnauthorized {
					t.Errorf("tampered body: %d", code)
				}
			}
		})
	}
}

func first(fixtures map[string][]byte) []byte {
	names := make([]string, 0, len(fixtures))
	for name := range fixtures {
		names = append(names, name)
	}
	sort.Strings(names)
	return fixtures[names[0]]
}
