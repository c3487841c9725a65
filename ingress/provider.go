package ingress

import (
	"net/http"
	"net/netip"
	"time"
)

// Provider is one webhook source: how its requests are verified and parsed.
type Provider struct {
	// Slug names the provider in URLs (/ingress/<slug>), events and
	// configuration (HERALD_INGRESS_<SLUG>_…).
	Slug string
	// Parse turns an authenticated request into one event. It fills
	// everything but Provider and ReceivedAt; User is the provider's own
	// identifier (the framework adds the configured prefix) and Merchant is
	// left empty when the payload names none. Errors wrap ErrMalformed or
	// ErrUnknownEvent.
	Parse func(r *Request) (*Event, error)
	// Verify checks the provider's own signature scheme, if it has one. A
	// request is authentic if it passes Verify or carries the shared
	// secret (Bearer or ?key=). nil means the shared secret only.
	Verify func(r *Request) error
	// VerifiesHead: Verify reads the request's head alone (headers, path,
	// query), never its body, so a request it refuses is refused before
	// its body is read.
	VerifiesHead bool
	// Sign, when the provider signs its requests, sets the headers it
	// would send with body (signature, timestamp, …) using cfg.Secret.
	// `herald send` and the tests post webhooks through it; nil means the
	// provider sends the shared secret as a Bearer token.
	Sign func(h http.Header, method, path string, body []byte, cfg Config, now time.Time)
	// Redact, when set, hides one-time secrets (card codes) in a body
	// kept as a dead letter, where operators can read it.
	Redact func(body []byte) []byte
}

// Config is one provider's settings (HERALD_INGRESS_<SLUG>_…).
type Config struct {
	// Secret authenticates requests; a provider without one is disabled.
	Secret string
	// Merchant is used for payloads that name none.
	Merchant string
	// UserPrefix is prepended to the provider's user ids.
	UserPrefix string
	// Allow, when not empty, lists the source networks allowed to post.
	Allow []netip.Prefix
	// Tolerance bounds the age of a signed timestamp, for providers whose
	// signatures carry one [DefaultTolerance].
	Tolerance time.Duration
}

// DefaultTolerance is 12 hours: longer than any timestamp-signing
// provider's retries (0xpay's, about 8 h), in case a retry carries its
// first delivery's signature, and shorter than the dedup window, inside
// which a replay is a duplicate of the event it repeats.
const DefaultTolerance = 12 * time.Hour

// Request is what a Provider sees of one webhook.
type Request struct {
	Method string
	// Path is the URL path as the provider sent it.
	Path string
	// Host is the Host the request was sent to, for signatures that cover
	// the URL (0xpay's SDK signs host + path).
	Host   string
	Header http.Header
	// Body is the raw body, at most MaxBody bytes.
	Body   []byte
	Config Config
	// Now is when the request arrived.
	Now time.Time
}
