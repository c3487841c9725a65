// Package gateway is the ingress adapter for the crypto processing
// gateway (its webhooks are Calypso Finance's): invoices and their
// payments, customer purses (deposit addresses), fiat orders and
// crypto-to-fiat withdrawals ("fiat applier"), payouts, and wallet top-ups.
// Every webhook is an envelope {requestId, id, createdDate, level, service,
// eventType, data}. The event id is the envelope id: requestId names the
// webhook subscription, not the event.
//
// Authenticity: the gateway signs each webhook with the header Sign, the
// lowercase hex HMAC-SHA512 of the raw body under the subscription's
// secret key (HERALD_INGRESS_GATEWAY_SECRET); the header Key carries the
// subscription's public key and is not checked (herald holds one secret
// per provider). Nothing signed carries a time, so a captured request could
// be replayed: it has the same envelope id and is answered as a duplicate
// within the dedup window (72h; the gateway retries for about 34h).
package gateway

import (
	"crypto/sha512"
	"regexp"
	"strings"

	"herald/ingress"
)

// Slug is the provider's name in URLs and configuration.
const Slug = "gateway"

// SignatureHeader carries the gateway's signature of the body.
const SignatureHeader = "Sign"

// signature is how the gateway signs: Sign holds the hex HMAC-SHA512 of
// the raw body.
var signature = ingress.BodySignature{Header: SignatureHeader, Hash: sha512.New}

// Provider returns the gateway provider.
func Provider() ingress.Provider {
	return ingress.Provider{Slug: Slug, Parse: Parse, Verify: signature.Verify, Sign: signature.Sign}
}

// spec is what herald makes of one eventType: its status, and the
// transaction it is a step of (kind, the data member naming it, and the
// step's rank). PAYOUT_CHANGE_STATUS takes status and rank from
// payoutStatus.
type spec struct {
	status    string
	txn, key  string
	rank      int
	fromState bool
}

// events lists every eventType the gateway documents.
var events = map[string]spec{
	// An invoice: created, maybe waiting for the merchant, then paid or
	// expired, then moved to the merchant's account.
	"INVOICE_CREATE_INVOICE":                   {ingress.StatusPending, "invoice", "parentExternalId", 1, false},
	"INVOICE_CREATE_UNLIMITED_INVOICE":         {ingress.StatusPending, "invoice", "parentExternalId", 1, false},
	"INVOICE_PENDING_INTERVENTION":             {ingress.StatusPending, "invoice", "parentExternalId", 2, false},
	"INVOICE_PAID":                             {ingress.StatusSucceeded, "invoice", "parentExternalId", 3, false},
	"INVOICE_EXPIRED":                          {ingress.StatusExpired, "invoice", "parentExternalId", 3, false},
	"INVOICE_TRANSLATION_TO_ACCOUNT_COMPLETED": {ingress.StatusSucceeded, "invoice", "parentExternalId", 4, false},
	// One payment into an invoice, by its blockchain transaction: seen in
	// the mempool, checked by compliance, then received or declined.
	"INVOICE_MEMPOOL_FOUND":              {ingress.StatusPending, "invoice_payment", "transactionHash", 1, false},
	"INVOICE_COMPLIANCE_CHECK":           {ingress.StatusPending, "invoice_payment", "transactionHash", 2, false},
	"INVOICE_FUNDS_RECEIVED_FOR_INVOICE": {ingress.StatusSucceeded, "invoice_payment", "transactionHash", 3, false},
	"INVOICE_COMPLIANCE_DECLINED":        {ingress.StatusRejected, "invoice_payment", "transactionHash", 3, false},
	// One payment into a customer's purse.
	"CUSTOMER_PURSE_MEM_POOL_FOUND":           {ingress.StatusPending, "purse_payment", "transactionId", 1, false},
	"CUSTOMER_PURSE_PENDING_COMPLIANCE":       {ingress.StatusPending, "purse_payment", "transactionId", 2, false},
	"CUSTOMER_PURSE_FUNDS_RECEIVED_FOR_PURSE": {ingress.StatusSucceeded, "purse_payment", "transactionId", 3, false},
	"CUSTOMER_PURSE_COMPLIANCE_DECLINED":      {ingress.StatusRejected, "purse_payment", "transactionId", 3, false},
	"CUSTOMER_PURSE_EXPIRED":                  {status: ingress.StatusExpired},
	// A payout: its states (see payoutStates), confirmation, validation.
	"PAYOUT_CHANGE_STATUS":    {"", "payout", "parentExternalId", 0, true},
	"PAYOUT_CONFIRMED":        {ingress.StatusApproved, "payout", "parentExternalId", 3, false},
	"PAYOUT_VALIDATION_ERROR": {ingress.StatusFailed, "payout", "parentExternalId", 5, false},
	// A fiat order (fiat in) and a crypto-to-fiat order (fiat out): one
	// final outcome each.
	"FIAT_APPLIER_FIAT_FUNDS_RECEIVED": {ingress.StatusSucceeded, "fiat_order", "parentExternalId", 2, false},
	"FIAT_APPLIER_ORDER_UNPAID":        {ingress.StatusExpired, "fiat_order", "parentExternalId", 2, false},
	"FIAT_APPLIER_PAYMENT_FAILED":      {ingress.StatusFailed, "fiat_order", "parentExternalId", 2, false},
	"FIAT_APPLIER_ADJUSTMENT":          {status: ingress.StatusInfo},
	"FIAT_APPLIER_WITHDRAWAL_SUCCESS":  {ingress.StatusSucceeded, "c2f_order", "parentExternalId", 2, false},
	"FIAT_APPLIER_WITHDRAWAL_FAILED":   {ingress.StatusFailed, "c2f_order", "parentExternalId", 2, false},
	// A top-up of the merchant's wallet, by blockchain transaction.
	"TOP_UP_COMPLIANCE_CHECK":        {ingress.StatusPending, "top_up", "transactionHash", 1, false},
	"TOP_UP_COMPLIANCE_DECLINED":     {ingress.StatusRejected, "top_up", "transactionHash", 2, false},
	"WALLET_FUNDS_DELIVERED_ACCOUNT": {ingress.StatusSucceeded, "top_up", "transactionHash", 2, false},
}

