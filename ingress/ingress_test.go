package ingress_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/channels"
	"herald/channels/memory"
	"herald/ingress"
	"herald/internal/heraldtest"
	"herald/internal/server"
	"herald/internal/stacks"
)

const withdrawal = `{"user_id":84624,"id":58463,"type":"FIAT_WITHDRAWAL","amount":100.00,"date":"2018-11-27T13:46:22.658","state":"SUCCESSFUL","deposited":100.00,"bank_fee":1.00,"received":99.00}`

func start(t *testing.T, mod func(*server.Config)) *heraldtest.Node {
	t.Helper()
	cfg := heraldtest.Config()
	if mod != nil {
		mod(&cfg)
	}
	return heraldtest.Start(t, cfg)
}

func bearer(secret string) http.Header { return http.Header{"Authorization": {"Bearer " + secret}} }

func TestOutcomes(t *testing.T) {
	n := start(t, nil)
	cases := []struct {
		name   string
		path   string
		body   string
		header http.Header
		status int
		want   string // a field of the answer, "key=value"
	}{
		{"published", "/ingress/kriptomat", withdrawal, bearer(heraldtest.ProviderSecret), 200, "status=published"},
		{"retry is a duplicate", "/ingress/kriptomat", withdrawal, bearer(heraldtest.ProviderSecret), 200, "status=duplicate"},
		{"retry with other spacing", "/ingress/kriptomat", strings.ReplaceAll(withdrawal, ",", ", "), bearer(heraldtest.ProviderSecret), 200, "status=duplicate"},
		{"key in the query", "/ingress/kriptomat?key=" + heraldtest.ProviderSecret, strings.Replace(withdrawal, "58463", "1", 1), nil, 200, "status=published"},
		{"lower-case bearer", "/ingress/kriptomat", strings.Replace(withdrawal, "58463", "2", 1), http.Header{"Authorization": {"bearer " + heraldtest.ProviderSecret}}, 200, "status=published"},
		{"unknown kind", "/ingress/kriptomat", `{"id":1,"type":"STAKING_REWARD","state":"SUCCESS"}`, bearer(heraldtest.ProviderSecret), 202, "status=dead_letter"},
		{"malformed JSON", "/ingress/kriptomat", `{"id": 1,`, bearer(heraldtest.ProviderSecret), 400, "error"},
		{"bad amount", "/ingress/kriptomat", strings.Replace(withdrawal, "100.00,", `"a lot",`, 1), bearer(heraldtest.ProviderSecret), 400, "error"},
		{"wrong secret", "/ingress/kriptomat", withdrawal, bearer("guess"), 401, "error"},
		{"no secret", "/ingress/kriptomat", withdrawal, nil, 401, "error"},
		{"wrong key", "/ingress/kriptomat?key=guess", withdrawal, nil, 401, "error"},
		{"unknown provider", "/ingress/nobody", withdrawal, bearer(heraldtest.ProviderSecret), 404, "error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, res := n.Post(t, tc.path, []byte(tc.body), tc.header)
			if status != tc.status {
				t.Fatalf("status %d (%v), want %d", status, res, tc.status)
			}
			k, v, _ := strings.Cut(tc.want, "=")
			if got, ok := res[k]; !ok || (v != "" && got != v) {
				t.Fatalf("answer %v, want %s", res, tc.want)
			}
		})
	}
	// Both refusals that carry a body were kept for operators, newest first.
	status, res := n.Get(t, "/v1/deadletters?limit=10")
	if status != 200 {
		t.Fatalf("deadletters: %d", status)
	}
	dl := res["deadletters"].([]any)
	if len(dl) != 3 {
		t.Fatalf("%d dead letters, want 3: %v", len(dl), dl)
	}
	newest := dl[0].(map[string]any)
	if newest["status"] != float64(400) || !strings.Contains(newest["body"].(string), "a lot") || newest["provider"] != "kriptomat" {
		t.Fatalf("newest dead letter %v", newest)
	}
	if oldest := dl[2].(map[string]any); oldest["status"] != float64(202) || !strings.Contains(oldest["reason"].(string), "STAKING_REWARD") {
		t.Fatalf("oldest dead letter %v", oldest)
	}
}

