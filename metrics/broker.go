package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"herald/channels"
)

// Broker is what every broker call reports, whatever the implementation.
type Broker struct {
	publish, append, history, subscribe, unsubscribe, ready prometheus.Observer
	errors                                                  *prometheus.CounterVec
	publications, dedupHits                                 [len(namespaces)]prometheus.Counter
}

func newBroker(reg prometheus.Registerer) *Broker {
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "herald_broker_operation_duration_seconds",
		Help:    "Broker calls by operation (publish, append: one publication to several channels at once, history, subscribe, unsubscribe, ready), failed ones included.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"operation"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_broker_errors_total",
		Help: "Failed broker calls by operation and kind (unavailable, timeout, canceled, other).",
	}, []string{"operation", "kind"})
	pubs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_publications_total",
		Help: "Publications appended by this node, by channel namespace.",
	}, []string{"namespace"})
	dups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_dedup_hits_total",
		Help: "Publishes that appended nothing because their idempotency key (provider event id or API idempotency_key) was seen before, by channel namespace.",
	}, []string{"namespace"})
	if reg != nil {
		reg.MustRegister(duration, errs, pubs, dups)
	}
	return &Broker{
		publish:      duration.WithLabelValues("publish"),
		append:       duration.WithLabelValues("append"),
		history:      duration.WithLabelValues("history"),
		subscribe:    duration.WithLabelValues("subscribe"),
		unsubscribe:  duration.WithLabelValues("unsubscribe"),
		ready:        duration.WithLabelValues("ready"),
		errors:       errs,
		publications: perNamespace(pubs.WithLabelValues),
		dedupHits:    perNamespace(dups.WithLabelValues),
	}
}

// InstrumentBroker returns b with every call timed and counted in m. It
// adds no behaviour: results and errors pass through unchanged. A nil m
// returns b itself.
func InstrumentBroker(b channels.Broker, m *Broker) channels.Broker {
	if m == nil {
		return b
	}
	return &instrumented{Broker: b, m: m}
}

// instrumented embeds the broker so that Start and Close pass through.
type instrumented struct {
	channels.Broker
	m *Broker
}

// Unwrap returns the broker being instrumented.
func (b *instrumented) Unwrap() channels.Broker { return b.Broker }

// Seen passes channels.Deduplicator through; a broker without one has
// seen nothing.
func (b *instrumented) Seen(ctx context.Context, channel, key string) (bool, error) {
	if d, ok := b.Broker.(channels.Deduplicator); ok {
		return d.Seen(ctx, channel, key)
	}
	return false, nil
}

func (b *instrumented) Publish(ctx context.Context, channel string, data json.RawMessage, opts channels.PublishOptions) (channels.PublishResult, error) {
	start := time.Now()
	res, err := b.Broker.Publish(ctx, channel, data, opts)
	b.m.done(b.m.publish, "publish", start, err)
	if err == nil {
		b.m.published(channel, res)
	}
	return res, err
}

// InstrumentAppender returns a with every call timed and its
// publications counted in m, per channel as InstrumentBroker counts
// Publish. A nil a or m returns a itself.
func InstrumentAppender(a channels.Appender, m *Broker) channels.Appender {
	if a == nil || m == nil {
		return a
	}
	return &instrumentedAppender{a: a, m: m}
}

type instrumentedAppender struct {
	a channels.Appender
	m *Broker
}

func (a *instrumentedAppender) Append(ctx context.Context, chans []string, data json.RawMessage, opts channels.PublishOptions, seq *channels.Sequence) (channels.AppendResult, error) {
	start := time.Now()
	res, err := a.a.Append(ctx, chans, data, opts, seq)
	a.m.done(a.m.append, "append", start, err)
	// Results holds the channels appended before an error too (on a Redis
	// Cluster, one script per channel).
	for i, r := range res.Results {
		a.m.published(chans[i], r)
	}
	return res, err
}

func (b *instrumented) History(ctx context.Context, channel string, opts channels.HistoryOptions) (channels.HistoryResult, error) {
	start := time.Now()
	res, err := b.Broker.History(ctx, channel, opts)
	b.m.done(b.m.history, "history", start, err)
	return res, err
}

func (b *instrumented) Subscribe(ctx context.Context, channel string) error {
	start := time.Now()
	err := b.Broker.Subscribe(ctx, channel)
	b.m.done(b.m.subscribe, "subscribe", start, err)
	return err
}

func (b *instrumented) Unsubscribe(ctx context.Context, channel string) error {
	start := time.Now()
	err := b.Broker.Unsubscribe(ctx, channel)
	b.m.done(b.m.unsubscribe, "unsubscribe", start, err)
	return err
}

func (b *instrumented) Ready(ctx context.Context) error {
	start := time.Now()
	err := b.Broker.Ready(ctx)
	b.m.done(b.m.ready, "ready", start, err)
	return err
}

func (m *Broker) done(o prometheus.Observer, op string, start time.Time, err error) {
	o.Observe(time.Since(start).Seconds())
	if err != nil {
		m.errors.WithLabelValues(op, errorKind(err)).Inc()
	}
}

// published counts one channel's publication, or its dedup hit.
func (m *Broker) published(channel string, r channels.PublishResult) {
	if r.Duplicate {
		m.dedupHits[nsIndex(channel)].Inc()
	} else {
		m.publications[nsIndex(channel)].Inc()
	}
}

// errorKind sorts broker errors for alerting: "unavailable" and "timeout"
// mean the broker is in trouble, "canceled" usually that a client left
// mid-call.
func errorKind(err error) string {
	switch {
	// Before unavailable, which a broker wraps its timeouts in too.
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, channels.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}
