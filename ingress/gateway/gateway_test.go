package gateway_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/ingress"
	"herald/ingress/gateway"
	"herald/internal/heraldtest"
)

func TestGoldens(t *testing.T) {
	heraldtest.RunGoldens(t, gateway.Slug)
}

// The gateway's signature, as computed independently of herald:
//
//	printf '%s' "$body" | openssl dgst -sha512 -hmac gateway-secret
func TestSignature_KnownAnswer(t *testing.T) {
	body := []byte(`{"requestId":"r1","id":"e1","eventType":"INVOICE_PAID"}`)
	const want = "afda3ac0c8071024ee1b04466862787e8f67cddab343277544e5af601694fe3dc56d5aca072e79af0f295d06cfb659d3c69b66889207c793ea26461758345181"
	cfg := ingress.Config{Secret: "gateway-secret"}
	p := gateway.Provider()
	h := http.Header{}
	p.Sign(h, http.MethodPost, "/ingress/gateway", body, cfg, time.Now())
	if got := h.Get("Sign"); got != want {
		t.Fatalf("Sign set %q, want %q", got, want)
	}
	r := &ingress.Request{Header: http.Header{"Sign": {want}}, Body: body, Config: cfg}
	if err := p.Verify(r); err != nil {
		t.Fatalf("the known answer was refused: %v", err)
	}
	r.Body = []byte(`{"requestId":"r1","id":"e2","eventType":"INVOICE_PAID"}`)
	if err := p.Verify(r); !errors.Is(err, ingress.ErrSignature) {
		t.Fatalf("a tampered body was accepted: %v", err)
	}
}

func TestTypeOf(t *testing.T) {
	for in, want := range map[string]string{
		"INVOICE_PAID":                     "invoice.paid",
		"INVOICE_CREATE_INVOICE":           "invoice.create_invoice",
		"FIAT_APPLIER_ORDER_UNPAID":        "fiat_applier.order_unpaid",
		"CUSTOMER_PURSE_MEM_POOL_FOUND":    "customer_purse.mem_pool_found",
		"TOP_UP_COMPLIANCE_CHECK":          "top_up.compliance_check",
		"WALLET_FUNDS_DELIVERED_ACCOUNT":   "wallet.funds_delivered_account",
		"PAYOUT_CHANGE_STATUS":             "payout.change_status",
		"FIAT_APPLIER_WITHDRAWAL_SUCCESS":  "fiat_applier.withdrawal_success",
		"INVOICE_TRANSLATION_TO_ACCOUNT_X": "invoice.translation_to_account_x",
	} {
		if got := gateway.TypeOf(in); got != want {
			t.Errorf("TypeOf(%s) = %s, want %s", in, got, want)
		}
	}
}

// Every seed event, over HTTP: its status and channels; a WARNING is
// copied to alerts:<merchant>.
func TestEveryEventRoutes(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, gateway.Slug)
	// Every event goes to the configured merchant: externalId is the
	// merchant's reference for the invoice or order.
	const m, alert = "merchant:acme", "alerts:acme"
	cases := []struct {
		fixture, status string
		channels        []string
	}{
		{"invoice_create_invoice", "pending", []string{m}},
		{"invoice_create_unlimited_invoice", "pending", []string{m}},
		{"invoice_mempool_found", "pending", []string{m}},
		{"invoice_compliance_check", "pending", []string{m, alert}},
		{"invoice_funds_received", "succeeded", []string{m}},
		{"invoice_compliance_declined", "rejected", []string{m, alert}},
		{"invoice_pending_intervention", "pending", []string{m, alert}},
		{"invoice_paid", "succeeded", []string{m}},
		{"invoice_expired", "expired", []string{m}},
		{"invoice_translation_to_account_completed", "succeeded", []string{m}},
		{"fiat_applier_fiat_funds_received", "succeeded", []string{m}},
		{"fiat_applier_order_unpaid", "expired", []string{m}},
		{"fiat_applier_payment_failed", "failed", []string{m}},
		{"fiat_applier_adjustment", "info", []string{m}},
		{"fiat_applier_withdrawal_success", "succeeded", []string{m}},
		{"fiat_applier_withdrawal_failed", "failed", []string{m}},
		{"customer_purse_expired", "expired", []string{"user:cus-2001", m}},
		{"customer_purse_mem_pool_found", "pending", []string{"user:cus-2001", m}},
		{"customer_purse_pending_compliance", "pending", []string{"user:cus-2001", m, alert}},
		{"customer_purse_compliance_declined", "rejected", []string{"user:cus-2002", m, alert}},
		{"customer_purse_funds_received", "succeeded", []string{"user:cus-2001", m}},
		{"payout_change_status", "succeeded", []string{m}},
		{"payout_confirmed", "approved", []string{m}},
		{"payout_validation_error", "failed", []string{m, alert}},
		{"top_up_compliance_check", "pending", []string{m, alert}},
		{"top_up_compliance_declined", "rejected", []string{m, alert}},
		{"wallet_funds_delivered_account", "succeeded", []string{m}},
	}
	if len(cases) != len(fixtures) {
		t.Fatalf("%d cases for %d fixtures", len(cases), len(fixtures))
	}
	n := heraldtest.Start(t, heraldtest.Config())
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			chans, ev := n.Deliver(t, gateway.Slug, fixtures[tc.fixture])
			if strings.Join(chans, " ") != strings.Join(tc.channels, " ") {
				t.Fatalf("channels %v, want %v", chans, tc.channels)
			}
			if ev.Status != tc.status {
				t.Fatalf("event %+v", ev)
			}
			if ref := ev.Details["external_id"]; strings.Contains(string(fixtures[tc.fixture]), `"externalId"`) && ref != "order/2022/17" {
				t.Fatalf("external_id detail %v", ref)
			}
		})
	}
}

