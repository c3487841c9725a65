package partner_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/ingress"
	"herald/ingress/partner"
	"herald/internal/heraldtest"
)

const (
	alice = "1867465a-aaed-45e3-b463-282e4f904a83"
	bob   = "bca65c48-df49-4831-a7b2-de7903321581"
)

func TestGoldens(t *testing.T) {
	heraldtest.RunGoldens(t, partner.Slug)
}

// Every webhook of P100's index, over HTTP: recognised, typed, routed.
func TestEveryWebhookRoutes(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, partner.Slug)
	const m = "merchant:acme"
	cases := []struct {
		fixture, typ, status string
		channels             []string
	}{
		{"user_status", "user.status", "approved", []string{"user:" + alice, m}},
		{"user_status_active", "user.status", "approved", []string{"user:" + bob, m}},
		{"user_status_extended", "user.status", "approved", []string{"user:" + bob, m}},
		{"user_status_unknown_balance_status", "user.status", "approved", []string{"user:" + bob, m}},
		{"user_status_unnamed_balance", "user.status", "approved", []string{"user:" + alice, m}},
		{"kyc_file_added", "kyc_file.added", "info", []string{"user:" + alice, m}},
		{"poa_verification", "poa.verification", "approved", []string{"user:" + alice, m}},
		{"kyc_verification", "kyc.verification", "rejected", []string{"user:" + bob, m}},
		{"wallet_created", "wallet.created", "succeeded", []string{m}},
		{"p2p_transfer", "transfer.p2p", "succeeded", []string{"user:" + alice, "user:" + bob, m}},
		{"sepa_transfer", "transfer.sepa", "succeeded", []string{m}},
		{"sepa_transfer_failed", "transfer.sepa", "failed", []string{m}},
		{"sepa_deposit", "deposit.sepa", "succeeded", []string{"user:" + alice, m}},
		{"crypto_withdrawal", "withdrawal.crypto", "succeeded", []string{"user:" + alice, m}},
		{"crypto_deposit", "deposit.crypto", "pending", []string{m}},
		{"crypto_deposit_completed", "deposit.crypto", "succeeded", []string{"user:" + alice, m}},
		{"exchange", "exchange.status", "succeeded", []string{"user:" + alice, m}},
		{"card_transaction", "card.transaction", "pending", []string{"user:" + alice, m}},
		{"order_status", "order.status", "succeeded", []string{"user:" + alice, m}},
		{"payment_link", "payment_link.status", "succeeded", []string{m}},
		// One-time codes: the user's channel, never the merchant's.
		{"card_3ds_code", "card.3ds_code", "info", []string{"user:" + alice}},
		{"card_activation_code", "card.activation_code", "info", []string{"user:" + alice}},
	}
	if len(cases) != len(fixtures) {
		t.Fatalf("%d cases for %d fixtures", len(cases), len(fixtures))
	}
	n := heraldtest.Start(t, heraldtest.Config())
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			chans, ev := n.Deliver(t, partner.Slug, fixtures[tc.fixture])
			if strings.Join(chans, " ") != strings.Join(tc.channels, " ") {
				t.Fatalf("channels %v, want %v", chans, tc.channels)
			}
			if ev.Type != tc.typ || ev.Status != tc.status {
				t.Fatalf("event %+v", ev)
			}
		})
	}
}

