// Package coinify is the ingress adapter for Coinify's partner webhooks:
// identification attempts (KYC) approved or rejected, the trade lifecycle
// (created, transfer in completed, completed, cancelled, expired,
// rejected) and completed OTC trades. Every webhook is an envelope
// {id, time, event, context}; Coinify repeats the envelope id when it
// retries, so the event id is built from it.
//
// Authenticity: Coinify signs each request with X-Coinify-Webhook-Signature,
// the lowercase hex HMAC-SHA256 of the raw body under the shared secret
// (HERALD_INGRESS_COINIFY_SECRET). Verify checks it over the bytes as
// received — never over re-serialized JSON, which is what Coinify's own
// JavaScript sample does and which only matches by luck. Coinify signs no
// timestamp, so a captured request could be replayed; a replay carries the
// same envelope id and is answered as a duplicate within the dedup window.
package coinify

import (
	"crypto/sha256"
	"strings"

	"herald/ingress"
)

// Slug is the provider's name in URLs and configuration.
const Slug = "coinify"

// SignatureHeader carries Coinify's signature of the body.
const SignatureHeader = "X-Coinify-Webhook-Signature"

// signature is how Coinify signs: X-Coinify-Webhook-Signature holds the
// hex HMAC-SHA256 of the raw body.
var signature = ingress.BodySignature{Header: SignatureHeader, Hash: sha256.New}

// Provider returns the Coinify provider.
func Provider() ingress.Provider {
	return ingress.Provider{Slug: Slug, Parse: Parse, Verify: signature.Verify, Sign: signature.Sign}
}

// event is what herald makes of one Coinify event name.
type event struct {
	status string
	// rank orders a trade's statuses (0: not a trade).
	rank int
}

// events lists every event Coinify documents. The type is the event name
// with hyphens as underscores (trade.transfer-in-completed →
// trade.transfer_in_completed).
var events = map[string]event{
	"identification-attempt.approved": {status: ingress.StatusApproved},
	"identification-attempt.rejected": {status: ingress.StatusRejected},
	"trade.created":                   {ingress.StatusPending, 1},
	"trade.transfer-in-completed":     {ingress.StatusPending, 2},
	"trade.completed":                 {ingress.StatusSucceeded, 3},
	"trade.cancelled":                 {ingress.StatusCancelled, 3},
	"trade.expired":                   {ingress.StatusExpired, 3},
	"trade.rejected":                  {ingress.StatusRejected, 3},
	"otc-trade.completed":             {ingress.StatusSucceeded, 3},
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
	name, err := env.RequiredString("event")
	if err != nil {
		return nil, err
	}
	spec, ok := events[name]
	if !ok {
		return nil, ingress.Unknown("unknown Coinify event %.64q", name)
	}
	ctx, err := env.RequiredObject("context")
	if err != nil {
		return nil, err
	}
	ev := &ingress.Event{
		ID:      Slug + ":" + id,
		Type:    strings.ReplaceAll(name, "-", "_"),
		Status:  spec.status,
		Details: map[string]any{"event": name},
	}
	if ev.OccurredAt, err = env.Time("time"); err != nil {
		return nil, err
	}
	if ev.User, err = ctx.RequiredID("traderId"); err != nil {
		return nil, err
	}
	if spec.rank == 0 {
		err = identification(ctx, ev)
	} else {
		kind, _, _ := strings.Cut(ev.Type, ".")
		err = trade(ctx, ev, kind, spec.rank)
	}
	if err != nil {
		return nil, err
	}
	if ev.Raw, err = ingress.Compact(r.Body); err != nil {
		return nil, err
	}
	return ev, nil
}

func identification(ctx ingress.Object, ev *ingress.Event) error {
	reason, err := ctx.String("rejectReason")
	if reason != "" {
		ev.Details["reject_reason"] = reason
	}
	return err
}

