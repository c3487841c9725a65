package zeroxpay_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"herald/ingress"
	"herald/ingress/zeroxpay"
	"herald/internal/heraldtest"
)

func TestGoldens(t *testing.T) {
	heraldtest.RunGoldens(t, zeroxpay.Slug)
}

// 0xpay's documented signature example: key "private-key", timestamp
// 1677486443, POST /merchants/addresses with the body below.
func TestSignature_ZeroxpayExample(t *testing.T) {
	body := []byte(`{"blockchain":"BITCOIN", "meta":"your-info"}`)
	const want = "d1aeccfe32e4adf499be5777f38cd643a2a2c06a929f1f328d9809b9f8f8509e"
	at := time.Unix(1677486443, 0)
	cfg := ingress.Config{Secret: "private-key", Merchant: "m-1"}
	h := http.Header{}
	zeroxpay.Sign(h, http.MethodPost, "/merchants/addresses", body, cfg, at)
	if h.Get(zeroxpay.HeaderSignature) != want || h.Get(zeroxpay.HeaderTimestamp) != "1677486443" || h.Get(zeroxpay.HeaderMerchant) != "m-1" {
		t.Fatalf("Sign set %v", h)
	}
	r := &ingress.Request{Method: http.MethodPost, Path: "/merchants/addresses", Header: h, Body: body, Config: cfg, Now: at.Add(time.Minute)}
	if err := zeroxpay.Verify(r); err != nil {
		t.Fatalf("0xpay's own example was refused: %v", err)
	}
}

