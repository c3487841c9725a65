package coinify_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/ingress"
	"herald/ingress/coinify"
	"herald/internal/heraldtest"
)

func TestGoldens(t *testing.T) {
	heraldtest.RunGoldens(t, coinify.Slug)
}

// Coinify's published test vector for its webhook signature.
func TestSignature_CoinifyTestVector(t *testing.T) {
	body := []byte(`{"examplePayload":true}`)
	const want = "bcdbb89e3031905f3cc1a20d16b5f969a17a7d8fa0c26e4a807c2193402d66f4"
	cfg := ingress.Config{Secret: "my-shared-secret"}
	p := coinify.Provider()
	h := http.Header{}
	p.Sign(h, http.MethodPost, "/ingress/coinify", body, cfg, time.Now())
	if got := h.Get(coinify.SignatureHeader); got != want {
		t.Fatalf("Sign set %q, want %q", got, want)
	}
	r := &ingress.Request{Header: http.Header{coinify.SignatureHeader: {want}}, Body: body, Config: cfg}
	if err := p.Verify(r); err != nil {
		t.Fatalf("the test vector was refused: %v", err)
	}
	r.Body = []byte(`{"examplePayload":false}`)
	if err := p.Verify(r); !errors.Is(err, ingress.ErrSignature) {
		t.Fatalf("a tampered body was accepted: %v", err)
	}
}

