// Package metrics defines herald's Prometheus metrics and the hooks through
// which the hub, the ingress and the broker report to them.
//
// Start with New: it builds every collector of one node on that node's own
// registry (never the global one, so several nodes can run in one process)
// and hands out the parts each package reports to: Hub, Ingress, and
// InstrumentBroker, a decorator that times every Broker call whatever the
// implementation. Every method is safe on a nil receiver, so a package
// built without metrics (a unit test) needs no stubs.
//
// Labels are bounded by construction: namespaces, providers and close codes
// come from fixed sets and anything else is reported as "other". A user id
// or a channel name is never a label. The hub's per-delivery methods touch
// only pre-resolved series, so the fan-out path does no label lookups.
package metrics
