package ingress

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"herald/auth"
	"herald/channels"
	"herald/internal/clientip"
	"herald/metrics"
)

// MaxBody is the largest webhook body accepted (413 beyond).
const MaxBody = 1 << 20

// MaxEventID bounds an event id, which is also a dedup key in the broker:
// provider ids are short, and a hostile one must not become a huge key.
const MaxEventID = 512

// Options configure the ingress. Zero values take the defaults in brackets.
type Options struct {
	Broker channels.Broker
	// Providers are the enabled providers (those with a secret) and their
	// settings, by slug.
	Providers map[string]Enabled
	// DeadLetters keeps what could not be published [in memory, 1000].
	DeadLetters DeadLetterStore
	// DedupWindow is how long a provider event id is remembered, so that
	// retries are recognised; it must outlast the providers' retry
	// schedules [72h].
	DedupWindow time.Duration
	// Statuses remembers each transaction's latest status [in memory].
	Statuses StatusStore
	// Appender appends each event to all its channels and ranks its
	// status (the Redis engine: one script, or one per channel on a
	// Cluster) [Statuses, then one Broker Publish per channel].
	Appender channels.Appender
	// ClientIP finds the sender's address behind trusted proxies, for the
	// allow lists [the peer's address].
	ClientIP clientip.Resolver
	// PublishTimeout bounds the appends of one request [5s].
	PublishTimeout time.Duration
	// MaxEvent is the largest encoded event published (the hub's
	// MaxPublication); a larger one is kept as a dead letter [no limit].
	MaxEvent int
	Logger   *slog.Logger
	// Now is the clock [time.Now].
	Now func() time.Time
	// Metrics counts requests by provider and outcome, and dead letters
	// [none].
	Metrics *metrics.Ingress
}

// Enabled is a provider together with its configuration.
type Enabled struct {
	Provider Provider
	Config   Config
}

// Ingress is the http.Handler for POST /ingress/<provider>.
type Ingress struct {
	opts Options
	// otherMerchant: providers already warned of naming a merchant other
	// than the one configured for them.
	otherMerchant sync.Map
}

// New returns an Ingress.
func New(opts Options) (*Ingress, error) {
	if opts.Broker == nil {
		return nil, errors.New("ingress: Broker is required")
	}
	for slug, p := range opts.Providers {
		if p.Config.Secret == "" {
			return nil, fmt.Errorf("ingress: provider %s has no secret", slug)
		}
		if p.Config.Tolerance <= 0 {
			p.Config.Tolerance = DefaultTolerance
			opts.Providers[slug] = p
		}
	}
	if opts.DeadLetters == nil {
		opts.DeadLetters = NewMemoryDeadLetters(1000)
	}
	if opts.Statuses == nil {
		opts.Statuses = NewMemoryStatuses()
	}
	if opts.Appender == nil {
		opts.Appender = separately{broker: opts.Broker, statuses: opts.Statuses, sequences: new(sequenceLocks)}
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = 72 * time.Hour
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Ingress{opts: opts}, nil
}

// Published is the body of a 200 answer.
type Published struct {
	Status       string          `json:"status"`
	Event        string          `json:"event"`
	Publications []PublishedItem `json:"publications,omitempty"`
}

// PublishedItem is where an event went.
type PublishedItem struct {
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
}

// outcome is one row of SPEC §3's outcome table, for logs and answers.
type outcome struct {
	status int
	label  string
	body   any
	event  string
}

// ServeHTTP handles POST /ingress/<provider>, and any path below it.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	slug, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/ingress/"), "/")
	o := in.serve(w, r, slug)
	writeJSON(w, o.status, o.body)
	elapsed := time.Since(start)
	in.opts.Metrics.Request(slug, o.label, elapsed)
	in.opts.Logger.Info("ingress",
		"provider", slug, "outcome", o.label, "status", o.status,
		"event", o.event, "latency_ms", float64(elapsed.Microseconds())/1000)
}

