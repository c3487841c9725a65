package server_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"herald/internal/heraldtest"
	"herald/internal/server"
)

func api() http.Header { return http.Header{"Authorization": {"Bearer " + heraldtest.APIKey}} }

func TestPublish_IdempotencyKey(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	body := []byte(`{"channel":"user:42","data":{"x":"1.10"},"idempotency_key":"order-7"}`)
	status, first := n.Post(t, "/v1/publish", body, api())
	if status != 200 || first["offset"] != float64(1) || first["channel"] != "user:42" || first["epoch"] == "" {
		t.Fatalf("%d %v", status, first)
	}
	_, again := n.Post(t, "/v1/publish", body, api())
	if again["offset"] != float64(1) || again["epoch"] != first["epoch"] || again["duplicate"] != true {
		t.Fatalf("repeat: %v", again)
	}
	_, other := n.Post(t, "/v1/publish", []byte(`{"channel":"user:42","data":{"x":2}}`), api())
	if other["offset"] != float64(2) {
		t.Fatalf("next: %v", other)
	}
}

func TestPublish_Refusals(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	for body, want := range map[string]int{
		`{"channel":"user:42"}`:                                         400,
		`{"channel":"user:42","data":null}`:                             400,
		`{"channel":"nope","data":{}}`:                                  400,
		`{"channel":"user:a b","data":{}}`:                              400,
		`not json`:                                                      400,
		`{"channel":"user:42","data":{}` + "\n":                         400,
		`{"channel":"user:42","data":{}}` + " \n":                       200,
		`{"channel":"user:42","data":{}}garbage`:                        400,
		`{"channel":"user:42","data":{}}}`:                              400,
		`{"channel":"user:42","data":{}} {"channel":"user:9","data":2}`: 400,
		`{"channel":"user:42","data":1,"extra":true}`:                   200,
		`{"channel":"user:42","data":"just a string"}`:                  200,
		"{\"channel\":\"user:42\",\"data\":\"Z\xfcrich\"}":              400, // Latin-1: subscribers' text frames must be UTF-8
		`{"channel":"user:42","data":"Z\u00fcrich ✓"}`:                  200,
	} {
		if status, res := n.Post(t, "/v1/publish", []byte(body), api()); status != want {
			t.Errorf("%s: %d %v, want %d", body, status, res, want)
		}
	}
	if status, _ := n.Post(t, "/v1/publish", []byte(`{"channel":"user:42","data":{}}`), http.Header{"Authorization": {"Bearer wrong"}}); status != 401 {
		t.Errorf("wrong key: %d", status)
	}
	// The scheme's case does not matter (RFC 7235).
	if status, _ := n.Post(t, "/v1/publish", []byte(`{"channel":"user:42","data":{}}`), http.Header{"Authorization": {"bearer " + heraldtest.APIKey}}); status != 200 {
		t.Errorf("lower-case bearer: %d", status)
	}
	big := fmt.Sprintf(`{"channel":"user:42","data":"%s"}`, strings.Repeat("x", 1<<20))
	if status, _ := n.Post(t, "/v1/publish", []byte(big), api()); status != 413 {
		t.Errorf("oversize: %d", status)
	}
	spaced := `{"channel":"user:42","data":{}}` + strings.Repeat(" ", 1<<20)
	if status, _ := n.Post(t, "/v1/publish", []byte(spaced), api()); status != 413 {
		t.Errorf("oversize after the object: %d", status)
	}
	if _, res := n.Post(t, "/v1/publish", []byte(`{"channel":"user:42","data":{}}}`), api()); !strings.Contains(fmt.Sprint(res["error"]), "unexpected data after the JSON object") {
		t.Errorf("trailing bytes: %v", res)
	}
}

