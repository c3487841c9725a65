package web_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"herald/web"
)

func get(t *testing.T, h http.Handler, path string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandler_ServesDashboardWithAPolicy(t *testing.T) {
	rec := get(t, web.Handler(), "/", nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `src="dashboard.js"`) {
		t.Fatalf("GET / = %d\n%s", rec.Code, rec.Body)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") {
		t.Fatalf("Content-Security-Policy = %q", csp)
	}
}

func TestHandler_ClientIsAnImportableModule(t *testing.T) {
	rec := get(t, web.Handler(), "/herald.js", nil)
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/javascript") {
		t.Fatalf("GET /herald.js = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("herald.js cannot be imported from another origin")
	}
	if d := get(t, web.Handler(), "/herald.d.ts", nil); d.Code != http.StatusOK || !strings.Contains(d.Body.String(), "export function connect") {
		t.Fatalf("GET /herald.d.ts = %d", d.Code)
	}
}

func TestHandler_RevalidatesWithETag(t *testing.T) {
	h := web.Handler()
	first := get(t, h, "/herald.js", nil)
	tag := first.Header().Get("ETag")
	if tag == "" {
		t.Fatal("no ETag")
	}
	if again := get(t, h, "/herald.js", http.Header{"If-None-Match": {tag}}); again.Code != http.StatusNotModified {
		t.Fatalf("conditional GET = %d, want 304", again.Code)
	}
}