// P100 posts each webhook to its own path below the URL it is given: a
// path below /ingress/<provider> is that provider's.
func TestPathsBelowTheProvider(t *testing.T) {
	n := start(t, nil)
	b, err := os.ReadFile(filepath.Join("..", "testdata", "partner", "user_status.json"))
	if err != nil {
		t.Fatal(err)
	}
	if status, res := n.Post(t, "/ingress/partner/webhook/user/status", b, bearer(heraldtest.ProviderSecret)); status != 200 || res["status"] != "published" {
		t.Fatalf("below /ingress/partner: %d %v", status, res)
	}
	if status, res := n.Post(t, "/ingress/nobody/webhook", b, bearer(heraldtest.ProviderSecret)); status != http.StatusNotFound {
		t.Fatalf("below an unknown provider: %d %v", status, res)
	}
}

// A provider that does not sign (Kriptomat, P100) can only be
// authenticated by its secret in the request's head: without it the
// request is refused before its body is read, however much is announced.
func TestUnsignedProviderRefusedBeforeTheBody(t *testing.T) {
	n := start(t, nil)
	for _, provider := range []string{"kriptomat", "partner"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(n.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A megabyte announced, ten bytes sent, and then nothing.
		if _, err := conn.Write([]byte("POST /ingress/" + provider + " HTTP/1.1\r\nHost: x\r\nAuthorization: wrong\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"id\": 1,")); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: no answer while the body was still coming: %v", provider, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: status %d, want 401", provider, resp.StatusCode)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	n := start(t, nil)
	body := `{"error":"Balance low, BTC balance below 1.00"}`
	atLimit := []byte(body + strings.Repeat(" ", ingress.MaxBody-len(body)))
	if status, res := n.Post(t, "/ingress/kriptomat", atLimit, bearer(heraldtest.ProviderSecret)); status != 200 {
		t.Fatalf("body of exactly 1 MiB: %d %v", status, res)
	}
	over := append(bytes.Clone(atLimit), ' ')
	if status, _ := n.Post(t, "/ingress/kriptomat", over, bearer(heraldtest.ProviderSecret)); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over 1 MiB: %d", status)
	}
}

// A listing of dead letters is bounded by its bytes: 270 dead letters
// of 64 KiB are 17 MiB, over the 16 MiB a reply holds. It keeps the
// newest and says it was cut.
func TestDeadLettersReplyBoundedByBytes(t *testing.T) {
	n := start(t, nil)
	pad := strings.Repeat("x", ingress.MaxDeadLetterBody)
	for i := range 270 {
		body := fmt.Sprintf(`{"id":%d,"type":"STAKING_REWARD","state":"SUCCESS","note":"%s"}`, i, pad)
		if status, res := n.Post(t, "/ingress/kriptomat", []byte(body), bearer(heraldtest.ProviderSecret)); status != 202 {
			t.Fatalf("dead letter %d: %d %v", i, status, res)
		}
	}
	for _, tc := range []struct {
		limit     int
		truncated bool
	}{{1000, true}, {200, false}} {
		status, res := n.Get(t, fmt.Sprintf("/v1/deadletters?limit=%d", tc.limit))
		if status != 200 {
			t.Fatalf("deadletters: %d", status)
		}
		dl := res["deadletters"].([]any)
		if truncated, _ := res["truncated"].(bool); truncated != tc.truncated {
			t.Fatalf("limit %d: truncated %v with %d dead letters, want %v", tc.limit, truncated, len(dl), tc.truncated)
		}
		if want := min(tc.limit, 16<<20/ingress.MaxDeadLetterBody); len(dl) > want || len(dl) < want-2 {
			t.Fatalf("limit %d: %d dead letters, want about %d", tc.limit, len(dl), want)
		}
		if newest := dl[0].(map[string]any)["body"].(string); !strings.HasPrefix(newest, `{"id":269,`) {
			t.Fatalf("newest dead letter %.40s", newest)
		}
	}
}

// A dead letter's body is bounded as stored, encoded as a JSON string:
// a body of control characters, six bytes each there, keeps a sixth.
func TestDeadLetterBodyBoundedAsStored(t *testing.T) {
	n := start(t, nil)
	body := bytes.Repeat([]byte{1}, ingress.MaxDeadLetterBody)
	if status, res := n.Post(t, "/ingress/kriptomat", body, bearer(heraldtest.ProviderSecret)); status != http.StatusBadRequest {
		t.Fatalf("a body of control characters: %d %v", status, res)
	}
	_, res := n.Get(t, "/v1/deadletters?limit=1")
	dl := res["deadletters"].([]any)[0].(map[string]any)
	kept := dl["body"].(string)
	stored, _ := json.Marshal(kept)
	if dl["truncated"] != true || len(stored)-2 > ingress.MaxDeadLetterBody || len(kept) < ingress.MaxDeadLetterBody/6-1 {
		t.Fatalf("kept %d bytes, %d stored, truncated %v", len(kept), len(stored)-2, dl["truncated"])
	}
}