func TestParse_EveryEvent(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, coinify.Slug)
	cases := []struct {
		fixture, typ, status, user, txn string
		amounts                         map[string]string
	}{
		{"identification_approved", "identification_attempt.approved", "approved", "26286", "", nil},
		{"identification_rejected", "identification_attempt.rejected", "rejected", "1", "", nil},
		{"trade_created", "trade.created", "pending", "123", "coinify:trade:1235",
			map[string]string{"eur_amount": "100 EUR", "transfer_in": "103 EUR", "transfer_in_fee": "3 EUR", "transfer_out": "0.099 BTC ~", "transfer_out_fee": "0.0001 BTC ~"}},
		{"trade_transfer_in_completed", "trade.transfer_in_completed", "pending", "123", "coinify:trade:1235", nil},
		{"trade_completed", "trade.completed", "succeeded", "123", "coinify:trade:1235",
			map[string]string{"transfer_out": "0.099 BTC"}},
		{"trade_cancelled", "trade.cancelled", "cancelled", "123", "coinify:trade:1236", map[string]string{}},
		{"trade_expired", "trade.expired", "expired", "123", "coinify:trade:1237", map[string]string{}},
		{"trade_rejected", "trade.rejected", "rejected", "123", "coinify:trade:1238", map[string]string{}},
		// OTC sums sit one level deeper; their trailing zeros survive.
		{"otc_trade_completed", "otc_trade.completed", "succeeded", "123", "coinify:otc_trade:1234",
			map[string]string{"partner_fee": "100.00 EUR", "total_fee": "200.00 EUR", "transfer_in": "30000 EUR", "transfer_out": "1.000 BTC"}},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			ev, err := coinify.Parse(&ingress.Request{Body: fixtures[tc.fixture]})
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != tc.typ || ev.Status != tc.status || ev.User != tc.user || ev.Merchant != "" || ev.Txn != tc.txn {
				t.Fatalf("got %s %s user %q merchant %q txn %q", ev.Type, ev.Status, ev.User, ev.Merchant, ev.Txn)
			}
			// partnerContext is the partner's own data: details, not a merchant.
			if strings.HasPrefix(tc.fixture, "trade_") && (ev.Details["partner_client_id"] != "123" || ev.Details["partner_ref_id"] != "12") {
				t.Errorf("partnerContext details: client %v, ref %v", ev.Details["partner_client_id"], ev.Details["partner_ref_id"])
			}
			if tc.amounts != nil && len(tc.amounts) == 0 && len(ev.Amounts) != 0 {
				t.Errorf("amounts %v, want none", ev.Amounts)
			}
			for k, want := range tc.amounts {
				a := ev.Amounts[k]
				got := a.Value + " " + a.Currency
				if a.Approximate {
					got += " ~"
				}
				if got != want {
					t.Errorf("amount %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestParse_EventIDIsTheEnvelopeID(t *testing.T) {
	body := heraldtest.Fixtures(t, coinify.Slug)["trade_completed"]
	ev, err := coinify.Parse(&ingress.Request{Body: body})
	if err != nil || ev.ID != "coinify:8c2d4b6a-3333-4e3f-8a2b-000000001235" {
		t.Fatalf("%v %v", ev, err)
	}
	if ev.Details["transfer_out_transaction"] != "btc-tx-id" || ev.Details["partner_ref_id"] != "12" {
		t.Fatalf("details %v", ev.Details)
	}
}

func TestParse_Refusals(t *testing.T) {
	trade := func(ctx string) string {
		return `{"id":"e1","time":"2024-03-06T09:00:00Z","event":"trade.completed","context":` + ctx + `}`
	}
	heraldtest.CheckRefusals(t, coinify.Parse, ingress.ErrUnknownEvent, map[string]string{
		"unknown event": `{"id":"e1","event":"trade.paused","context":{}}`,
	})
	heraldtest.CheckRefusals(t, coinify.Parse, ingress.ErrMalformed, map[string]string{
		"no event":            `{"id":"e1","context":{}}`,
		"no id":               `{"event":"trade.completed","context":{"id":"1","traderId":"2"}}`,
		"no context":          `{"id":"e1","event":"trade.completed"}`,
		"context not object":  `{"id":"e1","event":"trade.completed","context":[1]}`,
		"no trader":           trade(`{"id":"1"}`),
		"no trade id":         trade(`{"traderId":"2"}`),
		"amount as word":      trade(`{"id":"1","traderId":"2","eurAmount":"lots"}`),
		"nested amount bad":   trade(`{"id":"1","traderId":"2","totalFee":{"amount":{"amount":true}}}`),
		"money without sum":   trade(`{"id":"1","traderId":"2","transferIn":{"amount":{"currency":"EUR"}}}`),
		"approximate as word": trade(`{"id":"1","traderId":"2","transferOut":{"amount":{"amount":1,"isApproximate":"yes"}}}`),
		"placeholder time":    strings.Replace(trade(`{"id":"1","traderId":"2"}`), "2024-03-06T09:00:00Z", "yyyy-mm-ddThh:mm:ss.msZ", 1),
		"comment":             `{"id":"e1", // retry` + "\n" + `"event":"trade.completed"}`,
	})
}

// Coinify may deliver trade.completed before trade.created: both are
// published, in arrival order, the late one marked stale; a retry of
// either (same envelope id) is a duplicate.
func TestOutOfOrderTradeIsPublishedStale(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, coinify.Slug)
	n := heraldtest.Start(t, heraldtest.Config())
	for i, step := range []struct{ fixture, status string }{
		{"trade_completed", "published"},
		{"trade_created", "published"},
		{"trade_created", "duplicate"},
	} {
		if code, res := n.Ingress(t, coinify.Slug, fixtures[step.fixture]); code != http.StatusOK || res["status"] != step.status {
			t.Fatalf("step %d (%s): %d %v", i, step.fixture, code, res)
		}
	}
	evs := n.Events(t, "user:123")
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	done, late := evs[0], evs[1]
	if done.Type != "trade.completed" || done.Stale || late.Type != "trade.created" || !late.Stale || late.CurrentStatus != "succeeded" {
		t.Fatalf("first %+v\nlate %+v", done, late)
	}
	if done.OccurredAt == late.OccurredAt {
		t.Fatal("each event should keep its own occurred_at")
	}
}

func FuzzParse(f *testing.F) {
	heraldtest.AddFixtures(f, coinify.Slug)
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := coinify.Parse(&ingress.Request{Body: body})
		heraldtest.CheckParse(t, body, ev, err)
	})
}