func TestParse_Amounts(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, gateway.Slug)
	for fixture, want := range map[string]map[string]string{
		// fiatAmount as a number, in fiatCurrency.
		"invoice_paid": {"amount": "0.01 ETH", "real_amount": "0.0100 ETH", "fiat_amount": "27.50 USD"},
		// fiatAmount as an object: one amount per currency.
		"invoice_funds_received": {"amount": "0.01 ETH", "fiat_amount_eur": "31.994837336 EUR", "fiat_amount_usd": "36.844106264 USD"},
		// fiatAmount as a string.
		"fiat_applier_fiat_funds_received":         {"fiat_amount": "150.00 EUR", "rate": "0.9205 EUR"},
		"invoice_translation_to_account_completed": {"amount": "0.01 ETH", "service_fee": "0.000100 ETH", "fiat_amount_eur": "31.994837336 EUR", "fiat_amount_usd": "36.844106264 USD"},
		"fiat_applier_adjustment":                  {"sum_after_adjustment": "149.50 EUR"},
		"customer_purse_compliance_declined":       {"amount": "1.000 BTC"},
		"invoice_create_invoice":                   {"amount": "0.01 ETH"},
	} {
		ev, err := gateway.Parse(&ingress.Request{Body: fixtures[fixture]})
		if err != nil {
			t.Fatalf("%s: %v", fixture, err)
		}
		if len(ev.Amounts) != len(want) {
			t.Errorf("%s: amounts %v, want %v", fixture, ev.Amounts, want)
		}
		for k, w := range want {
			if got := ev.Amounts[k].Value + " " + ev.Amounts[k].Currency; got != w {
				t.Errorf("%s: amount %s = %q, want %q", fixture, k, got, w)
			}
		}
	}
}

func TestParse_IDsDatesAndDetails(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, gateway.Slug)
	ev, err := gateway.Parse(&ingress.Request{Body: fixtures["invoice_create_invoice"]})
	if err != nil {
		t.Fatal(err)
	}
	// The envelope id, a number; a date without zone is UTC.
	if ev.ID != "gateway:1" || ev.OccurredAt != "2022-03-15T12:13:05.909616Z" || ev.Txn != "gateway:invoice:3" || ev.Rank != 1 {
		t.Fatalf("%+v", ev)
	}
	if ev.Details["parent_external_id"] != json.Number("3") || ev.Details["idempotency_key"] != "5b0ca8da-6af4-4a1c-9efd-5cbfc19ace09" || ev.Details["request_id"] != "bf9348b7-2c14-46d7-868c-b597852da319" {
		t.Fatalf("details %v", ev.Details)
	}
	// A purse payment is one transaction whether its id is sent as a
	// number or as a string.
	a, _ := gateway.Parse(&ingress.Request{Body: fixtures["customer_purse_mem_pool_found"]})
	b, _ := gateway.Parse(&ingress.Request{Body: fixtures["customer_purse_funds_received"]})
	if a.Txn != "gateway:purse_payment:70011" || a.Txn != b.Txn || a.Rank >= b.Rank {
		t.Fatalf("txns %s/%d %s/%d", a.Txn, a.Rank, b.Txn, b.Rank)
	}
}

