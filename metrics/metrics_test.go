package metrics_test

import (
	"strings"
	"testing"
	"time"

	"herald/ingress"
	"herald/metrics"
)

// The fan-out path calls Delivered and FannedOut once per publication:
// neither may allocate.
func TestHub_FanOutPathDoesNotAllocate(t *testing.T) {
	m := metrics.New(metrics.Options{Node: "n", EventTime: ingress.ReceivedAt}).Hub
	data := event(time.Now())
	if n := testing.AllocsPerRun(1000, func() {
		m.Delivered(100)
		m.FannedOut(data)
		m.Subscribed("user:42")
		m.Unsubscribed("user:42")
	}); n != 0 {
		t.Fatalf("%v allocations per publication", n)
	}
}

// A nil *Hub, *Ingress or *Broker is a valid "no metrics".
func TestNilMetricsAreNoOps(t *testing.T) {
	var h *metrics.Hub
	h.Connected()
	h.Delivered(1)
	h.FannedOut(event(time.Now()))
	h.Closed(4009)
	h.Resumed(false, "x")
	var in *metrics.Ingress
	in.Request("p", "published", time.Second)
	in.DeadLetter("p", true)
	if b := metrics.InstrumentBroker(nil, nil); b != nil {
		t.Fatal("InstrumentBroker with no metrics must return the broker itself")
	}
}

func event(at time.Time) []byte {
	return []byte(`{"id":"kriptomat:withdrawal.fiat:58463:SUCCESSFUL","provider":"kriptomat","type":"withdrawal.fiat","status":"succeeded","user":"42","merchant":"acme","received_at":"` +
		ingress.FormatTime(at) + `","amounts":{},"details":{},"raw":{` + strings.Repeat(`"k":1,`, 50) + `"z":0}}`)
}

func BenchmarkHub_PerPublication(b *testing.B) {
	m := metrics.New(metrics.Options{Node: "n", EventTime: ingress.ReceivedAt}).Hub
	data := event(time.Now())
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m.Delivered(100)
		m.FannedOut(data)
	}
}