// payoutStates are the gateway's payout states in order.
var payoutStates = map[string]struct {
	status string
	rank   int
}{
	"CREATION_IN_PROGRESS": {ingress.StatusPending, 1},
	"PENDING_CONFIRMATION": {ingress.StatusPending, 2},
	"CONFIRMED":            {ingress.StatusApproved, 3},
	"IN_PROGRESS":          {ingress.StatusPending, 4},
	"COMPLETED":            {ingress.StatusSucceeded, 5},
	"FAILED":               {ingress.StatusFailed, 5},
	"CANCELED":             {ingress.StatusCancelled, 5},
	"CANCELLED":            {ingress.StatusCancelled, 5},
	"DECLINED":             {ingress.StatusRejected, 5},
}

// services are the eventType prefixes: INVOICE_PAID is invoice.paid,
// FIAT_APPLIER_ORDER_UNPAID is fiat_applier.order_unpaid.
var services = []string{"INVOICE_", "FIAT_APPLIER_", "CUSTOMER_PURSE_", "PAYOUT_", "TOP_UP_", "WALLET_"}

// TypeOf returns the event type of an eventType: the service prefix and
// the rest, lower case, joined by a dot.
func TypeOf(eventType string) string {
	for _, p := range services {
		if rest, ok := strings.CutPrefix(eventType, p); ok {
			return strings.ToLower(strings.TrimSuffix(p, "_") + "." + rest)
		}
	}
	return strings.ToLower(eventType)
}

// consumed are the data members that become the user or amounts rather
// than details. externalId, "merchant ID of invoice", is the merchant's
// own reference for an invoice or order (beside parentExternalId, the
// gateway's): a detail, not who the merchant is.
var consumed = map[string]bool{
	"customerId": true, "type": true,
	"amount": true, "realAmount": true, "serviceFee": true, "fiatAmount": true,
	"sumAfterAdjustment": true, "rate": true,
}