func TestHistoryAPI(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	for i := 0; i < 5; i++ {
		n.Publish(t, "merchant:acme", map[string]int{"i": i})
	}
	status, res := n.Get(t, "/v1/history?channel=merchant:acme&limit=2")
	pubs, _ := res["publications"].([]any)
	if status != 200 || res["offset"] != float64(5) || len(pubs) != 2 || pubs[0].(map[string]any)["offset"] != float64(4) {
		t.Fatalf("%d %v", status, res)
	}
	epoch := res["epoch"].(string)
	_, res = n.Get(t, "/v1/history?channel=merchant:acme&since=1&epoch="+epoch)
	if pubs := res["publications"].([]any); len(pubs) != 4 || res["recovered"] != true {
		t.Fatalf("since 1: %v", res)
	}
	for _, q := range []string{"channel=nope", "channel=user:1&limit=0", "channel=user:1&limit=x", "channel=user:1&since=-1&epoch=e", "channel=user:1&since=1", "channel=user:1&epoch=e"} {
		if status, _ := n.Get(t, "/v1/history?"+q); status != 400 {
			t.Errorf("%s: %d", q, status)
		}
	}
}

func TestAPIDisabledWithoutKey(t *testing.T) {
	cfg := heraldtest.Config()
	cfg.APIKey = ""
	n := heraldtest.Start(t, cfg)
	if status, _ := n.Post(t, "/v1/publish", []byte(`{"channel":"user:1","data":{}}`), http.Header{"Authorization": {"Bearer "}}); status != 404 {
		t.Fatalf("publish without a configured key: %d", status)
	}
}

func TestHealth(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, res := n.Get(t, path); status != 200 {
			t.Errorf("%s: %d %v", path, status, res)
		}
	}
	resp, err := http.Get(n.URL + "/")
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("dashboard: %v %v", err, resp)
	}
	resp.Body.Close()
}

func TestNew_RejectsUnknownProviderAndBadAuth(t *testing.T) {
	cfg := heraldtest.Config()
	cfg.Providers["nobody"] = cfg.Providers["kriptomat"]
	if _, err := server.New(cfg); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Fatalf("unknown provider: %v", err)
	}
	cfg = heraldtest.Config()
	cfg.Auth.Secret = nil
	if _, err := server.New(cfg); err == nil {
		t.Fatal("no token verification configured, yet started")
	}
}

// Data no subscriber could take is refused: nested deeper than clients'
// JSON decoders go, or larger than half the send queue (HERALD_SEND_QUEUE_BYTES).
func TestPublish_RefusesWhatNoSubscriberCouldTake(t *testing.T) {
	cfg := heraldtest.Config()
	cfg.Hub.SendQueueBytes = 64 << 10
	n := heraldtest.Start(t, cfg)
	deep := strings.Repeat("[", 65) + strings.Repeat("]", 65)
	for body, want := range map[string]int{
		`{"channel":"user:42","data":` + deep + `}`:                              400,
		`{"channel":"user:42","data":` + deep[1:len(deep)-1] + `}`:               200,
		`{"channel":"user:42","data":"` + strings.Repeat("x", 33<<10) + `"}`:     413,
		`{"channel":"user:42","data":"` + strings.Repeat("x", 32<<10-100) + `"}`: 200,
	} {
		if status, res := n.Post(t, "/v1/publish", []byte(body), api()); status != want {
			t.Errorf("%.60s…: %d %v, want %d", body, status, res, want)
		}
	}
}

// A broker failure that a retry would not mend is a 500, and, since the
// answer says nothing of its cause, it is logged.
func TestAPI_InternalErrorsAreLogged(t *testing.T) {
	b := newFlaky()
	b.fail(errors.New("ERR script exploded"))
	var logs heraldtest.Buffer
	cfg := heraldtest.Config()
	cfg.Broker = b
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	n := heraldtest.Start(t, cfg)
	status, res := n.Post(t, "/v1/publish", []byte(`{"channel":"user:1","data":{}}`), api())
	if status != 500 || res["error"] != "internal error" {
		t.Fatalf("publish: %d %v", status, res)
	}
	if status, _ := n.Get(t, "/v1/history?channel=user:1"); status != 500 {
		t.Fatalf("history: %d", status)
	}
	for _, want := range []string{"path=/v1/publish", "path=/v1/history", "script exploded"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
