package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/hub"
)

// TestLogs_NeverShowSecretsTokensOrPayloads captures every log line of a
// scripted session at debug level — tokens in the upgrade header and in a
// connect frame, a webhook with its secret as Bearer and as ?key=, a wrong
// secret, an API publish, bad tokens — and looks for each secret, token
// and payload value in them. It also checks the ingress writes one JSON
// line per request with provider, outcome, event and latency.
func TestLogs_NeverShowSecretsTokensOrPayloads(t *testing.T) {
	addr := freeAddr(t)
	node := startNode(t, addr, "HERALD_LOG_LEVEL=debug", "HERALD_DRAIN_WINDOW=100ms")
	base := "http://" + addr

	headerToken, frameToken := clientToken(t, "84624"), clientToken(t, "7")
	c, _ := dialNode(t, addr, headerToken)
	c.send(map[string]any{"id": 1, "type": "subscribe", "channel": "merchant:acme"})
	c.read()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"id": 1, "type": "connect", "token": frameToken})
	_ = conn.Write(ctx, websocket.MessageText, b)
	_, _, _ = conn.Read(ctx)
	conn.CloseNow()

	// Payload values that appear nowhere else: amounts and a bank fee.
	body, err := os.ReadFile("../../testdata/kriptomat/withdrawal.json")
	if err != nil {
		t.Fatal(err)
	}
	body = bytes.Replace(body, []byte(`"received": 99.00`), []byte(`"received": 97.531`), 1)
	body = bytes.Replace(body, []byte(`"bank_fee": 1.00`), []byte(`"bank_fee": 2.468`), 1)
	post := func(url, auth string, body []byte) int {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const wrongSecret, badToken = "wrong-provider-secret-77aa", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad-signature-3c3c"
	const payload = "payload-value-41f9e2"
	for _, step := range []struct {
		status int
		got    int
	}{
		{200, post(base+"/ingress/kriptomat", testProviderSecret, body)},
		{200, post(base+"/ingress/kriptomat?key="+testProviderSecret, "", body)},
		{401, post(base+"/ingress/kriptomat", wrongSecret, body)},
		{202, post(base+"/ingress/kriptomat", testProviderSecret, []byte(`{"user_id":1,"id":2,"type":"`+payload+`"}`))},
		{400, post(base+"/ingress/kriptomat", testProviderSecret, []byte(`{"user_id":"`+payload))},
		{200, post(base+"/v1/publish", testAPIKey, []byte(`{"channel":"user:84624","data":{"note":"`+payload+`"}}`))},
		{401, post(base+"/v1/publish", wrongSecret, []byte(`{"channel":"user:84624","data":{}}`))},
	} {
		if step.got != step.status {
			t.Fatalf("status %d, want %d", step.got, step.status)
		}
	}
	if _, resp, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + badToken}}}); err == nil || resp.StatusCode != 401 {
		t.Fatalf("bad header token: %v", err)
	}
	conn, _, err = websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(map[string]any{"id": 1, "type": "connect", "token": badToken})
	_ = conn.Write(ctx, websocket.MessageText, b)
	if _, _, err := conn.Read(ctx); websocket.CloseStatus(err) != 4001 {
		t.Fatalf("bad frame token: %v", err)
	}

	if err := node.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := node.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	logs := node.stderr.String()
	for name, secret := range map[string]string{
		"JWT secret": testJWTSecret, "API key": testAPIKey, "provider secret": testProviderSecret, "wrong secret": wrongSecret,
		"header token": headerToken, "frame token": frameToken, "bad token": badToken,
		"token signature": headerToken[strings.LastIndexByte(headerToken, '.')+1:],
		"payload value":   payload, "amount": "97.531", "fee": "2.468",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs show the %s %q", name, secret)
		}
	}
	for _, key := range []string{`"raw"`, `"amounts"`, `"data"`, `"token"`, `"body"`, `"authorization"`} {
		if strings.Contains(strings.ToLower(logs), key) {
			t.Errorf("the logs have a %s field", key)
		}
	}

	ingressLines := 0
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["msg"] != "ingress" {
			continue
		}
		ingressLines++
		for _, k := range []string{"provider", "outcome", "status", "event", "latency_ms"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("ingress line without %s: %s", k, line)
			}
		}
		if rec["outcome"] == "published" && !strings.HasPrefix(rec["event"].(string), "kriptomat:withdrawal.fiat:") {
			t.Errorf("published without its event id: %s", line)
		}
	}
	if ingressLines != 5 {
		t.Errorf("%d ingress lines for 5 webhooks:\n%s", ingressLines, logs)
	}
}

