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
// is the payload's "status" or, as in P100's example, the balances'
// statuses (see balancesStatus); ACTIVE when neither says.
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
	var statuses []string
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
			if st != "" {
				statuses = append(statuses, st)
			}
			list = append(list, entry)
		}
	}
	if status == "" {
		if status, err = balancesStatus(statuses); err != nil {
			return nil, err
		}
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

// balancesStatus is the user's status from its balances' statuses. The
// balances may differ (fiat ACTIVE, crypto ACTIVE_EXTENDED once the
// extra verification enabled cards), so the highest ranked one herald
// knows is the user's; a status herald does not know on one balance must
// not lose what the others say. Only when no balance carries a known
// status is the webhook unknown (a dead letter); when none carries a
// status at all the user is ACTIVE, since P100 sends this webhook only
// once standard KYC has passed.
func balancesStatus(statuses []string) (string, error) {
	best := ""
	for _, s := range statuses {
		s = strings.ToUpper(s)
		if userStates[s] > userStates[best] {
			best = s
		}
	}
	switch {
	case best != "":
		return best, nil
	case len(statuses) > 0:
		return "", ingress.Unknown("unknown user status %.64q", statuses[0])
	}
	return "ACTIVE", nil
}

// balance reads one generated balance: its amount becomes balance_<name>,
// the rest (wallet, rate, per-network withdrawal and deposit limits) a
// detail. A balance without a name that can be an amount's key (none, or
// one such as "usdt-trc20") is still the user's: it is kept as a detail
// with its name and amount as sent, rather than refusing the webhook and
// with it the other balances and the activation.
func balance(item any, kind string, a ingress.Amounts) (map[string]any, string, error) {
	m, ok := item.(map[string]any)
	if !ok {
		return nil, "", ingress.Malformed("%sBalances: want objects", kind)
	}
	b := ingress.Object(m)
	status, err := b.String("status")
	if err != nil {
		return nil, "", err
	}
	entry := map[string]any{"type": kind}
	if name, _ := b["name"].(string); currencyName.MatchString(name) {
		if err := a.Take("balance_"+strings.ToLower(name), b, "amount", name); err != nil {
			return nil, "", err
		}
		entry["currency"] = strings.ToUpper(name)
	} else {
		n, err := b.Number("amount")
		if err != nil {
			return nil, "", err
		}
		if n != "" {
			// Validated as every amount is, and kept as the provider's
			// digits.
			am, err := ingress.NewAmount(kind+"Balances: amount", n, "")
			if err != nil {
				return nil, "", err
			}
			entry["amount"] = am.Value
		}
		b.CopyTo(entry, "name", "name")
	}
	b.CopyTo(entry, "id", "id", "wallet", "wallet", "rate", "rate", "status", "status", "networkConfig", "networks")
	return entry, status, nil
}