// signed returns a request to /ingress/0xpay on herald.example whose
// headers sign url (path, or host and path) at signedAt, received at now.
func signed(url string, body []byte, signedAt, now time.Time) *ingress.Request {
	cfg := ingress.Config{Secret: "k", Tolerance: 5 * time.Minute}
	h := http.Header{}
	zeroxpay.Sign(h, http.MethodPost, url, body, cfg, signedAt)
	return &ingress.Request{Method: http.MethodPost, Path: "/ingress/0xpay", Host: "herald.example", Header: h, Body: body, Config: cfg, Now: now}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1709715600, 0)
	body := []byte(`{"kind":"Exchange"}`)
	const path = "/ingress/0xpay"
	cases := []struct {
		name     string
		url      string
		signedAt time.Time
		mutate   func(r *ingress.Request)
		ok       bool
	}{
		{"path signed", path, now, nil, true},
		{"host and path signed", "herald.example" + path, now, nil, true},
		{"forwarded host and path signed", "public.example" + path, now, func(r *ingress.Request) { r.Header.Set("X-Forwarded-Host", "public.example") }, true},
		{"4m old", path, now.Add(-4 * time.Minute), nil, true},
		{"replayed 10m later", path, now.Add(-10 * time.Minute), nil, false},
		{"10m in the future", path, now.Add(10 * time.Minute), nil, false},
		{"other path signed", "/elsewhere", now, nil, false},
		{"other host signed", "evil.example" + path, now, nil, false},
		{"tampered body", path, now, func(r *ingress.Request) { r.Body = []byte(`{"kind":"Exchange "}`) }, false},
		{"timestamp moved", path, now, func(r *ingress.Request) { r.Header.Set("timestamp", strconv.FormatInt(now.Unix()+1, 10)) }, false},
		{"timestamp in ms", path, now, func(r *ingress.Request) { r.Header.Set("timestamp", strconv.FormatInt(now.UnixMilli(), 10)) }, false},
		{"no timestamp", path, now, func(r *ingress.Request) { r.Header.Del("timestamp") }, false},
		{"no signature", path, now, func(r *ingress.Request) { r.Header.Del("signature") }, false},
		{"wrong key", path, now, func(r *ingress.Request) { r.Config.Secret = "other" }, false},
		{"other method", path, now, func(r *ingress.Request) { r.Method = http.MethodPut }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := signed(tc.url, body, tc.signedAt, now)
			if tc.mutate != nil {
				tc.mutate(r)
			}
			if err := zeroxpay.Verify(r); tc.ok != (err == nil) {
				t.Fatalf("Verify = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// Over HTTP, with the default window: a signed request passes without the
// shared secret; a retry carrying the same signature 10 minutes later (0xpay
// retries from +10 min for about 8 h) is accepted, as the duplicate it is;
// the same request 13 hours later is refused with 401.
func TestReplayOutsideToleranceIs401(t *testing.T) {
	body := heraldtest.Fixtures(t, zeroxpay.Slug)["exchange_done"]
	n := heraldtest.Start(t, heraldtest.Config())
	post := func(signedAt time.Time) (int, map[string]any) {
		h := http.Header{}
		zeroxpay.Sign(h, http.MethodPost, "/ingress/0xpay", body, ingress.Config{Secret: heraldtest.ProviderSecret}, signedAt)
		return n.Post(t, "/ingress/0xpay", body, h)
	}
	if code, res := post(time.Now()); code != http.StatusOK || res["status"] != "published" {
		t.Fatalf("fresh signed request: %d %v", code, res)
	}
	if code, res := post(time.Now().Add(-10 * time.Minute)); code != http.StatusOK || res["status"] != "duplicate" {
		t.Fatalf("retry with its first signature: %d %v", code, res)
	}
	if code, res := post(time.Now().Add(-13 * time.Hour)); code != http.StatusUnauthorized || !strings.Contains(res["error"].(string), "tolerance") {
		t.Fatalf("replay: %d %v", code, res)
	}
}

func TestParse_EveryEvent(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, zeroxpay.Slug)
	cases := []struct {
		fixture, typ, status, merchant, to string
		amounts                            map[string]string
	}{
		{"fiat_withdraw_exchanged", "exchange_withdrawal.fiat", "pending", "", "440043******5678",
			map[string]string{"amount": "50000.00 KZT", "requested_amount": "50000.00 KZT", "fee": "250.00 KZT", "spent": "110.500000 USDT", "price": "0.00221 USDT", "exchange_fee": "0.50 "}},
		// paidAmount is the source of truth: it is "amount".
		{"fiat_withdraw_done", "exchange_withdrawal.fiat", "succeeded", "", "4400 43** **** 5678",
			map[string]string{"amount": "49990.00 KZT", "requested_amount": "50000.00 KZT", "failed_amount": "10.00 KZT"}},
		{"fiat_withdraw_failed", "exchange_withdrawal.fiat", "failed", "", "537541******7890",
			map[string]string{"amount": "0.00 UAH", "failed_amount": "1200.00 UAH"}},
		{"crypto_withdraw_done", "exchange_withdrawal.crypto", "succeeded", "", "",
			map[string]string{"amount": "0.00430000 BTC", "fee": "0.00002 BTC", "price": "23000 USDT"}},
		{"exchange_done", "exchange.swap", "succeeded", "b2a46898-7e6d-4c13-8a31-47154c43ee8b", "",
			map[string]string{"amount": "0.00430000 BTC", "spent": "100.000 USDT", "fee": "0.10 ", "price": "23000 USDT"}},
		{"exchange_failed", "exchange.swap", "failed", "b2a46898-7e6d-4c13-8a31-47154c43ee8b", "",
			map[string]string{"amount": "1.500 ETH", "spent": "5400.00 USDT"}},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			body := fixtures[tc.fixture]
			ev, err := zeroxpay.Parse(&ingress.Request{Body: body})
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != tc.typ || ev.Status != tc.status || ev.Merchant != tc.merchant || ev.User != "" {
				t.Fatalf("got %s %s merchant %q user %q", ev.Type, ev.Status, ev.Merchant, ev.User)
			}
			for k, want := range tc.amounts {
				if got := ev.Amounts[k].Value + " " + ev.Amounts[k].Currency; got != want {
					t.Errorf("amount %s = %q, want %q", k, got, want)
				}
			}
			if tc.to != "" && ev.Details["to"] != tc.to {
				t.Errorf("to = %v, want %s", ev.Details["to"], tc.to)
			}
			// The card number is never published whole, raw included.
			for _, card := range []string{"4400430212345678", "4400 4302 1234 5678", "5375411234567890"} {
				if to, _ := ev.Details["to"].(string); strings.Contains(string(ev.Raw), card) || to == card {
					t.Fatalf("card %s published: %s", card, ev.Raw)
				}
			}
		})
	}
}

func TestParse_DedupKeyIsKindIDStatus(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, zeroxpay.Slug)
	a, _ := zeroxpay.Parse(&ingress.Request{Body: fixtures["fiat_withdraw_exchanged"]})
	b, _ := zeroxpay.Parse(&ingress.Request{Body: fixtures["fiat_withdraw_done"]})
	if a.ID != "0xpay:FiatExchangeWithdraw:6f9a2c1e-3b4d-4e5f-8a7b-1c2d3e4f5a01:Exchanged" || b.ID == a.ID || a.Txn != b.Txn {
		t.Fatalf("ids %s %s, txns %s %s", a.ID, b.ID, a.Txn, b.Txn)
	}
}

