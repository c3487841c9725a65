package server_test

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"herald/channels"
	"herald/internal/heraldtest"
)

// TestMetrics_ScriptedSession runs a session that touches every metric and
// checks each moved by exactly what the session did.
func TestMetrics_ScriptedSession(t *testing.T) {
	cfg := heraldtest.Config()
	cfg.Hub.SendQueueBytes = 32 << 10
	n := heraldtest.Start(t, cfg)
	withdrawal, err := os.ReadFile("../../testdata/kriptomat/withdrawal.json")
	if err != nil {
		t.Fatal(err)
	}

	c1 := heraldtest.Connect(t, n, heraldtest.Token(t, "42", "acme"))
	c1.Subscribe("user:42")
	c1.Subscribe("merchant:acme")

	// Ingress: published (user:84624 and merchant:acme), then its retry,
	// an unknown event, a malformed one, a wrong secret, an unknown
	// provider.
	if status, res := n.Ingress(t, "kriptomat", withdrawal); status != 200 || res["status"] != "published" {
		t.Fatalf("ingress: %d %v", status, res)
	}
	if f := c1.Expect("pub"); f.String("channel") != "merchant:acme" {
		t.Fatalf("pub %v", f)
	}
	if status, res := n.Ingress(t, "kriptomat", withdrawal); status != 200 || res["status"] != "duplicate" {
		t.Fatalf("retry: %d %v", status, res)
	}
	if status, res := n.Ingress(t, "kriptomat", []byte(`{"user_id":84624,"id":9,"type":"TELEPORT"}`)); status != 202 {
		t.Fatalf("unknown event: %d %v", status, res)
	}
	if status, _ := n.Ingress(t, "kriptomat", []byte(`not json`)); status != 400 {
		t.Fatalf("malformed: %d", status)
	}
	if status, _ := n.Post(t, "/ingress/kriptomat", withdrawal, http.Header{"Authorization": {"Bearer wrong"}}); status != 401 {
		t.Fatalf("wrong secret: %d", status)
	}
	if status, _ := n.Ingress(t, "no-such-provider-"+strings.Repeat("x", 20), withdrawal); status != 404 {
		t.Fatalf("unknown provider: %d", status)
	}

	// Server API: three publications, each delivered live to c1.
	for i := 0; i < 3; i++ {
		n.Publish(t, "user:42", map[string]int{"i": i})
		c1.Expect("pub")
	}

	// Resumes: one recovered (replaying offsets 2 and 3), one not.
	c2 := heraldtest.Connect(t, n, heraldtest.Token(t, "42", "acme"))
	c1.Subscribe("alerts:acme")
	sub := func(channel string, since map[string]any) heraldtest.Frame {
		c2.Send(map[string]any{"type": "subscribe", "channel": channel, "since": since})
		return c2.Expect("subscribed")
	}
	userEpoch := c2.Subscribe("user:42").String("epoch")
	c2.Send(map[string]any{"type": "unsubscribe", "channel": "user:42"})
	c2.Expect("unsubscribed")
	if f := sub("user:42", map[string]any{"offset": 1, "epoch": userEpoch}); f["recovered"] != true {
		t.Fatalf("resume: %v", f)
	}
	c2.Expect("pub")
	c2.Expect("pub")
	if f := sub("merchant:acme", map[string]any{"offset": 1, "epoch": "not-the-epoch"}); f["recovered"] != false || f["reason"] != "epoch_mismatch" {
		t.Fatalf("resume with a wrong epoch: %v", f)
	}

	// A slow client: one publication larger than its whole send queue
	// (the API refuses such data; another node's broker may not).
	c3 := heraldtest.Connect(t, n, heraldtest.Token(t, "7", ""))
	c3.Subscribe("user:7")
	n.PublishDirect(t, "user:7", `"`+strings.Repeat("x", 40<<10)+`"`)
	if code := c3.CloseStatus(5 * time.Second); code != 4009 {
		t.Fatalf("slow client closed with %d", code)
	}
	// A protocol error, and a client that says goodbye.
	c4 := heraldtest.Connect(t, n, heraldtest.Token(t, "8", ""))
	c4.SendRaw([]byte(`{"type":"dance"}`))
	if code := c4.CloseStatus(5 * time.Second); code != 4002 {
		t.Fatalf("protocol error closed with %d", code)
	}
	c1.Send(map[string]any{"type": "unsubscribe", "channel": "alerts:acme"})
	c1.Expect("unsubscribed")
	_ = c2.Conn.Close(1000, "bye")

	n.WaitMetric(t, 1, "herald_connections")
	m := n.Metrics(t)
	want := []struct {
		value  float64
		name   string
		labels []string
	}{
		{1, "herald_node_info", []string{"node", "test-node"}},
		{4, "herald_connections_total", nil},
		{1, "herald_subscriptions", []string{"namespace", "user"}},
		{1, "herald_subscriptions", []string{"namespace", "merchant"}},
		{0, "herald_subscriptions", []string{"namespace", "alerts"}},
		{0, "herald_subscriptions", []string{"namespace", "other"}},
		// withdrawal → user:84624 + merchant:acme; 3 API publishes to
		// user:42; 1 to user:7.
		{5, "herald_publications_total", []string{"namespace", "user"}},
		{1, "herald_publications_total", []string{"namespace", "merchant"}},
		{1, "herald_dedup_hits_total", []string{"namespace", "user"}},
		{1, "herald_dedup_hits_total", []string{"namespace", "merchant"}},
		// c1: merchant:acme + 3 × user:42; c3's was refused by its queue.
		{4, "herald_deliveries_total", []string{"kind", "live"}},
		{2, "herald_deliveries_total", []string{"kind", "recovered"}},
		{1, "herald_send_queue_overflows_total", nil},
		{1, "herald_closes_total", []string{"code", "4009"}},
		{1, "herald_closes_total", []string{"code", "4002"}},
		{1, "herald_closes_total", []string{"code", "1000"}},
		{0, "herald_closes_total", []string{"code", "4010"}},
		{1, "herald_resumes_total", []string{"recovered", "true", "reason", "none"}},
		{1, "herald_resumes_total", []string{"recovered", "false", "reason", "epoch_mismatch"}},
		{0, "herald_resumes_total", []string{"recovered", "false", "reason", "offset_expired"}},
		{1, "herald_ingress_requests_total", []string{"provider", "kriptomat", "outcome", "published"}},
		{1, "herald_ingress_requests_total", []string{"provider", "kriptomat", "outcome", "duplicate"}},
		{1, "herald_ingress_requests_total", []string{"provider", "kriptomat", "outcome", "dead_letter"}},
		{1, "herald_ingress_requests_total", []string{"provider", "kriptomat", "outcome", "malformed"}},
		{1, "herald_ingress_requests_total", []string{"provider", "kriptomat", "outcome", "unauthorized"}},
		{1, "herald_ingress_requests_total", []string{"provider", "other", "outcome", "not_found"}},
		{5, "herald_ingress_request_duration_seconds_count", []string{"provider", "kriptomat"}},
		{1, "herald_dead_letters_total", []string{"provider", "kriptomat", "reason", "unknown_event"}},
		{1, "herald_dead_letters_total", []string{"provider", "kriptomat", "reason", "malformed"}},
		// Only the ingress event had a received_at, and only merchant:acme
		// had subscribers on this node.
		{1, "herald_ingress_to_delivery_seconds_count", nil},
		// 4 ingress appends (2 published, 2 duplicate) + 4 API publishes.
		{8, "herald_broker_operation_duration_seconds_count", []string{"operation", "publish"}},
		// One read of the log per subscribe: c1 ×3, c2 ×3, c3 ×1.
		{7, "herald_broker_operation_duration_seconds_count", []string{"operation", "history"}},
		{0, "herald_broker_errors_total", []string{"operation", "publish", "kind", "unavailable"}},
	}
	for _, w := range want {
		if got := m.Get(w.name, w.labels...); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	if lat := m.Get("herald_ingress_to_delivery_seconds_sum"); lat <= 0 || lat > 5 {
		t.Errorf("ingress-to-delivery latency sum %v s", lat)
	}
	for series := range m {
		if strings.Contains(series, "84624") || strings.Contains(series, "acme") || strings.Contains(series, "xxxxxxxx") {
			t.Errorf("a user, merchant or provider path became a label: %s", series)
		}
	}
	if !m.Has("go_goroutines") || !m.Has("process_open_fds") {
		t.Errorf("runtime and process collectors missing")
	}
}

func TestMetrics_BrokerErrorsAreCountedByOperationAndKind(t *testing.T) {
	b := newFlaky()
	b.fail(channels.ErrUnavailable)
	cfg := heraldtest.Config()
	cfg.Broker = b
	n := heraldtest.Start(t, cfg)
	if status, _ := n.Ingress(t, "kriptomat", []byte(`{"user_id":1,"id":2,"type":"FIAT_WITHDRAWAL","amount":"1","date":"2018-11-27T13:46:22.658","state":"SUCCESSFUL"}`)); status != 503 {
		t.Fatalf("ingress with the broker down: %d", status)
	}
	if status, _ := n.Get(t, "/readyz"); status != 503 {
		t.Fatalf("readyz with the broker down: %d", status)
	}
	m := n.Metrics(t)
	for _, op := range []string{"publish", "ready"} {
		if got := m.Get("herald_broker_errors_total", "operation", op, "kind", "unavailable"); got != 1 {
			t.Errorf("%s errors: %v", op, got)
		}
	}
	if got := m.Get("herald_ingress_requests_total", "provider", "kriptomat", "outcome", "unavailable"); got != 1 {
		t.Errorf("unavailable ingress: %v", got)
	}
}

// TestMetrics_ClientsClosingMidStreamAreCountedWithTheirCode: a client that
// closes with 1000 while publications are still being written to it ended
// its session cleanly, and the metrics must say so, not 1006. Both the
// answer to its close frame and herald's writer race the library's
// closing of the connection.
func TestMetrics_ClientsClosingMidStreamAreCountedWithTheirCode(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	const clients = 30
	for i := 0; i < clients; i++ {
		c := heraldtest.Connect(t, n, heraldtest.Token(t, "1", ""))
		c.Subscribe("user:1")
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n.PublishDirect(t, "user:1", `{"j":1}`)
			}
		}()
		c.Expect("pub")
		if err := c.Conn.Close(1000, "bye"); err != nil {
			t.Errorf("client %d: close handshake: %v", i, err)
		}
		close(stop)
		<-done
	}
	n.WaitMetric(t, 0, "herald_connections")
	m := n.Metrics(t)
	if got := m.Get("herald_closes_total", "code", "1000"); got != clients {
		t.Errorf("closes with 1000: %v, want %d (1006: %v)", got, clients, m.Get("herald_closes_total", "code", "1006"))
	}
}
