package server_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/channels"
	"herald/ingress"
	"herald/internal/heraldtest"
)

// routes reads the patterns server.go registers, so that a route added
// without documentation fails the test.
func routes(t *testing.T) set {
	src, err := os.ReadFile("server.go")
	if err != nil {
		t.Fatal(err)
	}
	out := set{}
	for _, m := range regexp.MustCompile(`s\.mux\.Handle(?:Func)?\("([A-Z]+) (/[^"]*)"`).FindAllStringSubmatch(string(src), -1) {
		// "{name...}" takes the rest of the path; the document names it once.
		out.add(m[1] + " " + strings.ReplaceAll(strings.TrimSuffix(m[2], "{$}"), "...}", "}"))
	}
	if len(out) == 0 {
		t.Fatal("found no routes in server.go")
	}
	return out
}

// A method a documented path does not list is answered 405, with an Allow
// header naming the ones it does, as docs/openapi.yaml says.
func TestOpenAPI_UnlistedMethodsAre405(t *testing.T) {
	doc := loadDoc(t, "openapi.yaml")
	n := heraldtest.Start(t, heraldtest.Config())
	example := strings.NewReplacer("{provider}", "kriptomat", "{asset}", "herald.js")
	paths, _ := doc["paths"].(map[string]any)
	for path, item := range paths {
		listed := set{}
		for method := range item.(map[string]any) {
			listed.add(strings.ToUpper(method))
		}
		allow := set{}
		for m := range listed {
			allow.add(m)
			if m == "GET" {
				allow.add("HEAD")
			}
		}
		for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			if listed[method] {
				continue
			}
			req, _ := http.NewRequest(method, n.URL+example.Replace(path), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := set{}
			for _, m := range strings.Split(resp.Header.Get("Allow"), ",") {
				if m = strings.TrimSpace(m); m != "" {
					got.add(m)
				}
			}
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d, want 405", method, path, resp.StatusCode)
				continue
			}
			compare(t, method+" "+path+" Allow", allow, got)
		}
	}
}

