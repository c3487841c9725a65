package kriptomat_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/channels"
	"herald/ingress"
	"herald/ingress/kriptomat"
	"herald/internal/heraldtest"
)

func TestGoldens(t *testing.T) {
	heraldtest.RunGoldens(t, kriptomat.Slug)
}

// The seed's payloads, routed and typed as the event table says.
func TestEveryKindRoutesAndTypes(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, kriptomat.Slug)
	cases := []struct {
		fixture, typ, status string
		channels             []string
		amounts              map[string]string
	}{
		{"exchange_buy", "exchange.buy", "succeeded", []string{"merchant:acme"},
			map[string]string{"amount": "0.0623414132 BTC", "price": "2341.67 EUR", "fee": "2.00 EUR", "subtotal": "98.00 EUR", "total": "100.00 EUR"}},
		{"exchange_sell", "exchange.sell", "succeeded", []string{"merchant:acme"},
			map[string]string{"amount": "0.0623414132 BTC", "subtotal": "99.00 EUR"}},
		{"kyc_status", "kyc.review", "rejected", []string{"user:34693", "merchant:acme"}, nil},
		{"bank_account", "bank_account.status", "approved", []string{"user:7436292", "merchant:acme"}, nil},
		{"withdrawal", "withdrawal.fiat", "succeeded", []string{"user:84624", "merchant:acme"},
			map[string]string{"amount": "100.00 EUR", "deposited": "100.00 EUR", "fee": "1.00 EUR", "received": "99.00 EUR"}},
		{"deposit", "deposit.fiat", "succeeded", []string{"user:84624", "merchant:acme"},
			map[string]string{"amount": "99.00 EUR", "received": "99.00 EUR"}},
		{"master_balance", "master_balance.low", "info", []string{"alerts:acme"},
			map[string]string{"threshold": "1.00 BTC"}},
	}
	n := heraldtest.Start(t, heraldtest.Config())
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			status, res := n.Ingress(t, kriptomat.Slug, fixtures[tc.fixture])
			if status != http.StatusOK || res["status"] != "published" {
				t.Fatalf("%d %v", status, res)
			}
			var chans []string
			for _, p := range res["publications"].([]any) {
				chans = append(chans, p.(map[string]any)["channel"].(string))
			}
			if strings.Join(chans, ",") != strings.Join(tc.channels, ",") {
				t.Fatalf("channels %v, want %v", chans, tc.channels)
			}
			var ev ingress.Event
			h, err := n.Server.Broker().History(context.Background(), chans[0], channels.HistoryOptions{Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			b := h.Publications[0].Data
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type != tc.typ || ev.Status != tc.status || ev.Provider != "kriptomat" || ev.ID != res["event"] {
				t.Fatalf("event %s", b)
			}
			for k, want := range tc.amounts {
				a := ev.Amounts[k]
				if got := a.Value + " " + a.Currency; got != want {
					t.Errorf("amount %s = %q, want %q", k, got, want)
				}
			}
			// Digits survive as sent: no float touched them.
			if !strings.Contains(string(b), `"raw":`) || (tc.amounts["fee"] == "2.00 EUR" && !strings.Contains(string(b), `"fee":2.00`)) {
				t.Errorf("raw payload lost its digits: %s", b)
			}
		})
	}
}

func TestStatusChangesAreDistinctEventsAndRetriesDuplicates(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	pending := `{"user_id":84624,"id":9001,"type":"FIAT_WITHDRAWAL","amount":100.00,"date":"2018-11-27T13:46:22.658","state":"PENDING"}`
	success := strings.Replace(pending, "PENDING", "SUCCESS", 1)
	for i, step := range []struct {
		body, status string
		offset       float64
	}{
		{pending, "published", 1},
		{pending, "duplicate", 0},
		{success, "published", 2},
		{success, "duplicate", 0},
	} {
		code, res := n.Ingress(t, kriptomat.Slug, []byte(step.body))
		if code != http.StatusOK || res["status"] != step.status {
			t.Fatalf("step %d: %d %v", i, code, res)
		}
		if step.offset > 0 {
			if off := res["publications"].([]any)[0].(map[string]any)["offset"]; off != step.offset {
				t.Fatalf("step %d: offset %v", i, off)
			}
		}
	}
}

