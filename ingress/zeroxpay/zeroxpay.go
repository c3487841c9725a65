// Package zeroxpay is the ingress adapter for 0xpay's exchange callbacks
// (slug "0xpay"; a Go package name cannot start with a digit): fiat and
// crypto exchange withdrawals, whose status goes Exchanged → Done, with
// Failed possible before or after Exchanged, and exchanges (Done or
// Failed). 0xpay retries for about 8 hours and sends a later status only
// once the earlier one was acknowledged.
//
// Authenticity: 0xpay signs every notification with the headers
// merchant-id, timestamp (Unix seconds) and signature: the lowercase hex
// HMAC-SHA256 of method + URL path + raw body + timestamp under the
// merchant's private key (HERALD_INGRESS_0XPAY_SECRET, used as text, as in
// 0xpay's own examples). 0xpay's API page says "URL path" while its JS SDK
// verifies host + path; Verify accepts either. 0xpay sets no window for the
// timestamp, so herald does: a timestamp further than
// HERALD_INGRESS_0XPAY_TOLERANCE (default 12h) from herald's clock, in
// either direction, is refused, and a captured request cannot be replayed
// later. The window outlasts 0xpay's retries (about 8 h), in case a retry
// carries its first delivery's signature; a replay inside it is a
// duplicate of the event it repeats. The merchant-id header is not trusted for routing (it is not
// signed); the body's merchantId is.
//
// The withdrawal's destination ("to") is documented as a card number: it
// is masked (first six and last four digits) in details, in raw and in
// dead letters; but a crypto withdrawal's address is kept as sent.
package zeroxpay

import (
	"crypto/sha256"
	"net/http"
	"strconv"
	"time"

	"herald/ingress"
)

// Slug is the provider's name in URLs and configuration
// (HERALD_INGRESS_0XPAY_…).
const Slug = "0xpay"

// The headers 0xpay signs its notifications with.
const (
	HeaderMerchant  = "merchant-id"
	HeaderTimestamp = "timestamp"
	HeaderSignature = "signature"
)

// Provider returns the 0xpay provider.
func Provider() ingress.Provider {
	return ingress.Provider{Slug: Slug, Parse: Parse, Verify: Verify, Sign: Sign, Redact: Redact}
}

// Verify checks the timestamp against the tolerance window, then the
// signature over method + path + body + timestamp (path alone, or host and
// path as 0xpay's SDK builds it).
func Verify(r *ingress.Request) error {
	ts := r.Header.Get(HeaderTimestamp)
	if ts == "" {
		return errMissing(HeaderTimestamp)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errNotSeconds
	}
	tolerance := r.Config.Tolerance
	if tolerance <= 0 {
		tolerance = ingress.DefaultTolerance
	}
	if skew := r.Now.Sub(time.Unix(sec, 0)); skew > tolerance || skew < -tolerance {
		return errOutsideWindow
	}
	sig := r.Header.Get(HeaderSignature)
	if sig == "" {
		return errMissing(HeaderSignature)
	}
	urls := []string{r.Path}
	for _, host := range []string{r.Host, r.Header.Get("X-Forwarded-Host")} {
		if host != "" {
			urls = append(urls, host+r.Path)
		}
	}
	err = ingress.ErrSignature
	for _, url := range urls {
		if err = ingress.VerifyHex(sha256.New, r.Config.Secret, sig, []byte(r.Method), []byte(url), r.Body, []byte(ts)); err == nil {
			return nil
		}
	}
	return err
}

type verifyError string

func (e verifyError) Error() string { return string(e) }

const (
	errNotSeconds    = verifyError("timestamp header: not Unix seconds")
	errOutsideWindow = verifyError("timestamp outside the tolerance window (a replay, or a clock off)")
)

func errMissing(header string) error { return verifyError("missing " + header + " header") }

// Sign sets the headers 0xpay would send with body: the configured
// merchant, the time in seconds, and the signature over method, path, body
// and time.
func Sign(h http.Header, method, path string, body []byte, cfg ingress.Config, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderMerchant, cfg.Merchant)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, ingress.SignHex(sha256.New, cfg.Secret, []byte(method), []byte(path), body, []byte(ts)))
}

// masked lists the members that hold card numbers: "to", which 0xpay
// documents as one. Dead letters, which may be of any kind or none, are
// masked so always.
var masked = map[string]func(string) string{"to": ingress.MaskCard}

// maskedCrypto is masked for the other kinds: there "to" is an address
// (letters and digits), kept as sent, since masking its digits would
// corrupt it; it is masked only if it reads as a card number.
var maskedCrypto = map[string]func(string) string{"to": func(s string) string {
	if ingress.IsCardNumber(s) {
		return ingress.MaskCard(s)
	}
	return s
}}

// Redact masks card numbers in a dead letter.
func Redact(body []byte) []byte { return ingress.Redact(body, masked) }

// kinds maps 0xpay's kind to the event type.
var kinds = map[string]string{
	"FiatExchangeWithdraw":   "exchange_withdrawal.fiat",
	"CryptoExchangeWithdraw": "exchange_withdrawal.crypto",
	"Exchange":               "exchange.swap",
}

// statuses maps 0xpay's status to the event status and its rank: Exchanged
// comes before Done or Failed; Done and Failed are final and equal, so a
// Failed after Done (0xpay sends them in the order they happen) is the
// transaction's new current status, not a stale one.
var statuses = map[string]struct {
	status string
	rank   int
}{
	"Exchanged": {ingress.StatusPending, 1},
	"Done":      {ingress.StatusSucceeded, 2},
	"Failed":    {ingress.StatusFailed, 2},
}