// TestOpenAPI_MatchesTheServer sends requests that make each endpoint give
// every answer it can, and holds docs/openapi.yaml to them both ways:
// each documented status happened, each status that happened is
// documented, and every route the server registers is documented.
func TestOpenAPI_MatchesTheServer(t *testing.T) {
	doc := loadDoc(t, "openapi.yaml")
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1") {
		t.Fatalf("openapi: %v", doc["openapi"])
	}
	documented := map[string]set{}
	paths, _ := doc["paths"].(map[string]any)
	for path, item := range paths {
		for method, op := range item.(map[string]any) {
			key := strings.ToUpper(method) + " " + path
			documented[key] = set{}
			for status := range get(op, "responses").(map[string]any) {
				documented[key].add(status)
			}
		}
	}
	ops := set{}
	for k := range documented {
		ops.add(k)
	}
	compare(t, "route", ops, routes(t))

	// n: a node whose broker and dead-letter store can fail.
	broker := newFlaky()
	cfg := heraldtest.Config()
	cfg.Broker, cfg.DeadLetters = broker, deadLetters{broker}
	n := heraldtest.Start(t, cfg)
	// locked: no API key, and Kriptomat only from 10.0.0.0/8.
	lcfg := heraldtest.Config()
	lcfg.APIKey = ""
	pc := lcfg.Providers["kriptomat"]
	pc.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	lcfg.Providers["kriptomat"] = pc
	locked := heraldtest.Start(t, lcfg)

	withdrawal, err := os.ReadFile("../../testdata/kriptomat/withdrawal.json")
	if err != nil {
		t.Fatal(err)
	}
	api := http.Header{"Authorization": {"Bearer " + heraldtest.APIKey}}
	secret := http.Header{"Authorization": {"Bearer " + heraldtest.ProviderSecret}}
	upgrade := func(version string) http.Header {
		return http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {version}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	}
	type request struct {
		op     string // the documented operation
		node   *heraldtest.Node
		method string
		path   string
		header http.Header
		body   []byte
		want   int
	}
	seen := map[string]set{}
	var etags = map[string]string{}
	do := func(r request) {
		t.Helper()
		req, _ := http.NewRequest(r.method, r.node.URL+r.path, bytes.NewReader(r.body))
		for k, v := range r.header {
			req.Header[k] = v
		}
		if tag, ok := etags[r.path]; ok && r.want == http.StatusNotModified {
			req.Header.Set("If-None-Match", tag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", r.method, r.path, err)
		}
		resp.Body.Close()
		etags[r.path] = resp.Header.Get("ETag")
		if resp.StatusCode != r.want {
			t.Errorf("%s %s: %d, want %d", r.method, r.path, resp.StatusCode, r.want)
		}
		if seen[r.op] == nil {
			seen[r.op] = set{}
		}
		seen[r.op].add(strconv.Itoa(resp.StatusCode))
	}
	webhook := "POST /ingress/{provider}"
	requests := []request{
		{"GET /ws", n, "GET", "/ws", nil, nil, 426},
		{"GET /ws", n, "GET", "/ws", upgrade("12"), nil, 400},
		{"GET /ws", n, "GET", "/ws", http.Header{"Authorization": {"Bearer nope"}}, nil, 401},
		{webhook, n, "POST", "/ingress/kriptomat", secret, withdrawal, 200},
		{webhook, n, "POST", "/ingress/kriptomat?key=" + heraldtest.ProviderSecret, nil, withdrawal, 200},
		{webhook, n, "POST", "/ingress/kriptomat", secret, []byte(`{"user_id":1,"id":2,"type":"TELEPORT"}`), 202},
		{webhook, n, "POST", "/ingress/kriptomat", secret, []byte(`{`), 400},
		{webhook, n, "POST", "/ingress/kriptomat", nil, withdrawal, 401},
		{webhook, locked, "POST", "/ingress/kriptomat", secret, withdrawal, 403},
		{webhook, n, "POST", "/ingress/nope", secret, withdrawal, 404},
		{webhook, n, "POST", "/ingress/kriptomat", secret, bytes.Repeat([]byte(" "), ingress.MaxBody+1), 413},
		{"POST /v1/publish", n, "POST", "/v1/publish", api, []byte(`{"channel":"user:1","data":{}}`), 200},
		{"POST /v1/publish", n, "POST", "/v1/publish", api, []byte(`{"channel":"room:1","data":{}}`), 400},
		{"POST /v1/publish", n, "POST", "/v1/publish", nil, []byte(`{"channel":"user:1","data":{}}`), 401},
		{"POST /v1/publish", locked, "POST", "/v1/publish", api, []byte(`{"channel":"user:1","data":{}}`), 404},
		{"POST /v1/publish", n, "POST", "/v1/publish", api, bytes.Repeat([]byte(" "), 1<<20+1), 413},
		{"GET /v1/history", n, "GET", "/v1/history?channel=user:1&limit=5", api, nil, 200},
		{"GET /v1/history", n, "GET", "/v1/history?channel=user:1&limit=5000", api, nil, 400},
		{"GET /v1/history", n, "GET", "/v1/history?channel=user:1", nil, nil, 401},
		{"GET /v1/history", locked, "GET", "/v1/history?channel=user:1", api, nil, 404},
		{"GET /v1/deadletters", n, "GET", "/v1/deadletters?limit=5", api, nil, 200},
		{"GET /v1/deadletters", n, "GET", "/v1/deadletters?limit=0", api, nil, 400},
		{"GET /v1/deadletters", n, "GET", "/v1/deadletters", nil, nil, 401},
		{"GET /v1/deadletters", locked, "GET", "/v1/deadletters", api, nil, 404},
		{"GET /healthz", n, "GET", "/healthz", nil, nil, 200},
		{"GET /readyz", n, "GET", "/readyz", nil, nil, 200},
		{"GET /metrics", n, "GET", "/metrics", nil, nil, 200},
		{"GET /", n, "GET", "/", nil, nil, 200},
		{"GET /", n, "GET", "/", nil, nil, 304},
		{"GET /{asset}", n, "GET", "/herald.js", nil, nil, 200},
		{"GET /{asset}", n, "GET", "/herald.js", nil, nil, 304},
		{"GET /{asset}", n, "GET", "/no-such-file.js", nil, nil, 404},
	}
	for _, r := range requests {
		do(r)
	}
	// The broker goes away.
	broker.fail(channels.ErrUnavailable)
	for _, r := range []request{
		{webhook, n, "POST", "/ingress/kriptomat", secret, bytes.Replace(withdrawal, []byte("58463"), []byte("58464"), 1), 503},
		{"POST /v1/publish", n, "POST", "/v1/publish", api, []byte(`{"channel":"user:1","data":{}}`), 503},
		{"GET /v1/history", n, "GET", "/v1/history?channel=user:1", api, nil, 503},
		{"GET /v1/deadletters", n, "GET", "/v1/deadletters", api, nil, 503},
		{"GET /readyz", n, "GET", "/readyz", nil, nil, 503},
	} {
		do(r)
	}
	// It fails in a way a retry would not mend.
	broker.fail(errors.New("ERR script exploded"))
	for _, r := range []request{
		{"POST /v1/publish", n, "POST", "/v1/publish", api, []byte(`{"channel":"user:1","data":{}}`), 500},
		{"GET /v1/history", n, "GET", "/v1/history?channel=user:1", api, nil, 500},
		{"GET /v1/deadletters", n, "GET", "/v1/deadletters", api, nil, 500},
	} {
		do(r)
	}
	broker.fail(nil)
	// A websocket upgrade, and one refused while the node drains.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, n.WS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	seen["GET /ws"].add(strconv.Itoa(resp.StatusCode))
	conn.CloseNow()
	go func() { _ = n.Server.Drain(ctx, 0) }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, resp, err := websocket.Dial(ctx, n.WS(), nil)
		if err != nil && resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
			seen["GET /ws"].add("503")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 503 while draining: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	for op, statuses := range documented {
		if seen[op] == nil {
			seen[op] = set{}
		}
		compare(t, op+" status", statuses, seen[op])
	}
}