// A KYC notification has no id: its body names it. Sumsub counts failed
// deliveries in status.notificationFailureCnt, so a retry differs in that
// count alone, and must still be a duplicate; a new review is not.
func TestKYCRetryAfterAFailedDeliveryIsADuplicate(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	first := string(heraldtest.Fixtures(t, kriptomat.Slug)["kyc_status"])
	if !strings.Contains(first, `"notificationFailureCnt": 0`) {
		t.Fatal("the fixture has no notificationFailureCnt of 0")
	}
	retry := strings.Replace(first, `"notificationFailureCnt": 0`, `"notificationFailureCnt": 3`, 1)
	review := strings.Replace(first, `"reviewDate": "2018-07-18 11:27:53+0000"`, `"reviewDate": "2018-07-19 09:00:00+0000"`, 1)
	if review == first {
		t.Fatal("the fixture's reviewDate changed")
	}
	for i, step := range []struct{ body, want string }{
		{first, "published"}, {retry, "duplicate"}, {review, "published"},
	} {
		if code, res := n.Ingress(t, kriptomat.Slug, []byte(step.body)); code != http.StatusOK || res["status"] != step.want {
			t.Fatalf("step %d: %d %v, want %s", i, code, res, step.want)
		}
	}
}

func TestParse_Refusals(t *testing.T) {
	cases := map[string]struct {
		body string
		want error
	}{
		"unknown type":        {`{"id":1,"type":"STAKE","state":"SUCCESS"}`, ingress.ErrUnknownEvent},
		"unknown state":       {`{"id":1,"type":"BUY","state":"LIMBO","pair":"btceur","amount":1}`, ingress.ErrUnknownEvent},
		"unrecognised":        {`{"hello":"world"}`, ingress.ErrUnknownEvent},
		"amount as word":      {`{"id":1,"type":"BUY","state":"SUCCESS","pair":"btceur","amount":"lots"}`, ingress.ErrMalformed},
		"amount huge exp":     {`{"id":1,"type":"BUY","state":"SUCCESS","pair":"btceur","amount":1e999999}`, ingress.ErrMalformed},
		"missing amount":      {`{"id":1,"type":"BUY","state":"SUCCESS","pair":"btceur"}`, ingress.ErrMalformed},
		"missing id":          {`{"type":"BUY","state":"SUCCESS","pair":"btceur","amount":1}`, ingress.ErrMalformed},
		"fractional id":       {`{"id":1.5,"type":"BUY","state":"SUCCESS","pair":"btceur","amount":1}`, ingress.ErrMalformed},
		"bad date":            {`{"id":1,"type":"BUY","state":"SUCCESS","pair":"btceur","amount":1,"date":"yesterday"}`, ingress.ErrMalformed},
		"withdrawal no user":  {`{"id":1,"type":"FIAT_WITHDRAWAL","state":"SUCCESS","amount":1}`, ingress.ErrMalformed},
		"not an object":       {`[1,2]`, ingress.ErrMalformed},
		"null":                {` null`, ingress.ErrMalformed},
		"trailing comma":      {`{"error": "Balance low, BTC balance below 1.00",}`, ingress.ErrMalformed},
		"comment":             {`{"id": 1, // nope` + "\n" + `"type":"BUY"}`, ingress.ErrMalformed},
		"kyc without status":  {`{"user_id":1,"status":{"reviewResult":{}}}`, ingress.ErrMalformed},
		"kyc unknown answer":  {`{"user_id":1,"status":{"reviewStatus":"completed","reviewResult":{"reviewAnswer":"AMBER"}}}`, ingress.ErrUnknownEvent},
		"data after the JSON": {`{"error":"x"} {}`, ingress.ErrMalformed},
		"pair too short":      {`{"id":1,"type":"BUY","state":"SUCCESS","pair":"eur","amount":1}`, ingress.ErrMalformed},
		"pair without a base": {`{"id":1,"type":"BUY","state":"SUCCESS","pair":"-eur","amount":1}`, ingress.ErrMalformed},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ev, err := kriptomat.Parse(&ingress.Request{Body: []byte(tc.body)})
			if err == nil || !errorsIs(err, tc.want) {
				t.Fatalf("got %+v, %v; want %v", ev, err, tc.want)
			}
		})
	}
}