// Parse implements ingress.Provider.Parse.
func Parse(r *ingress.Request) (*ingress.Event, error) {
	o, err := ingress.DecodeObject(r.Body)
	if err != nil {
		return nil, err
	}
	kind, err := o.RequiredString("kind")
	if err != nil {
		return nil, err
	}
	typ, ok := kinds[kind]
	if !ok {
		return nil, ingress.Unknown("unknown 0xpay kind %.64q", kind)
	}
	id, err := o.RequiredID("id")
	if err != nil {
		return nil, err
	}
	state, err := o.RequiredString("status")
	if err != nil {
		return nil, err
	}
	st, ok := statuses[state]
	if !ok {
		return nil, ingress.Unknown("unknown 0xpay status %.64q", state)
	}
	ev := &ingress.Event{
		// (kind, id, status): a retry is the same event, a later status a
		// new one.
		ID:      Slug + ":" + kind + ":" + id + ":" + state,
		Type:    typ,
		Status:  st.status,
		Txn:     Slug + ":" + kind + ":" + id,
		Rank:    st.rank,
		Details: map[string]any{"kind": kind, "transaction_id": id, "provider_status": state},
	}
	if ev.Merchant, err = o.ID("merchantId"); err != nil {
		return nil, err
	}
	if ev.OccurredAt, err = millis(o); err != nil {
		return nil, err
	}
	quote, err := priceCurrency(o, ev.Details)
	if err != nil {
		return nil, err
	}
	if kind == "Exchange" {
		ev.Amounts, err = exchange(o, quote)
	} else {
		ev.Amounts, err = withdrawal(o, quote)
	}
	if err == nil && ev.Amounts["amount"] == (ingress.Amount{}) {
		err = ingress.Malformed("no amount (amount, paidAmount or targetAmount)")
	}
	if err != nil {
		return nil, err
	}
	o.CopyTo(ev.Details, "meta", "meta", "localId", "local_id", "causedBy", "caused_by",
		"internal", "internal", "exchanged", "exchanged", "failedReason", "failed_reason")
	mask := maskedCrypto
	if kind == "FiatExchangeWithdraw" {
		mask = masked
	}
	if to, err := o.String("to"); err != nil {
		return nil, err
	} else if to != "" {
		ev.Details["to"] = mask["to"](to)
	}
	if ev.Raw, err = ingress.Rewrite(r.Body, mask); err != nil {
		return nil, err
	}
	return ev, nil
}

// withdrawal reads an exchange withdrawal's sums: paidAmount is what was
// really paid out (0xpay: "the source of truth"), amount what was asked.
func withdrawal(o ingress.Object, quote string) (ingress.Amounts, error) {
	ticker, err := o.RequiredString("ticker")
	if err != nil {
		return nil, err
	}
	paid, err := o.Number("paidAmount")
	if err != nil {
		return nil, err
	}
	asked := "amount"
	if paid != "" {
		asked = "requested_amount"
	}
	a := ingress.Amounts{}
	if err := a.Add("amount", paid, ticker); err != nil {
		return nil, err
	}
	return a, take(a, o,
		sum{asked, "amount", ticker},
		sum{"failed_amount", "failedAmount", ticker},
		sum{"fee", "fee", ticker},
		sum{"exchange_fee", "exchangeFee", ""},
		sum{"spent", "spendAmount", spendTicker(o)},
		sum{"price", "price", quote},
	)
}

// exchange reads an exchange's sums: what was received and what was spent.
func exchange(o ingress.Object, quote string) (ingress.Amounts, error) {
	target, err := o.RequiredString("targetTicker")
	if err != nil {
		return nil, err
	}
	a := ingress.Amounts{}
	return a, take(a, o,
		sum{"amount", "targetAmount", target},
		sum{"spent", "spendAmount", spendTicker(o)},
		sum{"fee", "fee", ""},
		sum{"price", "price", quote},
	)
}

// sum names one amount of a callback: its name in the event, its member
// and its currency ("" where 0xpay does not say which).
type sum struct{ name, key, currency string }

func take(a ingress.Amounts, o ingress.Object, sums ...sum) error {
	for _, s := range sums {
		if err := a.Take(s.name, o, s.key, s.currency); err != nil {
			return err
		}
	}
	return nil
}

func spendTicker(o ingress.Object) string {
	s, _ := o["spendTicker"].(string)
	return s
}

// priceCurrency reads pricePair, a pair of tickers; 0xpay's example
// ("23000 for BTC -> USDT") quotes the price of the first in the second.
func priceCurrency(o ingress.Object, details map[string]any) (string, error) {
	pair, err := o.Array("pricePair")
	if err != nil || pair == nil {
		return "", err
	}
	details["price_pair"] = pair
	if len(pair) != 2 {
		return "", ingress.Malformed("pricePair: want two tickers")
	}
	quote, ok := pair[1].(string)
	if !ok {
		return "", ingress.Malformed("pricePair: want two tickers")
	}
	return quote, nil
}

// maxMillis is the end of year 9999: a later time is no timestamp.
const maxMillis = 253402300799999

// millis reads "time", when the transaction was created, in milliseconds.
func millis(o ingress.Object) (string, error) {
	n, err := o.Number("time")
	if err != nil || n == "" {
		return "", err
	}
	ms, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || ms < 0 || ms > maxMillis {
		return "", ingress.Malformed("time: %.32q is not a time in milliseconds", string(n))
	}
	return ingress.FormatTime(time.UnixMilli(ms)), nil
}
