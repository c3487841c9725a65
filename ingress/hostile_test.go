package ingress_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"herald/ingress"
	"herald/internal/heraldtest"
	"herald/internal/server"
)

// hostileBodies are what an attacker (or a broken provider) might post.
func hostileBodies() map[string]string {
	return map[string]string{
		"deep arrays":        strings.Repeat("[", 100000) + strings.Repeat("]", 100000),
		"deep objects":       strings.Repeat(`{"a":`, 50000) + "1" + strings.Repeat("}", 50000),
		"huge exponent":      `{"id":1,"type":"BUY","state":"SUCCESS","pair":"btceur","amount":1e999999}`,
		"huge number":        `{"id":1,"type":"BUY","state":"SUCCESS","pair":"btceur","amount":` + strings.Repeat("9", 100000) + `}`,
		"long string":        `{"id":"` + strings.Repeat("x", 500000) + `","type":"BUY","state":"SUCCESS","pair":"btceur","amount":1}`,
		"duplicate keys":     `{"id":1,"id":{"x":1},"event":"a","event":[1],"kind":"Exchange","kind":7}`,
		"null":               `null`,
		"number":             `12345`,
		"empty":              ``,
		"nul bytes":          "{\"id\":\"\x00\x00\",\"type\":\"BUY\"}",
		"invalid utf-8":      "{\"id\":\"\xff\xfe\",\"type\":\"BUY\"}",
		"not JSON at all":    `<?xml version="1.0"?><webhook/>`,
		"many keys":          "{" + strings.Repeat(`"k":1,`, 100000) + `"z":1}`,
		"ids of every shape": `{"id":[1],"requestId":{},"createdDate":7,"level":[],"service":null,"eventType":1,"data":"x","context":5,"time":{}}`,
	}
}

// TestHostileInputIsRefusedAndDisturbsNoOne posts hostile bodies to every
// provider while a client follows a user's channel that a well-behaved
// provider keeps publishing to: every hostile request gets a 4xx (never a
// 5xx or a hang), and the follower misses nothing.
func TestHostileInputIsRefusedAndDisturbsNoOne(t *testing.T) {
	n := start(t, nil)
	f := heraldtest.NewFollower("user:84624", heraldtest.Token(t, "84624", ""))
	if err := f.Connect(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	defer f.Drop()

	var wg sync.WaitGroup
	wg.Add(1)
	published := 0
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			body := strings.Replace(withdrawal, "58463", fmt.Sprint(100000+i), 1)
			if status, res := n.Post(t, "/ingress/kriptomat", []byte(body), bearer(heraldtest.ProviderSecret)); status != 200 {
				t.Errorf("normal webhook: %d %v", status, res)
				return
			}
			published++
		}
	}()
	for _, provider := range heraldtest.Providers() {
		for name, body := range hostileBodies() {
			for _, ctype := range []string{"application/json", "text/plain", "application/xml"} {
				h := bearer(heraldtest.ProviderSecret)
				h.Set("Content-Type", ctype)
				start := time.Now()
				status, res := n.Post(t, "/ingress/"+provider, []byte(body), h)
				if status >= 500 || status < 400 && status != http.StatusAccepted {
					t.Errorf("%s, %s, %s: %d %.200v", provider, name, ctype, status, res)
				}
				if took := time.Since(start); took > 30*time.Second { // a hang, not slowness
					t.Errorf("%s, %s: answered after %v", provider, name, took)
				}
			}
		}
	}
	wg.Wait()
	if err := f.WaitFor(uint64(published), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if s := f.Stats(); s.Delivered != published || len(s.Gaps) != 0 {
		t.Fatalf("%+v, want %d delivered", s, published)
	}
	if status, _ := n.Get(t, "/readyz"); status != 200 {
		t.Fatalf("node not ready after the hostile input: %d", status)
	}
}

// A provider that sends a name in Latin-1 still reported a real payment:
// the event is published, its invalid bytes replaced with U+FFFD, and the
// frame a subscriber receives is UTF-8 (a browser fails a connection on a
// text frame that is not, and would again on every resume).
func TestInvalidUTF8IsReplacedNotPassedOn(t *testing.T) {
	n := start(t, nil)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "84624", ""))
	c.Subscribe("user:84624")

	body := strings.Replace(withdrawal, `"state"`, "\"beneficiary\":\"Z\xfcrich \xff\xfe Bank\",\"state\"", 1)
	if utf8.ValidString(body) {
		t.Fatal("the test body should not be UTF-8")
	}
	if status, res := n.Post(t, "/ingress/kriptomat", []byte(body), bearer(heraldtest.ProviderSecret)); status != 200 || res["status"] != "published" {
		t.Fatalf("%d %v", status, res)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, frame, err := c.Conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !utf8.Valid(frame) {
		t.Fatalf("the frame is not UTF-8: %q", frame)
	}
	var pub struct {
		Data ingress.Event `json:"data"`
	}
	if err := json.Unmarshal(frame, &pub); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(pub.Data.Raw, &raw); err != nil {
		t.Fatal(err)
	}
	if got := raw["beneficiary"]; got != "Z\uFFFDrich \uFFFD Bank" {
		t.Errorf("raw beneficiary %q", got)
	}
	if a := pub.Data.Amounts["amount"]; a.Value != "100.00" || a.Currency != "EUR" {
		t.Errorf("amount %+v", a)
	}
}

// A webhook whose event a subscriber could not take is kept as a dead
// letter, not published: JSON nested deeper than clients' decoders go, or
// an event larger than the hub can send (here a 64 KiB send queue allows
// 32 KiB). Otherwise every
// subscriber of its channels would fail on it, and again on every resume.
// The channel goes on working for what follows.
func TestUnsendableEventsAreDeadLettersNotPublications(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.SendQueueBytes = 64 << 10 })
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "84624", ""))
	c.Subscribe("user:84624")

	with := func(id int, note string) []byte {
		return []byte(strings.Replace(strings.Replace(withdrawal, "58463", fmt.Sprint(id), 1), `"state"`, `"note":`+note+`,"state"`, 1))
	}
	for name, tc := range map[string]struct {
		body   []byte
		reason string
	}{
		"nested 100 deep": {with(1, strings.Repeat("[", 100)+strings.Repeat("]", 100)), "nested 101 deep"},
		"over 32 KiB":     {with(2, `"`+strings.Repeat("<", 40000)+`"`), "a subscriber can be sent"},
	} {
		status, res := n.Post(t, "/ingress/kriptomat", tc.body, bearer(heraldtest.ProviderSecret))
		if status != 400 || !strings.Contains(fmt.Sprint(res["error"]), tc.reason) {
			t.Errorf("%s: %d %v", name, status, res)
		}
	}
	// Within the bounds, the same shapes are published, and are the first
	// the subscriber receives.
	for i, note := range []string{strings.Repeat("[", 10) + strings.Repeat("]", 10), `"` + strings.Repeat("<", 1000) + `"`} {
		if status, res := n.Post(t, "/ingress/kriptomat", with(10+i, note), bearer(heraldtest.ProviderSecret)); status != 200 {
			t.Fatalf("note %d: %d %v", i, status, res)
		}
		if f := c.Expect("pub"); f.Offset() != uint64(i+1) {
			t.Fatalf("pub %v", f)
		}
	}
	status, dead := n.Get(t, "/v1/deadletters?limit=10")
	if status != 200 || len(dead["deadletters"].([]any)) != 2 {
		t.Fatalf("dead letters: %d %v", status, dead)
	}
}