func TestParse_PayoutStates(t *testing.T) {
	body := string(heraldtest.Fixtures(t, gateway.Slug)["payout_change_status"])
	for state, want := range map[string]string{
		"CREATION_IN_PROGRESS": "pending", "PENDING_CONFIRMATION": "pending", "CONFIRMED": "approved",
		"IN_PROGRESS": "pending", "COMPLETED": "succeeded", "FAILED": "failed", "CANCELED": "cancelled",
	} {
		ev, err := gateway.Parse(&ingress.Request{Body: []byte(strings.Replace(body, `"COMPLETED"`, `"`+state+`"`, 1))})
		if err != nil || ev.Status != want || ev.Details["payout_status"] != state {
			t.Errorf("%s: %+v %v, want %s", state, ev, err, want)
		}
	}
	if _, err := gateway.Parse(&ingress.Request{Body: []byte(strings.Replace(body, `"COMPLETED"`, `"LIMBO"`, 1))}); !errors.Is(err, ingress.ErrUnknownEvent) {
		t.Errorf("unknown payoutStatus: %v", err)
	}
}

func TestParse_Refusals(t *testing.T) {
	env := func(eventType, data string) string {
		return `{"requestId":"r","id":7,"createdDate":"2022-03-15T12:13:05.909616","level":"INFO","service":"X","eventType":"` + eventType + `","data":` + data + `}`
	}
	heraldtest.CheckRefusals(t, gateway.Parse, ingress.ErrUnknownEvent, map[string]string{
		"unknown eventType": env("INVOICE_REFUNDED", `{}`),
	})
	heraldtest.CheckRefusals(t, gateway.Parse, ingress.ErrMalformed, map[string]string{
		"no eventType":        `{"id":7,"data":{}}`,
		"no id":               `{"eventType":"INVOICE_PAID","data":{}}`,
		"fractional id":       strings.Replace(env("INVOICE_PAID", `{}`), `"id":7`, `"id":7.5`, 1),
		"no data":             `{"id":7,"eventType":"INVOICE_PAID"}`,
		"bad date":            strings.Replace(env("INVOICE_PAID", `{}`), "2022-03-15T12:13:05.909616", "15/03/2022", 1),
		"amount as word":      env("INVOICE_PAID", `{"amount":"lots","currency":"ETH"}`),
		"fiat amount as bool": env("INVOICE_PAID", `{"fiatAmount":true}`),
		"fiat object bad key": env("INVOICE_PAID", `{"fiatAmount":{"E U R":1}}`),
		"fiat object bad sum": env("INVOICE_PAID", `{"fiatAmount":{"EUR":"x"}}`),
		"payout no status":    env("PAYOUT_CHANGE_STATUS", `{"parentExternalId":1}`),
		"customer as object":  env("CUSTOMER_PURSE_EXPIRED", `{"customerId":{}}`),
		"trailing comma":      env("INVOICE_PAID", `{"amount":1,}`),
	})
}

// INVOICE_CREATE_INVOICE arriving after INVOICE_PAID is published stale;
// a retry of INVOICE_PAID (same envelope id) is a duplicate.
func TestOutOfOrderInvoiceIsPublishedStale(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, gateway.Slug)
	n := heraldtest.Start(t, heraldtest.Config())
	for i, step := range []struct{ fixture, status string }{
		{"invoice_paid", "published"},
		{"invoice_create_invoice", "published"},
		{"invoice_paid", "duplicate"},
	} {
		if code, res := n.Ingress(t, gateway.Slug, fixtures[step.fixture]); code != http.StatusOK || res["status"] != step.status {
			t.Fatalf("step %d: %d %v", i, code, res)
		}
	}
	evs := n.Events(t, "merchant:acme")
	if len(evs) != 2 || evs[0].Stale || !evs[1].Stale || evs[1].Status != "pending" || evs[1].CurrentStatus != "succeeded" {
		t.Fatalf("%+v", evs)
	}
}

func FuzzParse(f *testing.F) {
	heraldtest.AddFixtures(f, gateway.Slug)
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := gateway.Parse(&ingress.Request{Body: body})
		heraldtest.CheckParse(t, body, ev, err)
	})
}