// A pair is split at a separator when it has one, else before the last
// three letters (the seed's "btceur").
func TestPairs(t *testing.T) {
	for pair, want := range map[string]string{
		"btceur": "BTC EUR", "usdceur": "USDC EUR", "BTC-EUR": "BTC EUR", "btc_eur": "BTC EUR", "USDC/EUR": "USDC EUR", "usdt_trc20eur": "USDT_TRC20 EUR", "usdt_trc20-eur": "USDT_TRC20 EUR",
	} {
		body := `{"id":1,"type":"BUY","state":"SUCCESS","pair":"` + pair + `","amount":"1.50","price":"2.00"}`
		ev, err := kriptomat.Parse(&ingress.Request{Body: []byte(body)})
		if err != nil {
			t.Fatalf("%s: %v", pair, err)
		}
		if got := ev.Amounts["amount"].Currency + " " + ev.Amounts["price"].Currency; got != want {
			t.Errorf("%s: amount and price in %s, want %s", pair, got, want)
		}
	}
}

// A master balance alert carries no id and no time: the same alert again
// within the hour is a retry (a duplicate), and an hour later the balance
// has run low again, which the operator must see.
func TestMasterBalanceAlertRepeatsHourly(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 24, 9, 10, 0, 0, time.UTC)
	cfg := heraldtest.Config()
	cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	n := heraldtest.Start(t, cfg)
	alert := []byte(`{"error": "Balance low, BTC balance below 1.00"}`)
	for i, step := range []struct {
		at   time.Duration
		want string
	}{
		{0, "published"},
		{45 * time.Minute, "duplicate"},
		{60 * time.Minute, "published"},
		{2 * time.Hour, "published"},
	} {
		mu.Lock()
		now = time.Date(2026, 11, 24, 9, 10, 0, 0, time.UTC).Add(step.at)
		mu.Unlock()
		if code, res := n.Ingress(t, kriptomat.Slug, alert); code != http.StatusOK || res["status"] != step.want {
			t.Fatalf("step %d (+%v): %d %v, want %s", i, step.at, code, res, step.want)
		}
	}
	if evs := n.Events(t, "alerts:acme"); len(evs) != 3 {
		t.Fatalf("%d alerts published, want 3", len(evs))
	}
}

// The threshold is read from the alert's message, thousands grouped or
// not; a number that may carry a decimal comma gives none rather than a
// wrong one.
func TestMasterBalanceThreshold(t *testing.T) {
	for msg, want := range map[string]string{
		"Balance low, BTC balance below 1.00":           "1.00",
		"Balance low, EUR balance below 1,000.50":       "1000.50",
		"Balance low, EUR balance below 12,345,678":     "12345678",
		"Balance low, EUR balance below 250, top it up": "250",
		"Balance low, EUR balance below 1,5":            "",
		"Balance low, BTC balance below 0,0001":         "",
		"Balance low, EUR balance below 1,0000":         "",
		"Balance low":                                   "",
	} {
		body, _ := json.Marshal(map[string]string{"error": msg})
		ev, err := kriptomat.Parse(&ingress.Request{Body: body, Now: time.Now()})
		if err != nil {
			t.Fatalf("%q: %v", msg, err)
		}
		if got := ev.Amounts["threshold"].Value; got != want {
			t.Errorf("%q: threshold %q, want %q", msg, got, want)
		}
		if ev.Details["message"] != msg {
			t.Errorf("%q: message %v", msg, ev.Details["message"])
		}
	}
}

func TestPendingAfterSuccessIsPublishedStale(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	success := `{"user_id":5,"id":77,"type":"FIAT_DEPOSIT","amount":10.00,"state":"SUCCESS"}`
	pending := strings.Replace(success, "SUCCESS", "PENDING", 1)
	if code, res := n.Ingress(t, kriptomat.Slug, []byte(success)); code != 200 || res["status"] != "published" {
		t.Fatalf("%d %v", code, res)
	}
	code, res := n.Ingress(t, kriptomat.Slug, []byte(pending))
	if code != 200 || res["status"] != "published" {
		t.Fatalf("late PENDING was not published: %d %v", code, res)
	}
	h, err := n.Server.Broker().History(context.Background(), "user:5", channels.HistoryOptions{Limit: 2})
	if err != nil || len(h.Publications) != 2 {
		t.Fatalf("%v %v", h, err)
	}
	var first, late ingress.Event
	_ = json.Unmarshal(h.Publications[0].Data, &first)
	_ = json.Unmarshal(h.Publications[1].Data, &late)
	if first.Stale || !late.Stale || late.CurrentStatus != "succeeded" || late.Status != "pending" {
		t.Fatalf("first %+v\nlate %+v", first, late)
	}
}

func FuzzParse(f *testing.F) {
	heraldtest.AddFixtures(f, kriptomat.Slug)
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := kriptomat.Parse(&ingress.Request{Body: body})
		heraldtest.CheckParse(t, body, ev, err)
	})
}