// A provider enabled without a merchant is said at start, naming the
// setting; one with its merchant is not.
func TestLogs_WarnOfAProviderWithoutAMerchant(t *testing.T) {
	const warning = `"msg":"a provider is enabled without a merchant`
	out := startupLogs(t, "HERALD_INGRESS_GATEWAY_SECRET=gw")
	if strings.Count(out, warning) != 1 || !strings.Contains(out, `"provider":"gateway","set":"HERALD_INGRESS_GATEWAY_MERCHANT"`) {
		t.Errorf("want one warning, for the gateway, not for Kriptomat (which has its merchant):\n%s", out)
	}
}

// A JWT secret shorter than RFC 7518's 32 bytes is allowed (a running
// setup must not break) but said at start; a long one says nothing.
func TestLogs_WarnOfAShortJWTSecret(t *testing.T) {
	warnedOnlyWith(t, "HERALD_JWT_SECRET is shorter than 32 bytes", "HERALD_JWT_SECRET=short-secret")
}

// A dedup window shorter than the slowest provider's retries is allowed
// (a test rig may want it) but said at start, since retries after it are
// published again; the default says nothing.
func TestLogs_WarnOfADedupWindowShorterThanRetries(t *testing.T) {
	warnedOnlyWith(t, "HERALD_DEDUP_WINDOW is shorter than the longest provider retries", "HERALD_DEDUP_WINDOW=1h")
}

// A drain window that leaves the last client less than its close
// handshake's 5 s before the shutdown deadline is allowed but said.
func TestLogs_WarnOfADrainWindowCloseToTheShutdownTimeout(t *testing.T) {
	warnedOnlyWith(t, "HERALD_SHUTDOWN_TIMEOUT leaves less than 10s after HERALD_DRAIN_WINDOW", "HERALD_DRAIN_WINDOW=27s")
}

// More connections than the file limit allows beside ingress, the API and
// the broker is allowed but said.
func TestLogs_WarnOfMaxConnectionsBeyondTheFileLimit(t *testing.T) {
	warnedOnlyWith(t, "HERALD_MAX_CONNECTIONS leaves fewer than 1024", "HERALD_MAX_CONNECTIONS="+strconv.Itoa(hub.DefaultMaxConns()+1))
}

// A load balancer left out of HERALD_TRUSTED_PROXIES makes all its clients
// one address: the first request that shows it (X-Forwarded-For from an
// untrusted peer) is warned of, once; one trusted is not.
func TestLogs_WarnOfAnUntrustedForwarder(t *testing.T) {
	const warning = "X-Forwarded-For from an address not in HERALD_TRUSTED_PROXIES"
	for _, tc := range []struct {
		trusted []string
		want    int
	}{{nil, 1}, {[]string{"HERALD_TRUSTED_PROXIES=127.0.0.0/8"}, 0}} {
		addr := freeAddr(t)
		p := startNode(t, addr, tc.trusted...)
		for range 3 { // a webhook looks for its client's address
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/ingress/kriptomat", nil)
			req.Header.Set("X-Forwarded-For", "198.51.100.9")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.exitCode(t, 30*time.Second)
		if out := p.stdout.String() + p.stderr.String(); strings.Count(out, warning) != tc.want {
			t.Errorf("with %v: want %d warnings:\n%s", tc.trusted, tc.want, out)
		}
	}
}

// warnedOnlyWith checks that a node started with setting logs warning
// once, and one started with the tests' defaults does not.
func warnedOnlyWith(t *testing.T, warning, setting string) {
	t.Helper()
	if out := startupLogs(t, setting); strings.Count(out, warning) != 1 {
		t.Errorf("want one warning %q with %s:\n%s", warning, setting, out)
	}
	if out := startupLogs(t); strings.Contains(out, warning) {
		t.Errorf("warned of without %s:\n%s", setting, out)
	}
}

// startupLogs starts a node with the extra settings, stops it with SIGTERM
// and returns what it wrote. serve writes its startup warnings before it
// waits for the signal, so they all precede "shutting down": a warning
// not there was never written.
func startupLogs(t *testing.T, extra ...string) string {
	t.Helper()
	p := startNode(t, freeAddr(t), extra...)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exitCode(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s\n%s", code, p.stdout, p.stderr)
	}
	out := p.stdout.String() + p.stderr.String()
	if !strings.Contains(out, `"msg":"shutting down"`) {
		t.Fatalf("no shutting down line:\n%s", out)
	}
	return out
}