func TestParse_Refusals(t *testing.T) {
	ex := func(extra string) string {
		return `{"kind":"Exchange","id":"x1","status":"Done","targetTicker":"BTC","targetAmount":"1.0"` + extra + `}`
	}
	heraldtest.CheckRefusals(t, zeroxpay.Parse, ingress.ErrUnknownEvent, map[string]string{
		"unknown kind":   `{"kind":"Replenish","id":"1","status":"Done"}`,
		"unknown status": `{"kind":"Exchange","id":"1","status":"Pending"}`,
	})
	heraldtest.CheckRefusals(t, zeroxpay.Parse, ingress.ErrMalformed, map[string]string{
		"no kind":           `{"id":"1","status":"Done"}`,
		"no id":             `{"kind":"Exchange","status":"Done"}`,
		"no status":         `{"kind":"Exchange","id":"1"}`,
		"no target amount":  `{"kind":"Exchange","id":"1","status":"Done","targetTicker":"BTC"}`,
		"no ticker":         `{"kind":"FiatExchangeWithdraw","id":"1","status":"Done","amount":"1"}`,
		"no withdraw sum":   `{"kind":"FiatExchangeWithdraw","id":"1","status":"Done","ticker":"KZT"}`,
		"amount as word":    ex(`,"spendAmount":"a lot"`),
		"time not ms":       ex(`,"time":"yesterday"`),
		"time fractional":   ex(`,"time":1.5`),
		"time far future":   ex(`,"time":99999999999999999`),
		"price pair of one": ex(`,"pricePair":["BTC"]`),
		"to not a string":   ex(`,"to":{"card":"4111111111111111"}`),
	})
}

// Exchanged after Done is stale; Failed after Done is a new final status
// (0xpay sends statuses in the order they happen). Nothing is dropped.
func TestOutOfOrderAndLateFailure(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, zeroxpay.Slug)
	done := fixtures["fiat_withdraw_done"]
	exchanged := fixtures["fiat_withdraw_exchanged"]
	failed := []byte(strings.Replace(string(done), `"status": "Done"`, `"status": "Failed"`, 1))
	n := heraldtest.Start(t, heraldtest.Config())
	for i, body := range [][]byte{done, exchanged, exchanged, failed} {
		want := "published"
		if i == 2 {
			want = "duplicate"
		}
		if code, res := n.Ingress(t, zeroxpay.Slug, body); code != http.StatusOK || res["status"] != want {
			t.Fatalf("step %d: %d %v", i, code, res)
		}
	}
	evs := n.Events(t, "merchant:acme")
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3", len(evs))
	}
	if evs[0].Status != "succeeded" || evs[0].Stale {
		t.Errorf("Done: %+v", evs[0])
	}
	if evs[1].Status != "pending" || !evs[1].Stale || evs[1].CurrentStatus != "succeeded" {
		t.Errorf("late Exchanged: %+v", evs[1])
	}
	if evs[2].Status != "failed" || evs[2].Stale {
		t.Errorf("Failed after Done: %+v", evs[2])
	}
}

func TestRedact_MasksCardsInDeadLetters(t *testing.T) {
	for _, body := range []string{
		`{"kind":"Refund","to":"4400430212345678"}`,
		`{"kind":"Refund","to":"4400430212345678",}`,
		`{"kind":"FiatExchangeWithdraw","to":4400430212345678`,
	} {
		got := string(zeroxpay.Redact([]byte(body)))
		if strings.Contains(got, "4400430212345678") || !strings.Contains(got, "440043******5678") {
			t.Errorf("Redact(%s) = %s", body, got)
		}
	}
	n := heraldtest.Start(t, heraldtest.Config())
	if code, _ := n.Ingress(t, zeroxpay.Slug, []byte(`{"kind":"Refund","id":"1","status":"Done","to":"4400430212345678"}`)); code != http.StatusAccepted {
		t.Fatalf("unknown kind: %d", code)
	}
	_, res := n.Get(t, "/v1/deadletters?limit=1")
	dl := res["deadletters"].([]any)[0].(map[string]any)
	if body := dl["body"].(string); strings.Contains(body, "4400430212345678") {
		t.Fatalf("dead letter kept the card number: %s", body)
	}
}

func FuzzParse(f *testing.F) {
	heraldtest.AddFixtures(f, zeroxpay.Slug)
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := zeroxpay.Parse(&ingress.Request{Body: body})
		heraldtest.CheckParse(t, body, ev, err)
		// At most the first six and last four digits of a card are shown:
		// always for a fiat withdrawal, otherwise when "to" reads as a
		// card. Anything else, an address, is kept as sent.
		if err != nil {
			return
		}
		raw, _ := ingress.DecodeObject(ev.Raw)
		sent, _ := ingress.DecodeObject(body)
		orig, _ := sent["to"].(string)
		card := ev.Details["kind"] == "FiatExchangeWithdraw" || ingress.IsCardNumber(orig)
		for _, to := range []any{ev.Details["to"], raw["to"]} {
			s, _ := to.(string)
			if card && digits(s) > 10 {
				t.Fatalf("to published unmasked: %q", s)
			}
			if !card && s != orig {
				t.Fatalf("to %q published as %q", orig, s)
			}
		}
	})
}

func digits(s string) int {
	n := 0
	for _, r := range s {
		if r >= '0' && r <= '9' {
			n++
		}
	}
	return n
}
