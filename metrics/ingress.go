package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Ingress is what the webhook ingress reports.
type Ingress struct {
	known    map[string]bool
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	dead     *prometheus.CounterVec
}

func newIngress(reg prometheus.Registerer, providers []string) *Ingress {
	m := &Ingress{
		known: make(map[string]bool, len(providers)),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_ingress_requests_total",
			Help: "Webhook requests by provider and outcome (published, duplicate, dead_letter, malformed, unauthorized, forbidden, not_found, unavailable, …).",
		}, []string{"provider", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_ingress_request_duration_seconds",
			Help:    "Time to answer a webhook request, by provider.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"provider"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dead_letters_total",
			Help: "Webhooks kept for operators instead of published, by provider and reason (unknown_event, no_route, malformed, internal).",
		}, []string{"provider", "reason"}),
	}
	for _, p := range providers {
		m.known[p] = true
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.dead)
	}
	return m
}

// provider bounds the label: a slug from a request path is used only when
// it names a registered provider.
func (m *Ingress) provider(slug string) string {
	if m.known[slug] {
		return slug
	}
	return "other"
}

// Request counts one answered webhook request. outcome comes from the
// ingress's fixed set of outcomes.
func (m *Ingress) Request(provider, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	p := m.provider(provider)
	m.requests.WithLabelValues(p, outcome).Inc()
	m.duration.WithLabelValues(p).Observe(d.Seconds())
}

// DeadLetter counts a webhook kept as a dead letter, for a reason:
// unknown_event or no_route (a known event with no channel configured;
// both answered 202), malformed (400) or internal (herald's own fault,
// 500).
func (m *Ingress) DeadLetter(provider, reason string) {
	if m == nil {
		return
	}
	m.dead.WithLabelValues(m.provider(provider), reason).Inc()
}
