package partner

import (
	"crypto/sha256"
	"strings"
	"time"

	"herald/ingress"
)

// hook is what herald makes of one webhook (by event_type).
type hook struct {
	typ string
	// status is the event's status when the webhook has no status of its
	// own; otherwise the payload's status is read through states.
	status string
	states map[string]state
	// ids are the members naming the webhook's object, first present
	// wins; without one the event is named by a keyed hash of the body.
	ids []string
	// txn is the kind of transaction the statuses belong to ("" none);
	// byUser: the transaction is the user's own (a KYC verification).
	txn    string
	byUser bool
	// userKey names the user [externalUserId]; needUser: the event is
	// refused without one. otherKey names a second user the event goes
	// to as well (a transfer's receiver).
	userKey  string
	otherKey string
	needUser bool
	route    ingress.Route
	sums     []sum
}

// state is a P100 status as an event status and its rank.
type state struct {
	status string
	rank   int
}

// sum is one amount: its name in the event, its member, and the member
// holding its currency.
type sum struct{ name, key, currency string }

// transaction is the status vocabulary of P100's transfers, deposits,
// withdrawals, exchanges, orders, payment links and card transactions:
// every waiting state ranks before every final one.
var transaction = map[string]state{
	"CREATED": {ingress.StatusPending, 1}, "PENDING": {ingress.StatusPending, 1},
	"PROCESSING": {ingress.StatusPending, 1}, "IN_PROGRESS": {ingress.StatusPending, 1},
	"WAITING_FOR_TR_DATA": {ingress.StatusPending, 1}, "AUTHORIZED": {ingress.StatusPending, 1},
	"ACTIVE":     {ingress.StatusPending, 1},
	"SUCCESSFUL": {ingress.StatusSucceeded, 2}, "SUCCESS": {ingress.StatusSucceeded, 2},
	"COMPLETED": {ingress.StatusSucceeded, 2}, "SETTLED": {ingress.StatusSucceeded, 2},
	"PAID": {ingress.StatusSucceeded, 2}, "APPROVED": {ingress.StatusSucceeded, 2},
	"FAILED": {ingress.StatusFailed, 2}, "ERROR": {ingress.StatusFailed, 2},
	"CANCELLED": {ingress.StatusCancelled, 2}, "CANCELED": {ingress.StatusCancelled, 2},
	"REVERSED": {ingress.StatusCancelled, 2},
	"REJECTED": {ingress.StatusRejected, 2}, "DECLINED": {ingress.StatusRejected, 2},
	"EXPIRED": {ingress.StatusExpired, 2},
}

// verification is the status vocabulary of KYC and proof of address.
var verification = map[string]state{
	"PENDING": {ingress.StatusPending, 1}, "IN_REVIEW": {ingress.StatusPending, 1},
	"SUBMITTED": {ingress.StatusPending, 1},
	"APPROVED":  {ingress.StatusApproved, 2}, "VERIFIED": {ingress.StatusApproved, 2},
	"REJECTED": {ingress.StatusRejected, 2}, "DECLINED": {ingress.StatusRejected, 2},
}

// Sums common to transfers.
var (
	amountAndFee = []sum{{"amount", "amount", "currency"}, {"fee", "fee", "currency"}}
	conversion   = []sum{{"amount", "toAmount", "toCurrency"}, {"spent", "fromAmount", "fromCurrency"}, {"fee", "fee", "feeCurrency"}}
)

// hooks lists every webhook P100's index names, by event_type (the user
// status webhook is parsed by user).
var hooks = map[string]hook{
	"kyc_file.added":     {typ: "kyc_file.added", status: ingress.StatusInfo, ids: []string{"fileId"}, needUser: true},
	"poa.status_changed": {typ: "poa.verification", states: verification, txn: "poa", byUser: true, needUser: true},
	"kyc.status_changed": {typ: "kyc.verification", states: verification, txn: "kyc", byUser: true, needUser: true},
	"wallet.created":     {typ: "wallet.created", status: ingress.StatusSucceeded, ids: []string{"walletId", "id"}},
	"p2p_transfer.status_changed": {typ: "transfer.p2p", states: transaction, ids: []string{"transferId", "id"},
		txn: "p2p_transfer", userKey: "senderExternalUserId", otherKey: "receiverExternalUserId", sums: amountAndFee},
	"sepa_transfer.status_changed": {typ: "transfer.sepa", states: transaction, ids: []string{"id"},
		txn: "sepa_transfer", sums: amountAndFee},
	"sepa_deposit.status_changed": {typ: "deposit.sepa", states: transaction, ids: []string{"depositId", "id"},
		txn: "sepa_deposit", sums: amountAndFee},
	"crypto_withdrawal.status_changed": {typ: "withdrawal.crypto", states: transaction, ids: []string{"cryptoWithdrawalId", "id"},
		txn: "crypto_withdrawal", sums: []sum{{"amount", "amount", "currency"}, {"fee", "fee", "currency"}, {"network_fee", "networkFee", "currency"}}},
	"crypto_deposit.status_changed": {typ: "deposit.crypto", states: transaction, ids: []string{"cryptoDepositId", "id"},
		txn: "crypto_deposit", sums: amountAndFee},
	"exchange.status_changed": {typ: "exchange.status", states: transaction, ids: []string{"exchangeId", "id"},
		txn: "exchange", sums: conversion},
	"order.status_changed": {typ: "order.status", states: transaction, ids: []string{"orderId", "id"},
		txn: "order", sums: conversion},
	"payment_link.status_changed": {typ: "payment_link.status", states: transaction, ids: []string{"paymentLinkId", "id"},
		txn: "payment_link", sums: []sum{{"amount", "amount", "currency"}, {"paid_amount", "paidAmount", "currency"}}},
	"card_transaction.status_changed": {typ: "card.transaction", states: transaction, ids: []string{"transactionId", "id"},
		txn: "card_transaction", needUser: true, sums: []sum{{"amount", "amount", "currency"}, {"fee", "fee", "currency"},
			{"billing_amount", "billingAmount", "billingCurrency"}}},
	// One-time codes: the user's own channel only.
	"card.3ds_code": {typ: "card.3ds_code", status: ingress.StatusInfo, ids: []string{"authenticationId"},
		needUser: true, route: ingress.RouteUserOnly, sums: []sum{{"amount", "amount", "currency"}}},
	"card.activation_code": {typ: "card.activation_code", status: ingress.StatusInfo,
		needUser: true, route: ingress.RouteUserOnly},
}

