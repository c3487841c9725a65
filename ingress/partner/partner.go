// Package partner is the ingress adapter for the P100 partner banking
// API's webhooks: user status (balances generated and activated), KYC and
// proof-of-address verification, KYC files, wallets, P2P and SEPA
// transfers, SEPA and crypto deposits, crypto withdrawals, exchanges,
// orders, payment links, card transactions, and the card 3DS and
// activation codes.
//
// P100 posts each webhook to its own path on the partner's server
// (/webhook/user/status, …) and has no common envelope. herald receives
// them all at POST /ingress/partner and tells them apart by their body:
// an "event_type" member (with the payload in "data"), as P100's own
// crypto deposit example has it; or, for the two webhooks P100 documents
// without one, their shape (externalUserId with balances or status: user
// status; destinationIban: SEPA transfer). Shapes P100 does not publish
// are assumed and marked so in docs/EVENTS.md; unknown extra members are
// accepted everywhere.
//
// Authenticity: P100 does not sign webhooks; it sends the partner's secret
// token in the Authorization header. Verify accepts it bare (as P100
// documents) in constant time; the framework accepts "Bearer <secret>" and
// ?key= as for every provider. P100 retries five times within about two
// minutes, so parsing does nothing slow.
//
// Card 3DS and activation codes are secrets of one user: those events go
// to that user's channel only, never to the merchant's, their dedup id is
// not derived from the code, and dead letters have the codes redacted.
// Card numbers are masked everywhere.
package partner

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"

	"herald/ingress"
)

// Slug is the provider's name in URLs and configuration.
const Slug = "partner"

// Provider returns the partner provider.
func Provider() ingress.Provider {
	return ingress.Provider{Slug: Slug, Parse: Parse, Verify: Verify, VerifiesHead: true, Sign: Sign, Redact: Redact}
}

var errToken = errors.New("missing or wrong Authorization token")

// Verify accepts the secret token as the whole Authorization header.
func Verify(r *ingress.Request) error {
	tok := strings.TrimSpace(r.Header.Get("Authorization"))
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(r.Config.Secret)) != 1 {
		return errToken
	}
	return nil
}

// Sign sets the Authorization header P100 sends: the secret token.
func Sign(h http.Header, _, _ string, _ []byte, cfg ingress.Config, _ time.Time) {
	h.Set("Authorization", cfg.Secret)
}

// cards are the members that may hold a card number: masked everywhere.
var cards = map[string]func(string) string{
	"cardNumber": ingress.MaskCard, "pan": ingress.MaskCard,
}

// secrets are cards plus the one-time codes: what dead letters hide.
var secrets = map[string]func(string) string{
	"cardNumber": ingress.MaskCard, "pan": ingress.MaskCard,
	"code": ingress.Hide, "otp": ingress.Hide, "threeDsCode": ingress.Hide,
	"activationCode": ingress.Hide, "cvv": ingress.Hide, "pin": ingress.Hide,
}

// Redact hides card numbers and one-time codes in a dead letter.
func Redact(body []byte) []byte { return ingress.Redact(body, secrets) }

// Parse implements ingress.Provider.Parse.
func Parse(r *ingress.Request) (*ingress.Event, error) {
	// Everything below reads the masked body, so no card number reaches
	// details or raw.
	raw, err := ingress.Rewrite(r.Body, cards)
	if err != nil {
		return nil, err
	}
	body, err := ingress.DecodeObject(raw)
	if err != nil {
		return nil, err
	}
	name, payload, err := recognise(body)
	if err != nil {
		return nil, err
	}
	var ev *ingress.Event
	if name == userStatus {
		ev, err = user(payload, r)
	} else {
		ev, err = hooks[name].parse(payload, r)
	}
	if err != nil {
		return nil, err
	}
	ev.Raw = raw
	ev.Details["webhook"] = name
	return ev, nil
}

// userStatus names the user status webhook (/webhook/user/status).
const userStatus = "user.status_changed"

// recognise names the webhook a body is and returns its payload.
func recognise(body ingress.Object) (string, ingress.Object, error) {
	name, err := body.String("event_type")
	if err != nil {
		return "", nil, err
	}
	if name == "" {
		switch {
		// A transfer may name its user too: the IBAN tells it first.
		case body.Has("destinationIban"):
			return "sepa_transfer.status_changed", body, nil
		case body.Has("externalUserId") && (body.Has("balances") || body.Has("status")):
			return userStatus, body, nil
		}
		return "", nil, ingress.Unknown("no event_type and not a webhook this version recognises by shape")
	}
	if _, ok := hooks[name]; !ok && name != userStatus {
		return "", nil, ingress.Unknown("unknown event_type %.64q", name)
	}
	data, err := body.Object("data")
	if err != nil {
		return "", nil, err
	}
	if data == nil {
		// Flat: the payload's members sit beside event_type.
		data = body
	}
	return name, data, nil
}