// Parse implements ingress.Provider.Parse.
func Parse(r *ingress.Request) (*ingress.Event, error) {
	env, err := ingress.DecodeObject(r.Body)
	if err != nil {
		return nil, err
	}
	id, err := env.RequiredID("id")
	if err != nil {
		return nil, err
	}
	eventType, err := env.RequiredString("eventType")
	if err != nil {
		return nil, err
	}
	sp, ok := events[eventType]
	if !ok {
		return nil, ingress.Unknown("unknown eventType %.64q", eventType)
	}
	data, err := env.RequiredObject("data")
	if err != nil {
		return nil, err
	}
	ev := &ingress.Event{ID: Slug + ":" + id, Type: TypeOf(eventType), Status: sp.status, Details: map[string]any{"event_type": eventType}}
	if err := envelope(env, ev); err != nil {
		return nil, err
	}
	if sp.fromState {
		if err := payoutState(data, &sp); err != nil {
			return nil, err
		}
		ev.Status = sp.status
	}
	if sp.txn != "" {
		key, err := data.ID(sp.key)
		if err != nil {
			return nil, err
		}
		if key != "" {
			ev.Txn, ev.Rank = Slug+":"+sp.txn+":"+key, sp.rank
		}
	}
	if ev.User, err = data.ID("customerId"); err != nil {
		return nil, err
	}
	if ev.Amounts, err = amounts(data); err != nil {
		return nil, err
	}
	data.CopyRest(ev.Details, consumed)
	if ev.Raw, err = ingress.Compact(r.Body); err != nil {
		return nil, err
	}
	return ev, nil
}

// envelope reads the envelope's time, level and names. A WARNING
// (compliance checks, validation errors) is also an operational alert.
func envelope(env ingress.Object, ev *ingress.Event) error {
	var err error
	if ev.OccurredAt, err = env.Time("createdDate"); err != nil {
		return err
	}
	level, err := env.String("level")
	if err != nil {
		return err
	}
	if level == "WARNING" {
		ev.Route = ingress.RouteWithAlert
	}
	env.CopyTo(ev.Details, "level", "level", "service", "service", "requestId", "request_id")
	return nil
}

func payoutState(data ingress.Object, sp *spec) error {
	state, err := data.RequiredString("payoutStatus")
	if err != nil {
		return err
	}
	ps, ok := payoutStates[state]
	if !ok {
		return ingress.Unknown("unknown payoutStatus %.64q", state)
	}
	sp.status, sp.rank = ps.status, ps.rank
	return nil
}

var currencyCode = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{1,11}$`)

// amounts reads the sums of data. fiatAmount is a number (or numeric
// string) in fiatCurrency, or an object of amounts by currency
// ({"EUR": 31.99, "USD": 36.84}), which become fiat_amount_eur, ….
func amounts(data ingress.Object) (ingress.Amounts, error) {
	currency, err := data.String("currency")
	if err != nil {
		return nil, err
	}
	// The gateway's INVOICE_CREATE_INVOICE example spells it fiatcurrency;
	// in FIAT_APPLIER_ADJUSTMENT it is a flag ("is fiat currency"), so
	// anything but a string is not a currency.
	fiat, _ := data["fiatCurrency"].(string)
	if fiat == "" {
		fiat, _ = data["fiatcurrency"].(string)
	}
	a := ingress.Amounts{}
	for _, f := range []struct{ name, key, currency string }{
		{"amount", "amount", currency},
		{"real_amount", "realAmount", currency},
		{"service_fee", "serviceFee", currency},
		{"sum_after_adjustment", "sumAfterAdjustment", currency},
		{"rate", "rate", fiat},
	} {
		if err := a.Take(f.name, data, f.key, f.currency); err != nil {
			return nil, err
		}
	}
	byCurrency, isObject := data["fiatAmount"].(map[string]any)
	if !isObject {
		return a, a.Take("fiat_amount", data, "fiatAmount", fiat)
	}
	by := ingress.Object(byCurrency)
	for cur := range by {
		if !currencyCode.MatchString(cur) {
			return nil, ingress.Malformed("fiatAmount: %.16q is not a currency", cur)
		}
		if err := a.Take("fiat_amount_"+strings.ToLower(cur), by, cur, cur); err != nil {
			return nil, err
		}
	}
	return a, nil
}