// parse turns a webhook's payload into an event.
func (h hook) parse(p ingress.Object, r *ingress.Request) (*ingress.Event, error) {
	ev := &ingress.Event{Type: h.typ, Status: h.status, Route: h.route, Details: map[string]any{}}
	userKey := h.userKey
	if userKey == "" {
		userKey = "externalUserId"
	}
	var err error
	if ev.User, err = p.ID(userKey); err != nil {
		return nil, err
	}
	if ev.User == "" && h.needUser {
		return nil, ingress.Malformed("%s: missing", userKey)
	}
	if h.otherKey != "" {
		// A receiver id of the wrong type costs the receiver's copy
		// alone (it stays in details), never the sender's or the
		// merchant's.
		ev.Counterparty, _ = p.ID(h.otherKey)
	}
	id, err := firstID(p, h.ids)
	if err != nil {
		return nil, err
	}
	name := id
	if h.status == "" {
		st, provider, err := status(p, h.states)
		if err != nil {
			return nil, err
		}
		ev.Status, name = st.status, id+":"+provider
		if key := pick(h.byUser, ev.User, id); h.txn != "" && key != "" {
			ev.Txn, ev.Rank = Slug+":"+h.txn+":"+key, st.rank
		}
	}
	if id == "" {
		name = keyedHash(r)
	}
	ev.ID = Slug + ":" + h.typ + ":" + name
	if ev.OccurredAt, err = occurred(p); err != nil {
		return nil, err
	}
	if h.byUser && ev.Txn != "" {
		ev.Rank = attemptRank(ev.OccurredAt, ev.Rank)
	}
	a := ingress.Amounts{}
	skip := map[string]bool{userKey: true, "event_type": true}
	for _, s := range h.sums {
		currency, err := p.String(s.currency)
		if err != nil {
			return nil, err
		}
		if err := a.Take(s.name, p, s.key, currency); err != nil {
			return nil, err
		}
		skip[s.key] = true
	}
	ev.Amounts = a
	p.CopyRest(ev.Details, skip)
	return ev, nil
}

// status reads the payload's status through states.
func status(p ingress.Object, states map[string]state) (state, string, error) {
	s, err := p.RequiredString("status")
	if err != nil {
		return state{}, "", err
	}
	st, ok := states[strings.ToUpper(s)]
	if !ok {
		return state{}, "", ingress.Unknown("unknown status %.64q", s)
	}
	return st, strings.ToUpper(s), nil
}

func firstID(p ingress.Object, keys []string) (string, error) {
	for _, k := range keys {
		id, err := p.ID(k)
		if err != nil || id != "" {
			return id, err
		}
	}
	return "", nil
}

// attemptRank ranks a user's verification by its time first: a user
// rejected may try again, and the new attempt's pending comes after the
// rejection without being stale. Only a status older than the current one,
// by the provider's clock, is stale; at the same time (or without one) a
// final status still outranks a pending one.
func attemptRank(at string, rank int) int {
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return rank
	}
	return int(t.UnixMilli())*4 + rank
}

func pick(byUser bool, user, id string) string {
	if byUser {
		return user
	}
	return id
}

// occurred reads the webhook's time: its last change, else its creation.
func occurred(p ingress.Object) (string, error) {
	for _, k := range []string{"updatedAt", "createdAt", "timestamp"} {
		if t, err := p.Time(k); err != nil || t != "" {
			return t, err
		}
	}
	return "", nil
}

// keyedHash names a webhook that carries no id by its body: the same
// bytes (white space aside) give the same name, so retries deduplicate.
// The hash is keyed with the provider secret because such a body may hold
// a one-time code or a card number, and an event id is logged: a plain
// hash of a six-digit code among known fields could be reversed by trying
// every code.
func keyedHash(r *ingress.Request) string {
	body, err := ingress.Compact(r.Body)
	if err != nil {
		body = r.Body
	}
	return ingress.SignHex(sha256.New, r.Config.Secret, body)[:24]
}
