package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"herald/channels"
)

// EventTimeFunc returns when the event in a publication's data entered
// herald, if the data says so.
type EventTimeFunc func(data []byte) (time.Time, bool)

// closeCodes are the close codes counted under their own label; any other
// code a client sends is counted as "other". 1006 stands for a connection
// that ended without a close handshake (dropped, or unanswered pings).
var closeCodes = []int{1000, 1001, 1002, 1006, 1009, 1013, 4001, 4002, 4008, 4009, 4010, 4029}

// Hub is what the websocket hub reports. Its methods are cheap enough for
// the fan-out path: an atomic add on a series resolved at start-up.
type Hub struct {
	connections      prometheus.Gauge
	connectionsTotal prometheus.Counter
	subscriptions    [len(namespaces)]prometheus.Gauge
	live, replayed   prometheus.Counter
	overflows        prometheus.Counter
	closes           map[int]prometheus.Counter
	closesOther      prometheus.Counter
	resumed          prometheus.Counter
	notResumed       map[string]prometheus.Counter
	gaps             map[string]prometheus.Counter
	latency          prometheus.Observer
	eventTime        EventTimeFunc
}

// The reasons counted apart; anything else is "other".
var gapReasons = []string{channels.ReasonEpochMismatch, channels.ReasonOffsetExpired, "other"}

func newHub(reg prometheus.Registerer, eventTime EventTimeFunc) *Hub {
	connections := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_connections",
		Help: "Websocket sessions open now (authenticated or waiting for their connect frame).",
	})
	connectionsTotal := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_connections_total",
		Help: "Websocket sessions opened.",
	})
	subscriptions := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_subscriptions",
		Help: "Subscriptions held now, by channel namespace.",
	}, []string{"namespace"})
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_deliveries_total",
		Help: "Publications queued to clients: live ones, and missed ones replayed on a resume.",
	}, []string{"kind"})
	overflows := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_send_queue_overflows_total",
		Help: "Clients closed with 4009 because their send queue overflowed.",
	})
	closes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_closes_total",
		Help: "Websocket sessions ended, by close code (1006: no close handshake); connections refused right after the upgrade (4029 over the per-address limit, 1013 over the node's, 4010 when draining began during the upgrade) count too.",
	}, []string{"code"})
	resumes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_resumes_total",
		Help: "Subscribes with since: recovered without a gap, or not and why.",
	}, []string{"recovered", "reason"})
	gaps := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_gaps_total",
		Help: "Losses announced to subscribers during a subscription (server-sent subscribed with recovered:false).",
	}, []string{"reason"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "herald_ingress_to_delivery_seconds",
		Help:    "From an ingress request's arrival (received_at) to the fan-out of its publication on this node; once per publication with local subscribers.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	if reg != nil {
		reg.MustRegister(connections, connectionsTotal, subscriptions, deliveries, overflows, closes, resumes, gaps, latency)
	}
	m := &Hub{
		connections:      connections,
		connectionsTotal: connectionsTotal,
		subscriptions:    perNamespace(subscriptions.WithLabelValues),
		live:             deliveries.WithLabelValues("live"),
		replayed:         deliveries.WithLabelValues("recovered"),
		overflows:        overflows,
		closes:           make(map[int]prometheus.Counter, len(closeCodes)),
		closesOther:      closes.WithLabelValues("other"),
		resumed:          resumes.WithLabelValues("true", "none"),
		notResumed:       make(map[string]prometheus.Counter, len(gapReasons)),
		gaps:             make(map[string]prometheus.Counter, len(gapReasons)),
		latency:          latency,
		eventTime:        eventTime,
	}
	for _, code := range closeCodes {
		m.closes[code] = closes.WithLabelValues(strconv.Itoa(code))
	}
	for _, r := range gapReasons {
		m.notResumed[r] = resumes.WithLabelValues("false", r)
		m.gaps[r] = gaps.WithLabelValues(r)
	}
	return m
}

// Connected counts a session that started.
func (m *Hub) Connected() {
	if m == nil {
		return
	}
	m.connections.Inc()
	m.connectionsTotal.Inc()
}

// Disconnected counts a session that ended.
func (m *Hub) Disconnected() {
	if m == nil {
		return
	}
	m.connections.Dec()
}

// Subscribed counts a subscription to channel; Unsubscribed must follow
// with the same name.
func (m *Hub) Subscribed(channel string) {
	if m == nil {
		return
	}
	m.subscriptions[nsIndex(channel)].Inc()
}

// Unsubscribed counts the end of a subscription to channel.
func (m *Hub) Unsubscribed(channel string) {
	if m == nil {
		return
	}
	m.subscriptions[nsIndex(channel)].Dec()
}

// Delivered counts n live publications queued to clients. The hub calls it
// once per fan-out, not once per subscriber.
func (m *Hub) Delivered(n int) {
	if m == nil || n == 0 {
		return
	}
	m.live.Add(float64(n))
}

// Replayed counts n missed publications queued to a resuming client.
func (m *Hub) Replayed(n int) {
	if m == nil || n == 0 {
		return
	}
	m.replayed.Add(float64(n))
}

// Closed counts a session's end by its close code: the code herald sent,
// the code the client sent, or 1006 when there was no handshake.
func (m *Hub) Closed(code int) {
	if m == nil {
		return
	}
	if code == 4009 {
		m.overflows.Inc()
	}
	if c, ok := m.closes[code]; ok {
		c.Inc()
		return
	}
	m.closesOther.Inc()
}

// Resumed counts a subscribe with since: whether nothing was missed, and
// if something was, why.
func (m *Hub) Resumed(recovered bool, reason string) {
	if m == nil {
		return
	}
	if recovered {
		m.resumed.Inc()
		return
	}
	c, ok := m.notResumed[reason]
	if !ok {
		c = m.notResumed["other"]
	}
	c.Inc()
}

// Gap counts a loss announced during a subscription.
func (m *Hub) Gap(reason string) {
	if m == nil {
		return
	}
	c, ok := m.gaps[reason]
	if !ok {
		c = m.gaps["other"]
	}
	c.Inc()
}

// FannedOut observes, once per publication fanned out on this node, how
// long ago its event entered herald. Data that carries no such time (a
// server API publication) is not observed. Clocks of different nodes may
// disagree; a negative age counts as zero.
func (m *Hub) FannedOut(data []byte) {
	if m == nil || m.eventTime == nil {
		return
	}
	t, ok := m.eventTime(data)
	if !ok {
		return
	}
	m.latency.Observe(max(time.Since(t).Seconds(), 0))
}
