package ingress

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"herald/channels"
)

// Statuses an Event may have (SPEC §3).
const (
	StatusPending   = "pending"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusApproved  = "approved"
	StatusRejected  = "rejected"
	StatusCancelled = "cancelled"
	StatusExpired   = "expired"
	StatusInfo      = "info"
)

// Route says which channels an event goes to besides its user's.
type Route int

const (
	// RouteDefault: user:U and merchant:M.
	RouteDefault Route = iota
	// RouteWithAlert: as RouteDefault, and a copy to alerts:M.
	RouteWithAlert
	// RouteAlertOnly: alerts:M only (operational alerts about the merchant's
	// own account, such as a master balance running low).
	RouteAlertOnly
	// RouteUserOnly: user:U only, never the merchant's channels (one-time
	// codes that only their owner may see).
	RouteUserOnly
)

// Event is the normalized form of one provider event: the data of every
// publication the ingress makes.
type Event struct {
	ID         string `json:"id"`
	Provider   string `json:"provider"`
	Type       string `json:"type"`
	Status     string `json:"status"`
	User       string `json:"user,omitempty"`
	Merchant   string `json:"merchant,omitempty"`
	OccurredAt string `json:"occurred_at,omitempty"`
	ReceivedAt string `json:"received_at"`
	// Stale marks an event that arrived after a later status of the same
	// provider transaction; CurrentStatus is that later status.
	Stale         bool              `json:"stale,omitempty"`
	CurrentStatus string            `json:"current_status,omitempty"`
	Amounts       map[string]Amount `json:"amounts"`
	Details       map[string]any    `json:"details"`
	// Raw is the provider's payload as received, with card numbers masked.
	Raw json.RawMessage `json:"raw"`

	// Route selects the channels besides user:U.
	Route Route `json:"-"`
	// Txn names the provider transaction the event is a status of (say
	// "kriptomat:withdrawal.fiat:58463"), and Rank orders its statuses:
	// an event whose Rank is below the highest seen for Txn is marked
	// Stale. Empty Txn: the event has no status history.
	Txn  string `json:"-"`
	Rank int    `json:"-"`

	// Counterparty is a second user the event is also about (the receiver
	// of a transfer the user sent): user:Counterparty gets it too, on the
	// default routes.
	Counterparty string `json:"-"`

	// badUser: User is not a channel id, so the event has no user:U;
	// badCounterparty the same for Counterparty.
	badUser, badCounterparty error
}

// Amount is a sum of money: the provider's own digits and a currency.
type Amount struct {
	Value    string `json:"value"`
	Currency string `json:"currency,omitempty"`
	// Approximate is set when the provider says the amount is not final.
	Approximate bool `json:"approximate,omitempty"`
}

// encode is e as published (see marshal).
func (e *Event) encode() ([]byte, error) { return marshal(e) }

// Channels returns the channels e is appended to, in a stable order.
func (e *Event) Channels() []string {
	var out []string
	if e.User != "" && e.badUser == nil && e.Route != RouteAlertOnly {
		out = append(out, channels.NamespaceUser+":"+e.User)
	}
	if e.Counterparty != "" && e.badCounterparty == nil && e.Counterparty != e.User &&
		(e.Route == RouteDefault || e.Route == RouteWithAlert) {
		out = append(out, channels.NamespaceUser+":"+e.Counterparty)
	}
	if e.Merchant != "" {
		switch e.Route {
		case RouteDefault:
			out = append(out, channels.NamespaceMerchant+":"+e.Merchant)
		case RouteWithAlert:
			out = append(out, channels.NamespaceMerchant+":"+e.Merchant, channels.NamespaceAlerts+":"+e.Merchant)
		case RouteAlertOnly:
			out = append(out, channels.NamespaceAlerts+":"+e.Merchant)
		}
	}
	return out
}

// The errors a Parse returns wrap one of these.
var (
	// ErrMalformed: not JSON, a required field missing or of the wrong
	// type, a bad amount. Answered 400 and kept as a dead letter.
	ErrMalformed = errors.New("malformed payload")
	// ErrUnknownEvent: well-formed, but not an event herald knows. Answered
	// 202 and kept as a dead letter.
	ErrUnknownEvent = errors.New("unknown event")
)

// Malformed returns an error wrapping ErrMalformed.
func Malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Unknown returns an error wrapping ErrUnknownEvent.
func Unknown(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnknownEvent, fmt.Sprintf(format, args...))
}

// maxAmountLength bounds an amount's text: 64 characters hold any real
// sum, and a hostile 100,000-digit number never reaches a client.
const maxAmountLength = 64

// maxExponent bounds the exponent an amount may carry: enough for any real
// currency, too little for "1e999999" to become a problem downstream.
const maxExponent = 40

// NewAmount validates a provider's number (a JSON number or numeric string,
// as decoded with UseNumber) and keeps its exact digits. field names the
// amount in errors.
func NewAmount(field string, n json.Number, currency string) (Amount, error) {
	s := strings.TrimSpace(n.String())
	if s == "" {
		return Amount{}, Malformed("%s: empty amount", field)
	}
	if len(s) > maxAmountLength {
		return Amount{}, Malformed("%s: amount of %d characters", field, len(s))
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return Amount{}, Malformed("%s: %q is not a decimal amount", field, truncate(s))
	}
	if e := d.Exponent(); e > maxExponent || e < -maxExponent {
		return Amount{}, Malformed("%s: %q is out of range", field, truncate(s))
	}
	return Amount{Value: s, Currency: currency}, nil
}

// Time layouts providers use, tried in order. Times without a zone are UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02 15:04:05.999999999",
}

// ParseTime normalizes a provider timestamp to RFC 3339 in UTC.
func ParseTime(field, s string) (string, error) {
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return FormatTime(t), nil
		}
	}
	return "", Malformed("%s: %q is not a timestamp", field, truncate(s))
}

// FormatTime is how times appear in events.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
