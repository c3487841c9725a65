package partner

import (
	"regexp"
	"strings"

	"herald/ingress"
)

// userStates are the user statuses, in order: ACTIVE after standard KYC,
// ACTIVE_EXTENDED after the extra verification that enables cards.
var userStates = map[string]int{"ACTIVE": 1, "ACTIVE_EXTENDED": 2}

var currencyName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,15}$`)

// user reads the user status webhook (/webhook/user/status): sent once a
// user's KYC passes, with the balances P100 generated for them. Its status
// is the payload's "status" or, as in P100's example, the fiat balances'
// status; ACTIVE when neither says.
func user(p ingress.Object, r *ingress.Request) (*ingress.Event, error) {
	id, err := p.RequiredID("externalUserId")
	if err != nil {
		return nil, err
	}
	status, err := p.String("status")
	if err != nil {
		return nil, err
	}
	balances, err := p.Object("balances")
	if err != nil {
		return nil, err
	}
	a := ingress.Amounts{}
	var list []any
	for _, kind := range []string{"fiat", "crypto"} {
		items, err := balances.Array(kind + "Balances")
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			entry, st, err := balance(item, kind, a)
			if err != nil {
				return nil, err
			}
			if status == "" {
				status = st
			}
			list = append(list, entry)
		}
	}
	if status == "" {
		status = "ACTIVE"
	}
	rank, ok := userStates[strings.ToUpper(status)]
	if !ok {
		return nil, ingress.Unknown("unknown user status %.64q", status)
	}
	ev := &ingress.Event{
		ID:      Slug + ":user.status:" + id + ":" + keyedHash(r),
		Type:    "user.status",
		Status:  ingress.StatusApproved,
		User:    id,
		Txn:     Slug + ":user:" + id,
		Rank:    rank,
		Amounts: a,
		Details: map[string]any{"user_status": strings.ToUpper(status), "cards_enabled": rank == 2},
	}
	if list != nil {
		ev.Details["balances"] = list
	}
	if ev.OccurredAt, err = occurred(p); err != nil {
		return nil, err
	}
	return ev, nil
}

// balance reads one generated balance: its amount becomes balance_<name>,
// the rest (wallet, rate, per-network withdrawal and deposit limits) a
// detail.
func balance(item any, kind string, a ingress.Amounts) (map[string]any, string, error) {
	m, ok := item.(map[string]any)
	if !ok {
		return nil, "", ingress.Malformed("%sBalances: want objects", kind)
	}
	b := ingress.Object(m)
	name, err := b.RequiredString("name")
	if err != nil {
		return nil, "", err
	}
	if !currencyName.MatchString(name) {
		return nil, "", ingress.Malformed("%sBalances: %.16q is not a currency name", kind, name)
	}
	if err := a.Take("balance_"+strings.ToLower(name), b, "amount", name); err != nil {
		return nil, "", err
	}
	status, err := b.String("status")
	if err != nil {
		return nil, "", err
	}
	entry := map[string]any{"type": kind, "currency": strings.ToUpper(name)}
	b.CopyTo(entry, "id", "id", "wallet", "wallet", "rate", "rate", "status", "status", "networkConfig", "networks")
	return entry, status, nil
}