// trade reads the context of a trade or OTC trade event (kind "trade" or
// "otc_trade").
func trade(ctx ingress.Object, ev *ingress.Event, kind string, rank int) error {
	tradeID, err := ctx.RequiredID("id")
	if err != nil {
		return err
	}
	ev.Txn, ev.Rank = Slug+":"+kind+":"+tradeID, rank
	ev.Details["trade_id"] = tradeID
	ctx.CopyTo(ev.Details, "residenceCountry", "residence_country")
	created, err := ctx.Time("createTime")
	if err != nil {
		return err
	}
	if created != "" {
		ev.Details["created_at"] = created
	}
	if err := partner(ctx, ev); err != nil {
		return err
	}
	a := ingress.Amounts{}
	if err := a.Take("eur_amount", ctx, "eurAmount", "EUR"); err != nil {
		return err
	}
	for _, side := range []struct{ key, name string }{{"transferIn", "transfer_in"}, {"transferOut", "transfer_out"}} {
		t, err := ctx.Object(side.key)
		if err != nil {
			return err
		}
		if t == nil {
			continue
		}
		if err := transfer(t, side.name, a, ev.Details); err != nil {
			return err
		}
	}
	if err := money(a, "partner_fee", ctx, "partnerFee"); err != nil {
		return err
	}
	if err := money(a, "total_fee", ctx, "totalFee"); err != nil {
		return err
	}
	ev.Amounts = a
	return nil
}

// partner reads partnerContext into details. It is whatever the partner
// attached to the trade (in Coinify's example, clientId is the trader's
// id), so it names no merchant: the configured one applies.
func partner(ctx ingress.Object, ev *ingress.Event) error {
	pc, err := ctx.Object("partnerContext")
	if err != nil || pc == nil {
		return err
	}
	for _, f := range [][2]string{{"clientId", "partner_client_id"}, {"refId", "partner_ref_id"}} {
		switch id, ok := ingress.IDString(pc[f[0]]); {
		case !ok: // not an id, but the partner's to choose: kept as sent
			ev.Details[f[1]] = pc[f[0]]
		case id != "":
			ev.Details[f[1]] = id
		}
	}
	return nil
}

// transfer reads one side of a trade (transferIn or transferOut).
func transfer(t ingress.Object, name string, a ingress.Amounts, details map[string]any) error {
	if err := money(a, name, t, "amount"); err != nil {
		return err
	}
	if err := money(a, name+"_fee", t, "totalFee"); err != nil {
		return err
	}
	// Coinify: "If this is set, we cannot guarantee the amount or fee".
	if fee, ok := a[name+"_fee"]; ok && a[name].Approximate {
		fee.Approximate = true
		a[name+"_fee"] = fee
	}
	t.CopyTo(details, "medium", name+"_medium")
	d, err := t.Object("details")
	if err != nil {
		return err
	}
	d.CopyTo(details, "address", name+"_address", "transaction", name+"_transaction")
	when, err := t.Time("transactionTime")
	if when != "" {
		details[name+"_time"] = when
	}
	return err
}

// money reads a Coinify sum: {"amount": 103, "currency": "EUR",
// "isApproximate": false} in trade events, or the same one level deeper,
// {"amount": {"amount": 100.00, "currency": "EUR"}}, in OTC trades.
func money(a ingress.Amounts, name string, o ingress.Object, key string) error {
	m, err := o.Object(key)
	if err != nil || m == nil {
		return err
	}
	approx, err := approximate(m, key)
	if err != nil {
		return err
	}
	if _, nested := m["amount"].(map[string]any); nested {
		m, _ = m.Object("amount")
		inner, err := approximate(m, key)
		if err != nil {
			return err
		}
		approx = approx || inner
	}
	n, err := m.Number("amount")
	if err == nil && n == "" {
		err = ingress.Malformed("%s.amount: missing", key)
	}
	if err != nil {
		return err
	}
	currency, err := m.String("currency")
	if err != nil {
		return err
	}
	if err := a.Add(name, n, currency); err != nil {
		return err
	}
	if approx {
		am := a[name]
		am.Approximate = true
		a[name] = am
	}
	return nil
}

func approximate(m ingress.Object, key string) (bool, error) {
	switch v := m["isApproximate"].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	}
	return false, ingress.Malformed("%s.isApproximate: want a boolean", key)
}