func (in *Ingress) serve(w http.ResponseWriter, r *http.Request, slug string) outcome {
	p, ok := in.opts.Providers[slug]
	if !ok {
		return fail(http.StatusNotFound, "not_found", "no enabled provider "+truncate(slug))
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return fail(http.StatusMethodNotAllowed, "method", "use POST")
	}
	if !allowed(p.Config.Allow, in.opts.ClientIP.Of(r)) {
		return fail(http.StatusForbidden, "forbidden", "source address not allowed")
	}
	now := in.opts.Now()
	req := &Request{Method: r.Method, Path: r.URL.Path, Host: r.Host, Header: r.Header, Config: p.Config, Now: now}
	// A provider that signs nothing in the body is authenticated by the
	// request's head alone: a stranger is refused before a megabyte of
	// body is read from them.
	headOnly := p.Provider.Verify == nil || p.Provider.VerifiesHead
	if headOnly {
		if err := authenticate(p, req, r); err != nil {
			return fail(http.StatusUnauthorized, "unauthorized", err.Error())
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fail(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", MaxBody))
		}
		return fail(http.StatusBadRequest, "bad_body", "reading body: "+err.Error())
	}
	req.Body = body
	if !headOnly {
		if err := authenticate(p, req, r); err != nil {
			return fail(http.StatusUnauthorized, "unauthorized", err.Error())
		}
	}
	if !utf8.Valid(body) {
		// JSON must be UTF-8, but a provider that sends a name in Latin-1
		// still reports a real payment. Its invalid bytes become U+FFFD, as
		// encoding/json does in strings, so that "raw" never puts into a
		// text frame what a browser must refuse (and refuse again on every
		// resume).
		req.Body = bytes.ToValidUTF8(body, []byte("\uFFFD"))
		in.opts.Logger.Warn("ingress body is not valid UTF-8; invalid bytes replaced with U+FFFD", "provider", slug)
	}
	if d := Depth(req.Body); d > MaxDepth {
		// "raw" carries the body to clients, many of which (Go, Python,
		// Swift) refuse deeper JSON: one such event would stop them at
		// its channel on every resume.
		return in.deadLetter(r.Context(), slug, req, Malformed("JSON nested %d deep; at most %d", d, MaxDepth))
	}

	ev, err := p.Provider.Parse(req)
	if err != nil {
		return in.deadLetter(r.Context(), slug, req, err)
	}
	if err := in.complete(ev, slug, p.Config, now); err != nil {
		return in.deadLetter(r.Context(), slug, req, err)
	}
	targets := ev.Channels()
	switch {
	case len(targets) == 0 && ev.badUser != nil:
		return in.deadLetter(r.Context(), slug, req, ev.badUser)
	case len(targets) == 0:
		return in.deadLetter(r.Context(), slug, req,
			fmt.Errorf("%w: event names no user and no merchant is configured (set HERALD_INGRESS_%s_MERCHANT)", errNoRoute, strings.ToUpper(slug)))
	case ev.badUser != nil:
		// No client can subscribe to such a user's channel, but the
		// merchant's copy is whole: refusing it would lose it too.
		in.opts.Logger.Warn("ingress event's user is not a channel id; published to its other channels only",
			"provider", slug, "event", ev.ID, "err", ev.badUser)
	}
	data, err := ev.encode()
	if err != nil {
		return in.deadLetter(r.Context(), slug, req, fmt.Errorf("encoding event: %w", err))
	}
	if limit := in.opts.MaxEvent; limit > 0 && len(data)+staleRoom > limit {
		return in.deadLetter(r.Context(), slug, req,
			Malformed("the event is %d bytes once normalized, more than the %d a subscriber can be sent", len(data), limit-staleRoom))
	}
	// Each append is idempotent under the event id, so that a retry after
	// a partial failure completes the rest and a retry after success
	// appends nothing.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), in.opts.PublishTimeout)
	defer cancel()
	opts := channels.PublishOptions{IdempotencyKey: ev.ID, IdempotencyTTL: in.opts.DedupWindow}
	res, err := in.opts.Appender.Append(ctx, targets, data, opts, in.sequence(ev, data))
	if err != nil {
		in.opts.Logger.Warn("ingress append failed", "event", ev.ID, "err", err)
		o := fail(http.StatusServiceUnavailable, "unavailable", "broker unavailable; nothing acknowledged, retry")
		o.event = ev.ID
		return o
	}
	return answer(ev.ID, targets, res.Results)
}

// separately is the Appender of a broker that has none (the embedded
// one): the status through the StatusStore, then one Publish per channel.
type separately struct {
	broker    channels.Broker
	statuses  StatusStore
	sequences *sequenceLocks
}

// sequenceLocks keep one sequence's publications from passing each other
// between being ranked and being appended: a status ranked before a
// higher one but appended after it would follow it unmarked. (Without an
// Appender the broker is the embedded one, in this process alone.)
type sequenceLocks [64]sync.Mutex

func (l *sequenceLocks) of(key string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return &l[h.Sum32()%uint32(len(l))]
}

func (s separately) Append(ctx context.Context, chans []string, data json.RawMessage, opts channels.PublishOptions, seq *channels.Sequence) (channels.AppendResult, error) {
	var res channels.AppendResult
	if seq != nil {
		mu := s.sequences.of(seq.Key)
		mu.Lock()
		defer mu.Unlock()
		retry, err := s.retry(ctx, chans, opts.IdempotencyKey)
		if err != nil {
			return res, err
		}
		if !retry { // a retry leaves the status as it was
			current, late, err := s.statuses.Advance(ctx, seq.Key, seq.Label, seq.Rank, seq.TTL)
			if err != nil {
				return res, fmt.Errorf("status store: %w", err)
			}
			res.Late, res.Current = late, current
			if late {
				data = seq.Mark(data, current)
			}
		}
	}
	for _, ch := range chans {
		r, err := s.broker.Publish(ctx, ch, data, opts)
		if err != nil {
			return res, fmt.Errorf("appending to a %s channel: %w", namespace(ch), err)
		}
		res.Results = append(res.Results, r)
	}
	return res, nil
}

// retry reports whether every channel already has a publication under
// key: a provider's retry, which must leave the status as it was.
func (s separately) retry(ctx context.Context, chans []string, key string) (bool, error) {
	d, ok := s.broker.(channels.Deduplicator)
	if !ok || key == "" {
		return false, nil
	}
	for _, ch := range chans {
		seen, err := d.Seen(ctx, ch, key)
		if err != nil || !seen {
			return false, err
		}
	}
	return true, nil
}

// staleRoom is what marking an event stale may add to it: the members
// "stale" and "current_status" with a status of ours.
const staleRoom = 64

// staleAt is where json.Marshal puts the members of a stale Event (stale,
// current_status): just before amounts, which every Event has. No member
// before amounts can hide the bytes `,"amounts":` in its value, since they
// are all strings, whose quotes JSON escapes.
var staleAt = []byte(`,"amounts":`)

// sequence ranks an event with a Txn among its transaction's statuses.
// data is the event as published when it is not stale; a stale one is
// marked by splicing its two members into data, which gives what
// json.Marshal of the event with Stale set gives.
func (in *Ingress) sequence(ev *Event, data []byte) *channels.Sequence {
	if ev.Txn == "" {
		return nil
	}
	return &channels.Sequence{
		Key: ev.Txn, Label: ev.Status, Rank: ev.Rank, TTL: in.opts.DedupWindow,
		At: bytes.Index(data, staleAt) + 1, Before: `"stale":true,"current_status":`, After: ",",
	}
}

// complete fills what the framework owns and checks what the adapter made.
func (in *Ingress) complete(ev *Event, slug string, cfg Config, now time.Time) error {
	ev.Provider = slug
	ev.ReceivedAt = FormatTime(now)
	if ev.User != "" {
		ev.User = cfg.UserPrefix + ev.User
		if err := channels.ValidID(ev.User); err != nil {
			ev.badUser = Malformed("user: %v", err)
		}
	}
	if ev.Counterparty != "" {
		ev.Counterparty = cfg.UserPrefix + ev.Counterparty
		if err := channels.ValidID(ev.Counterparty); err != nil {
			ev.badCounterparty = Malformed("counterparty: %v", err)
			in.opts.Logger.Warn("ingress event's counterparty is not a channel id; not published to that user",
				"provider", slug, "event", ev.ID, "err", ev.badCounterparty)
		}
	}
	if ev.Merchant == "" {
		ev.Merchant = cfg.Merchant
	} else if err := channels.ValidID(ev.Merchant); err != nil {
		return Malformed("merchant: %v", err)
	} else if cfg.Merchant != "" && ev.Merchant != cfg.Merchant {
		if _, warned := in.otherMerchant.LoadOrStore(slug, true); !warned {
			// One account's events would be split over two channels:
			// those that name a merchant, and those that do not.
			in.opts.Logger.Warn("a provider's payload names a merchant other than its HERALD_INGRESS_<SLUG>_MERCHANT: its events go to merchant:<named> and those naming none to the configured one",
				"provider", slug, "named", ev.Merchant, "configured", cfg.Merchant)
		}
	}
	if ev.Amounts == nil {
		ev.Amounts = map[string]Amount{}
	}
	if ev.Details == nil {
		ev.Details = map[string]any{}
	}
	if ev.ID == "" || ev.Type == "" || ev.Status == "" {
		return fmt.Errorf("adapter %s produced an event without id, type or status", slug)
	}
	if len(ev.ID) > MaxEventID {
		return Malformed("event id of %d bytes (at most %d)", len(ev.ID), MaxEventID)
	}
	return nil
}

// answer is the 200 of an event appended to targets: published if any
// append was new, duplicate if all were retries.
func answer(id string, targets []string, results []channels.PublishResult) outcome {
	res := Published{Status: "duplicate", Event: id}
	items := make([]PublishedItem, len(targets))
	for i, r := range results {
		if !r.Duplicate {
			res.Status = "published"
		}
		items[i] = PublishedItem{Channel: targets[i], Offset: r.Offset}
	}
	if res.Status == "published" {
		res.Publications = items
	}
	return outcome{status: http.StatusOK, label: res.Status, body: res, event: id}
}

// errNoRoute: a known event with no channel to go to, for want of
// configuration (a provider's merchant), not for anything in the payload.
var errNoRoute = errors.New("no channel")

// deadLetter keeps a request that could not become an event and answers
// the provider: 202 for an unknown event, 400 for a malformed one, and 500
// when the fault is herald's (an adapter that broke its contract), so that
// the provider retries once it is mended.
func (in *Ingress) deadLetter(ctx context.Context, slug string, req *Request, err error) outcome {
	status, label, reason := http.StatusBadRequest, "malformed", "malformed"
	if errors.Is(err, errNoRoute) {
		status, label, reason = http.StatusAccepted, "dead_letter", "no_route"
	} else if errors.Is(err, ErrUnknownEvent) {
		status, label, reason = http.StatusAccepted, "dead_letter", "unknown_event"
	} else if !errors.Is(err, ErrMalformed) {
		in.opts.Logger.Error("ingress adapter failed", "provider", slug, "err", err)
		status, label, reason = http.StatusInternalServerError, "internal", "internal"
	}
	body := req.Body
	if p := in.opts.Providers[slug].Provider; p.Redact != nil {
		body = p.Redact(body)
	}
	d := DeadLetter{Provider: slug, ReceivedAt: FormatTime(req.Now), Status: status, Reason: err.Error()}
	d.Body, d.Truncated = cutEncoded(string(body), MaxDeadLetterBody)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.opts.PublishTimeout)
	defer cancel()
	if err := in.opts.DeadLetters.Add(ctx, d); err != nil {
		// Nothing was kept: let the provider retry rather than lose it.
		in.opts.Logger.Warn("keeping dead letter failed", "provider", slug, "err", err)
		return fail(http.StatusServiceUnavailable, "unavailable", "broker unavailable; retry")
	}
	in.opts.Metrics.DeadLetter(slug, reason)
	if status == http.StatusAccepted {
		return outcome{status: status, label: label, body: map[string]string{"status": "dead_letter", "reason": err.Error()}}
	}
	return fail(status, label, err.Error())
}

func fail(status int, label, msg string) outcome {
	return outcome{status: status, label: label, body: map[string]string{"error": msg}}
}

// authenticate accepts the shared secret as a Bearer token or ?key=, or
// the provider's own signature.
func authenticate(p Enabled, req *Request, r *http.Request) error {
	secret := []byte(p.Config.Secret)
	if tok, ok := auth.Bearer(r.Header); ok && subtle.ConstantTimeCompare([]byte(tok), secret) == 1 {
		return nil
	}
	if key := r.URL.Query().Get("key"); key != "" && subtle.ConstantTimeCompare([]byte(key), secret) == 1 {
		return nil
	}
	if p.Provider.Verify == nil {
		return errors.New("missing or wrong secret")
	}
	if err := p.Provider.Verify(req); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	return nil
}

// allowed reports whether addr is in allow; an empty list allows everyone.
func allowed(allow []netip.Prefix, addr netip.Addr) bool {
	if len(allow) == 0 {
		return true
	}
	for _, p := range allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func namespace(ch string) string {
	ns, _, _ := strings.Cut(ch, ":")
	return ns
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, _ := marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