func TestAllowList(t *testing.T) {
	for _, tc := range []struct {
		allow  string
		status int
	}{{"10.0.0.0/8", 403}, {"127.0.0.1/32", 200}, {"::1/128,127.0.0.0/8", 200}} {
		n := start(t, func(c *server.Config) {
			pc := c.Providers["kriptomat"]
			for _, s := range strings.Split(tc.allow, ",") {
				pc.Allow = append(pc.Allow, netip.MustParsePrefix(s))
			}
			c.Providers["kriptomat"] = pc
		})
		if status, res := n.Post(t, "/ingress/kriptomat", []byte(withdrawal), bearer(heraldtest.ProviderSecret)); status != tc.status {
			t.Fatalf("allow %s: %d %v, want %d", tc.allow, status, res, tc.status)
		}
	}
}

func TestDisabledProviderIs404(t *testing.T) {
	n := start(t, func(c *server.Config) {
		pc := c.Providers["kriptomat"]
		pc.Secret = ""
		c.Providers["kriptomat"] = pc
	})
	if status, _ := n.Post(t, "/ingress/kriptomat", []byte(withdrawal), bearer("")); status != http.StatusNotFound {
		t.Fatalf("disabled provider: %d", status)
	}
}

func TestNoRouteIsADeadLetter(t *testing.T) {
	n := start(t, func(c *server.Config) {
		pc := c.Providers["kriptomat"]
		pc.Merchant = ""
		c.Providers["kriptomat"] = pc
	})
	buy := `{"id":1,"type":"BUY","amount":1,"pair":"btceur","state":"SUCCESS"}`
	status, res := n.Post(t, "/ingress/kriptomat", []byte(buy), bearer(heraldtest.ProviderSecret))
	if status != http.StatusAccepted || !strings.Contains(res["reason"].(string), "HERALD_INGRESS_KRIPTOMAT_MERCHANT") {
		t.Fatalf("%d %v", status, res)
	}
	// Counted apart from events herald does not know: the fix is the
	// operator's, not a new adapter.
	resp, err := http.Get(n.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	if !regexp.MustCompile(`herald_dead_letters_total\{[^}]*reason="no_route"[^}]*\} 1\n`).Match(metrics) ||
		strings.Contains(string(metrics), `reason="unknown_event"`) {
		t.Fatalf("dead letter counts:\n%s", grepLines(string(metrics), "herald_dead_letters_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestUserOutsideTheGrammar: a user id no channel can carry still leaves
// the merchant its copy; an event meant for that user alone is refused.
func TestUserOutsideTheGrammar(t *testing.T) {
	n := start(t, nil)
	const id = "1867465a-aaed-45e3-b463-282e4f904a83"
	status, res := n.Post(t, "/ingress/partner", fixtureWithUser(t, "partner/user_status.json", id, "a+b@x.com"), bearer(heraldtest.ProviderSecret))
	if status != 200 || res["status"] != "published" {
		t.Fatalf("%d %v", status, res)
	}
	pubs := res["publications"].([]any)
	if len(pubs) != 1 || pubs[0].(map[string]any)["channel"] != "merchant:"+heraldtest.Merchant {
		t.Fatalf("publications %v, want the merchant's alone", pubs)
	}
	status, hist := n.Get(t, "/v1/history?channel=merchant:"+heraldtest.Merchant)
	if status != 200 {
		t.Fatalf("history: %d %v", status, hist)
	}
	ev := hist["publications"].([]any)[0].(map[string]any)["data"].(map[string]any)
	if ev["user"] != "a+b@x.com" {
		t.Fatalf("the merchant's copy names user %v", ev["user"])
	}

	status, res = n.Post(t, "/ingress/partner", fixtureWithUser(t, "partner/card_3ds_code.json", id, "a+b@x.com"), bearer(heraldtest.ProviderSecret))
	if status != http.StatusBadRequest || !strings.Contains(res["error"].(string), "user") {
		t.Fatalf("a one-time code for an unroutable user: %d %v", status, res)
	}
}

// A payload naming a merchant other than the provider's configured one
// splits the account's events over two channels: said once per provider.
func TestOtherMerchantIsWarnedOfOnce(t *testing.T) {
	var logs heraldtest.Buffer
	n := start(t, func(c *server.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	for _, f := range []string{"exchange_done", "exchange_failed", "fiat_withdraw_done"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "0xpay", f+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if status, res := n.Ingress(t, "0xpay", b); status != 200 {
			t.Fatalf("%s: %d %v", f, status, res)
		}
	}
	const warning = "names a merchant other than its HERALD_INGRESS_<SLUG>_MERCHANT"
	if out := logs.String(); strings.Count(out, warning) != 1 || !strings.Contains(out, `"configured":"acme"`) {
		t.Fatalf("want one warning:\n%s", out)
	}
}

// fixtureWithUser is a testdata payload with one user id put for another.
func fixtureWithUser(t *testing.T, name, from, to string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(from)) {
		t.Fatalf("%s does not name %s", name, from)
	}
	return bytes.ReplaceAll(b, []byte(from), []byte(to))
}

func TestUserPrefix(t *testing.T) {
	n := start(t, func(c *server.Config) {
		pc := c.Providers["kriptomat"]
		pc.UserPrefix = "km-"
		c.Providers["kriptomat"] = pc
	})
	status, res := n.Post(t, "/ingress/kriptomat", []byte(withdrawal), bearer(heraldtest.ProviderSecret))
	if status != 200 || res["publications"].([]any)[0].(map[string]any)["channel"] != "user:km-84624" {
		t.Fatalf("%d %v", status, res)
	}
}

func TestBrokerDownIs503AndNothingAcknowledged(t *testing.T) {
	n := start(t, nil)
	_ = n.Server.Broker().Close()
	if status, res := n.Post(t, "/ingress/kriptomat", []byte(withdrawal), bearer(heraldtest.ProviderSecret)); status != http.StatusServiceUnavailable {
		t.Fatalf("%d %v", status, res)
	}
	if status, _ := n.Get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the broker down: %d", status)
	}
}

// pendingGate is an embedded broker whose first append of a pending
// status waits until released.
type pendingGate struct {
	*memory.Broker
	once     sync.Once
	entered  chan struct{}
	released chan struct{}
}

func (g *pendingGate) Publish(ctx context.Context, ch string, data json.RawMessage, o channels.PublishOptions) (channels.PublishResult, error) {
	if bytes.Contains(data, []byte(`"status":"pending"`)) {
		g.once.Do(func() { close(g.entered); <-g.released })
	}
	return g.Broker.Publish(ctx, ch, data, o)
}

// Two statuses of one transaction at once: one ranked first may not be
// appended after the other unmarked, which would take the transaction
// back from succeeded to pending for every subscriber.
func TestStatusesOfOneTransactionDoNotPassEachOther(t *testing.T) {
	g := &pendingGate{Broker: memory.New(memory.Options{}), entered: make(chan struct{}), released: make(chan struct{})}
	n := start(t, func(c *server.Config) { c.Broker = g })
	pending := strings.Replace(withdrawal, "SUCCESSFUL", "PENDING", 1)
	answered := make(chan int, 2)
	var posts sync.WaitGroup
	post := func(body string) {
		posts.Go(func() {
			status, _ := n.Post(t, "/ingress/kriptomat", []byte(body), bearer(heraldtest.ProviderSecret))
			answered <- status
		})
	}
	var release sync.Once
	// A test that fails early still lets both requests end before the node.
	t.Cleanup(func() {
		release.Do(func() { close(g.released) })
		posts.Wait()
	})
	post(pending)
	<-g.entered // the pending status is ranked, its append under way
	post(withdrawal)
	// The success must wait for the pending status's append, on the lock
	// of their transaction. Were it not held there, it would be answered
	// while the pending status is still stopped in Publish.
	for deadline := time.Now().Add(10 * time.Second); !stacks.Parked("sync.Mutex.Lock", "herald/ingress.separately.Append("); time.Sleep(10 * time.Millisecond) {
		select {
		case status := <-answered:
			t.Fatalf("the success was answered (%d) while the pending status's append was under way", status)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the success neither waits for the pending status nor is answered")
		}
	}
	release.Do(func() { close(g.released) })
	for range 2 {
		if status := <-answered; status != 200 {
			t.Fatalf("answer %d", status)
		}
	}
	for _, ch := range []string{"user:84624", "merchant:" + heraldtest.Merchant} {
		events := n.Events(t, ch) // oldest first
		if len(events) != 2 {
			t.Fatalf("%s: %d publications, want the two statuses", ch, len(events))
		}
		succeeded := false
		for _, ev := range events {
			switch {
			case ev.Status == "succeeded":
				succeeded = true
			case succeeded && !ev.Stale:
				t.Errorf("%s: %s after succeeded, unmarked", ch, ev.Status)
			}
		}
	}
}