// The seed's user status payload, exactly as P100 documents it.
func TestUserStatus_SeedPayload(t *testing.T) {
	body := heraldtest.Fixtures(t, partner.Slug)["user_status"]
	ev, err := partner.Parse(&ingress.Request{Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if ev.User != alice || ev.Details["user_status"] != "ACTIVE_EXTENDED" || ev.Details["cards_enabled"] != true || ev.Rank != 2 {
		t.Fatalf("%+v", ev)
	}
	for k, want := range map[string]string{"balance_eur": "0.00 EUR", "balance_usdc": "0.000000 USDC", "balance_btc": "0.00000000 BTC", "balance_doge": "0.00000000 DOGE"} {
		if got := ev.Amounts[k].Value + " " + ev.Amounts[k].Currency; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if len(ev.Amounts) != 7 || len(ev.Details["balances"].([]any)) != 7 {
		t.Fatalf("want 7 balances: %v", ev.Amounts)
	}
	// Per-network limits and rates keep their digits: no float touched them.
	b, _ := json.Marshal(ev.Details)
	for _, s := range []string{`"minWithdrawal":0.00005`, `"rate":99827.60682136`, `"feeWithdrawal":0.5`, `"name":"sepolia"`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("details lack %s: %s", s, b)
		}
	}
}

// userStatus builds a user status webhook whose balances are given as
// JSON arrays.
func userStatus(fiat, crypto string) []byte {
	return []byte(`{"externalUserId":"` + alice + `","balances":{"fiatBalances":` + fiat + `,"cryptoBalances":` + crypto + `}}`)
}

// Balances may carry different statuses: the user's is the highest ranked,
// wherever it is.
func TestUserStatus_HighestBalanceStatus(t *testing.T) {
	const (
		eurActive   = `{"name":"eur","amount":"0.00","status":"ACTIVE"}`
		eurExtended = `{"name":"eur","amount":"0.00","status":"ACTIVE_EXTENDED"}`
		btcActive   = `{"name":"btc","amount":"0.00000000","status":"ACTIVE"}`
		btcExtended = `{"name":"btc","amount":"0.00000000","status":"ACTIVE_EXTENDED"}`
		usdcActive  = `{"name":"usdc","amount":"0.000000","status":"ACTIVE"}`
		ltc         = `{"name":"ltc","amount":"0.00000000"}`
	)
	for name, body := range map[string][]byte{
		"fiat active, crypto extended": userStatus(`[`+eurActive+`]`, `[`+btcExtended+`]`),
		"fiat extended, crypto active": userStatus(`[`+eurExtended+`]`, `[`+btcActive+`]`),
		"extended after active":        userStatus(`[]`, `[`+ltc+`,`+usdcActive+`,`+btcExtended+`]`),
		"extended before active":       userStatus(`[]`, `[`+btcExtended+`,`+ltc+`,`+usdcActive+`]`),
		"lower case":                   userStatus(`[`+eurActive+`]`, `[`+strings.Replace(btcExtended, "ACTIVE_EXTENDED", "active_extended", 1)+`]`),
	} {
		ev, err := partner.Parse(&ingress.Request{Body: body})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ev.Details["user_status"] != "ACTIVE_EXTENDED" || ev.Details["cards_enabled"] != true || ev.Rank != 2 {
			t.Errorf("%s: %v, rank %d", name, ev.Details, ev.Rank)
		}
	}
	ev, err := partner.Parse(&ingress.Request{Body: userStatus(`[`+eurActive+`]`, `[`+btcActive+`]`)})
	if err != nil || ev.Details["user_status"] != "ACTIVE" || ev.Details["cards_enabled"] != false || ev.Rank != 1 {
		t.Fatalf("all active: %v %v", ev, err)
	}
}

// A balance status herald does not know does not lose the activation the
// others carry: the event is published with the known status, and the
// unknown one stays on its balance.
func TestUserStatus_UnknownBalanceStatusBesideAKnownOne(t *testing.T) {
	for name, tc := range map[string]struct {
		body []byte
		want string
	}{
		"unknown first": {userStatus(`[{"name":"eur","amount":"0.00","status":"PENDING"}]`, `[{"name":"btc","amount":"0","status":"ACTIVE"}]`), "ACTIVE"},
		"unknown last":  {userStatus(`[{"name":"eur","amount":"0.00","status":"ACTIVE_EXTENDED"}]`, `[{"name":"btc","amount":"0","status":"PENDING"}]`), "ACTIVE_EXTENDED"},
	} {
		ev, err := partner.Parse(&ingress.Request{Body: tc.body})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ev.Details["user_status"] != tc.want {
			t.Errorf("%s: user_status %v, want %s", name, ev.Details["user_status"], tc.want)
		}
		b, _ := json.Marshal(ev.Details["balances"])
		if !strings.Contains(string(b), `"status":"PENDING"`) {
			t.Errorf("%s: the unknown status is lost: %s", name, b)
		}
	}
	n := heraldtest.Start(t, heraldtest.Config())
	body := userStatus(`[{"name":"eur","amount":"0.00","status":"ACTIVE"}]`, `[{"name":"btc","amount":"0","status":"PENDING"}]`)
	if code, res := n.Ingress(t, partner.Slug, body); code != http.StatusOK || res["status"] != "published" {
		t.Fatalf("%d %v", code, res)
	}
}

// A balance whose name cannot key an amount (missing, or not a currency
// name) is kept with its balances' details; the others' amounts are the
// provider's digits as before, and the activation is published.
func TestUserStatus_BadlyNamedBalanceIsKept(t *testing.T) {
	body := userStatus(`[{"id":"f1","name":"eur","amount":"12.50","status":"ACTIVE_EXTENDED"}]`,
		`[{"id":"c1","name":"usdt-trc20","amount":"7.000000","wallet":"TXYZ"},`+
			`{"id":"c2","amount":0.00012300},`+
			`{"id":"c3","name":"btc","amount":0.00012300}]`)
	ev, err := partner.Parse(&ingress.Request{Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Details["user_status"] != "ACTIVE_EXTENDED" {
		t.Errorf("user_status %v", ev.Details["user_status"])
	}
	want := ingress.Amounts{
		"balance_eur": {Value: "12.50", Currency: "EUR"},
		"balance_btc": {Value: "0.00012300", Currency: "BTC"},
	}
	if len(ev.Amounts) != len(want) {
		t.Errorf("amounts %v, want %v", ev.Amounts, want)
	}
	for k, am := range want {
		if ev.Amounts[k] != am {
			t.Errorf("%s = %+v, want %+v", k, ev.Amounts[k], am)
		}
	}
	list := ev.Details["balances"].([]any)
	if len(list) != 4 {
		t.Fatalf("%d balances: %v", len(list), list)
	}
	b, _ := json.Marshal(list)
	for _, s := range []string{
		`{"amount":"7.000000","id":"c1","name":"usdt-trc20","type":"crypto","wallet":"TXYZ"}`,
		`{"amount":"0.00012300","id":"c2","type":"crypto"}`,
	} {
		if !strings.Contains(string(b), s) {
			t.Errorf("balances lack %s: %s", s, b)
		}
	}
	n := heraldtest.Start(t, heraldtest.Config())
	if code, res := n.Ingress(t, partner.Slug, body); code != http.StatusOK || res["status"] != "published" {
		t.Fatalf("%d %v", code, res)
	}
}

// A code is a secret of one user: only that user's channel gets it; it is
// not in the event id (which is logged), and a dead letter hides it.
func TestOneTimeCodes(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, partner.Slug)
	n := heraldtest.Start(t, heraldtest.Config())
	for fixture, code := range map[string]string{"card_3ds_code": "482913", "card_activation_code": "73920415"} {
		status, res := n.Ingress(t, partner.Slug, fixtures[fixture])
		if status != http.StatusOK || strings.Contains(res["event"].(string), code) {
			t.Fatalf("%s: %d %v", fixture, status, res)
		}
		evs := n.Events(t, "user:"+alice)
		if !strings.Contains(string(evs[len(evs)-1].Raw), code) {
			t.Fatalf("%s: the user did not get the code", fixture)
		}
	}
	if evs := n.Events(t, "merchant:acme"); len(evs) != 0 {
		t.Fatalf("the merchant got %d code events", len(evs))
	}
	// A code webhook without its user is refused and kept redacted; so is
	// one that is not even JSON.
	for _, body := range []string{
		`{"event_type":"card.3ds_code","data":{"cardId":"c","code":"551177"}}`,
		`{"event_type":"card.activation_code","data":{"externalUserId":"u","activationCode":551177,}`,
	} {
		if status, _ := n.Ingress(t, partner.Slug, []byte(body)); status != http.StatusBadRequest {
			t.Fatalf("%s: %d", body, status)
		}
		_, res := n.Get(t, "/v1/deadletters?limit=1")
		dl := res["deadletters"].([]any)[0].(map[string]any)
		if strings.Contains(dl["body"].(string), "551177") || !strings.Contains(dl["body"].(string), "[redacted]") {
			t.Fatalf("dead letter kept the code: %v", dl)
		}
	}
}

func TestCardNumbersAreMasked(t *testing.T) {
	body := heraldtest.Fixtures(t, partner.Slug)["card_transaction"]
	ev, err := partner.Parse(&ingress.Request{Body: body})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ev)
	if strings.Contains(string(b), "5375411234567890") || ev.Details["card_number"] != "537541******7890" {
		t.Fatalf("card number published: %s", b)
	}
}

// P100 sends its secret token as the whole Authorization header.
func TestAuthorizationToken(t *testing.T) {
	body := heraldtest.Fixtures(t, partner.Slug)["wallet_created"]
	n := heraldtest.Start(t, heraldtest.Config())
	h := http.Header{}
	partner.Sign(h, http.MethodPost, "/ingress/partner", body, ingress.Config{Secret: heraldtest.ProviderSecret}, time.Now())
	if code, res := n.Post(t, "/ingress/partner", body, h); code != http.StatusOK {
		t.Fatalf("bare token: %d %v", code, res)
	}
	for _, auth := range []string{"", "wrong", heraldtest.ProviderSecret + "x", "Basic " + heraldtest.ProviderSecret} {
		if code, _ := n.Post(t, "/ingress/partner", body, http.Header{"Authorization": {auth}}); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d", auth, code)
		}
	}
}

func TestParse_DedupIDs(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, partner.Slug)
	parse := func(body []byte, secret string) *ingress.Event {
		t.Helper()
		ev, err := partner.Parse(&ingress.Request{Body: body, Config: ingress.Config{Secret: secret}})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	// (id, status) where the payload has them.
	if id := parse(fixtures["sepa_transfer"], "s").ID; id != "partner:transfer.sepa:123f6603-5a71-45c3-a222-1de369bb1c4d:SUCCESSFUL" {
		t.Errorf("sepa transfer id %s", id)
	}
	// Otherwise a hash of the body, the same for the same body whatever its
	// spacing, another for another code.
	code := fixtures["card_activation_code"]
	a, b := parse(code, "s"), parse([]byte(strings.ReplaceAll(string(code), "\n", "")), "s")
	c := parse([]byte(strings.Replace(string(code), "73920415", "73920416", 1)), "s")
	if a.ID != b.ID || a.ID == c.ID {
		t.Errorf("ids %s %s %s", a.ID, b.ID, c.ID)
	}
}

// A status that arrives after a later one is published stale: a deposit's
// WAITING_FOR_TR_DATA after its COMPLETED, a user's ACTIVE after
// ACTIVE_EXTENDED.
func TestOutOfOrderIsPublishedStale(t *testing.T) {
	fixtures := heraldtest.Fixtures(t, partner.Slug)
	completed := fixtures["crypto_deposit_completed"]
	waiting := []byte(strings.Replace(string(completed), `"COMPLETED"`, `"WAITING_FOR_TR_DATA"`, 1))
	extended := fixtures["user_status"]
	active := []byte(`{"externalUserId":"` + alice + `","status":"ACTIVE"}`)
	n := heraldtest.Start(t, heraldtest.Config())
	for i, body := range [][]byte{completed, waiting, extended, active} {
		if code, res := n.Ingress(t, partner.Slug, body); code != http.StatusOK || res["status"] != "published" {
			t.Fatalf("step %d: %d %v", i, code, res)
		}
	}
	evs := n.Events(t, "user:"+alice)
	if len(evs) != 4 {
		t.Fatalf("%d events", len(evs))
	}
	if evs[0].Stale || !evs[1].Stale || evs[1].CurrentStatus != "succeeded" || evs[1].Status != "pending" {
		t.Errorf("deposit: %+v / %+v", evs[0], evs[1])
	}
	if evs[2].Stale || !evs[3].Stale || evs[3].Details["user_status"] != "ACTIVE" {
		t.Errorf("user: %+v / %+v", evs[2], evs[3])
	}
}

// A user rejected may try again: the new attempt's pending, later than the
// rejection, is the current status, not stale. A pending older than the
// rejection, delivered late, is stale; so is one without a time.
func TestKYCNewAttemptAfterRejectionIsNotStale(t *testing.T) {
	kyc := func(status, at string) []byte {
		b := `{"event_type":"kyc.status_changed","data":{"externalUserId":"` + alice + `","status":"` + status + `"`
		if at != "" {
			b += `,"updatedAt":"` + at + `"`
		}
		return []byte(b + `}}`)
	}
	n := heraldtest.Start(t, heraldtest.Config())
	steps := []struct {
		body    []byte
		stale   bool
		current string
	}{
		{kyc("REJECTED", "2025-08-04T16:45:00Z"), false, ""},
		{kyc("PENDING", "2025-08-04T10:00:00Z"), true, "rejected"}, // the first attempt's, late
		{kyc("PENDING", "2025-08-05T09:00:00Z"), false, ""},        // the second attempt
		{kyc("APPROVED", "2025-08-05T09:30:00Z"), false, ""},       // its outcome
		{kyc("PENDING", "2025-08-05T09:30:00Z"), true, "approved"}, // same time: the final status stands
		{kyc("PENDING", ""), true, "approved"},                     // no time
	}
	for i, step := range steps {
		if code, res := n.Ingress(t, partner.Slug, step.body); code != http.StatusOK || res["status"] != "published" {
			t.Fatalf("step %d: %d %v", i, code, res)
		}
	}
	evs := n.Events(t, "user:"+alice)
	if len(evs) != len(steps) {
		t.Fatalf("%d events", len(evs))
	}
	for i, step := range steps {
		if evs[i].Stale != step.stale || evs[i].CurrentStatus != step.current {
			t.Errorf("step %d: stale %v, current %q; want %v, %q", i, evs[i].Stale, evs[i].CurrentStatus, step.stale, step.current)
		}
	}
}

// A SEPA transfer without event_type is recognised by its IBAN, also when
// it names its user, which would otherwise make it a user status.
func TestParse_SEPATransferNamingItsUser(t *testing.T) {
	ev, err := partner.Parse(&ingress.Request{Body: []byte(`{"id":"t1","externalUserId":"` + alice + `",` +
		`"destinationIban":"PL49109024028743516259813188","status":"SUCCESSFUL","amount":"3.8","currency":"eur"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "transfer.sepa" || ev.Status != ingress.StatusSucceeded || ev.User != alice || ev.Amounts["amount"].Value != "3.8" {
		t.Fatalf("%+v", ev)
	}
}

func TestParse_Refusals(t *testing.T) {
	heraldtest.CheckRefusals(t, partner.Parse, ingress.ErrUnknownEvent, map[string]string{
		"unknown event_type":  `{"event_type":"card.frozen","data":{}}`,
		"unrecognised shape":  `{"hello":"world"}`,
		"unknown status":      `{"event_type":"exchange.status_changed","data":{"id":"1","status":"LIMBO"}}`,
		"unknown user status": `{"externalUserId":"u","status":"SUSPENDED"}`,
		// No balance says a status herald knows: as an unknown user status.
		"unknown balance statuses": `{"externalUserId":"u","balances":{"fiatBalances":[{"name":"eur","amount":"1","status":"PENDING"}],` +
			`"cryptoBalances":[{"name":"btc","amount":"0","status":"FROZEN"}]}}`,
	})
	heraldtest.CheckRefusals(t, partner.Parse, ingress.ErrMalformed, map[string]string{
		"no status":            `{"event_type":"exchange.status_changed","data":{"id":"1"}}`,
		"event_type not text":  `{"event_type":{},"data":{}}`,
		"data not object":      `{"event_type":"wallet.created","data":[1]}`,
		"amount as word":       `{"event_type":"exchange.status_changed","data":{"id":"1","status":"COMPLETED","toAmount":"lots"}}`,
		"kyc without user":     `{"event_type":"kyc.status_changed","data":{"status":"APPROVED"}}`,
		"balances not array":   `{"externalUserId":"u","balances":{"fiatBalances":{}}}`,
		"balance not object":   `{"externalUserId":"u","balances":{"fiatBalances":["eur"]}}`,
		"nameless, bad amount": `{"externalUserId":"u","balances":{"fiatBalances":[{"amount":"lots"}]}}`,
		"bad date":             `{"event_type":"wallet.created","data":{"id":"w","createdAt":"today"}}`,
		"not JSON":             `{"event_type":`,
	})
}

func FuzzParse(f *testing.F) {
	heraldtest.AddFixtures(f, partner.Slug)
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := partner.Parse(&ingress.Request{Body: body})
		heraldtest.CheckParse(t, body, ev, err)
		if err == nil && strings.Contains(ev.Type, "code") && (ev.Route != ingress.RouteUserOnly || ev.User == "") {
			t.Fatalf("a code event that is not for one user only: %+v", ev)
		}
	})
}

// A P2P transfer whose receiver id is of the wrong type still reaches the
// sender and the merchant: only the receiver's copy is lost.
func TestP2PWithABadReceiverStillReachesTheSender(t *testing.T) {
	body := `{"event_type":"p2p_transfer.status_changed","data":{"transferId":"p2p-9","senderExternalUserId":"` + alice +
		`","receiverExternalUserId":{"id":1},"amount":"1.00","currency":"eur","fee":"0.00","status":"COMPLETED"}}`
	ev, err := partner.Parse(&ingress.Request{Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	if ev.User != alice || ev.Counterparty != "" {
		t.Fatalf("user %q, counterparty %q", ev.User, ev.Counterparty)
	}
}
