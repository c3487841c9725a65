package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"herald/channels"
	"herald/ingress"
	"herald/internal/heraldtest"
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
	in.DeadLetter("p", "unknown_event")
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

// partial appends to the first channel and fails on the second, as a
// Redis Cluster's one script per channel can.
type partial struct{}

func (partial) Append(context.Context, []string, json.RawMessage, channels.PublishOptions, *channels.Sequence) (channels.AppendResult, error) {
	return channels.AppendResult{Results: []channels.PublishResult{{Position: channels.Position{Offset: 1, Epoch: "e"}}}}, channels.ErrUnavailable
}

// What an append did before it failed is counted.
func TestInstrumentAppender_CountsWhatAFailedAppendDid(t *testing.T) {
	m := metrics.New(metrics.Options{Node: "n"})
	a := metrics.InstrumentAppender(partial{}, m.Broker)
	if _, err := a.Append(context.Background(), []string{"user:1", "merchant:m"}, json.RawMessage(`{}`), channels.PublishOptions{}, nil); err == nil {
		t.Fatal("no error")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	got, err := heraldtest.ParseMetrics(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, ns := range []string{"user", "merchant"} {
		counts[ns] = got.Get("herald_publications_total", "namespace", ns)
	}
	if counts["user"] != 1 || counts["merchant"] != 0 {
		t.Fatalf("publications counted: %v, want user 1", counts)
	}
}

// failing fails every append with err.
type failing struct{ err error }

func (f failing) Append(context.Context, []string, json.RawMessage, channels.PublishOptions, *channels.Sequence) (channels.AppendResult, error) {
	return channels.AppendResult{}, f.err
}

// A broker's timeout is a timeout, though the broker wraps it as
// unavailable too (as the Redis engine does).
func TestBrokerErrors_ByKind(t *testing.T) {
	m := metrics.New(metrics.Options{Node: "n"})
	for _, err := range []error{
		fmt.Errorf("redis publish: %w: %w", channels.ErrUnavailable, context.DeadlineExceeded),
		fmt.Errorf("redis publish: %w: %w", channels.ErrUnavailable, os.ErrDeadlineExceeded),
		fmt.Errorf("redis publish: %w: connection refused", channels.ErrUnavailable),
		errors.New("ERR script exploded"),
	} {
		_, _ = metrics.InstrumentAppender(failing{err}, m.Broker).Append(context.Background(), []string{"user:1"}, json.RawMessage(`{}`), channels.PublishOptions{}, nil)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	got, err := heraldtest.ParseMetrics(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[string]float64{"timeout": 2, "unavailable": 1, "other": 1} {
		if n := got.Get("herald_broker_errors_total", "operation", "append", "kind", kind); n != want {
			t.Errorf("kind %s: %v, want %v", kind, n, want)
		}
	}
}
