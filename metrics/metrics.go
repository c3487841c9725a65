package metrics

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"herald/channels"
)

// Metrics is every collector of one node.
type Metrics struct {
	reg *prometheus.Registry
	// Hub, Ingress and Broker are the parts the packages report to.
	Hub     *Hub
	Ingress *Ingress
	Broker  *Broker
}

// Options name what New cannot know by itself.
type Options struct {
	// Node is the node's id, exported as herald_node_info{node}.
	Node string
	// Providers are the provider slugs that may appear as labels; any
	// other slug in a request path is reported as "other".
	Providers []string
	// EventTime extracts, from a publication's data, when the event entered
	// herald (the ingress's received_at). It feeds the ingress-to-delivery
	// histogram; nil or a false result skips the observation.
	EventTime EventTimeFunc
}

// New registers every herald collector, plus the Go runtime and process
// collectors, on a new registry.
func New(opts Options) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_node_info",
		Help: "Always 1; the node label is HERALD_NODE_ID.",
	}, []string{"node"})
	info.WithLabelValues(opts.Node).Set(1)
	reg.MustRegister(info)
	return &Metrics{
		reg:     reg,
		Hub:     newHub(reg, opts.EventTime),
		Ingress: newIngress(reg, opts.Providers),
		Broker:  newBroker(reg),
	}
}

// Handler serves the registry in the Prometheus text format (GET /metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the node's registry, for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// namespaces are the label values of every per-namespace series, in the
// order of the arrays that hold their children.
var namespaces = [...]string{channels.NamespaceUser, channels.NamespaceMerchant, channels.NamespaceAlerts, "other"}

// nsIndex maps a channel name to its namespace's index in namespaces,
// without allocating.
func nsIndex(channel string) int {
	ns, _, _ := strings.Cut(channel, ":")
	switch ns {
	case channels.NamespaceUser:
		return 0
	case channels.NamespaceMerchant:
		return 1
	case channels.NamespaceAlerts:
		return 2
	}
	return 3
}

// perNamespace pre-resolves a vector's children, one per namespace.
func perNamespace[T any](with func(...string) T) [len(namespaces)]T {
	var out [len(namespaces)]T
	for i, ns := range namespaces {
		out[i] = with(ns)
	}
	return out
}
