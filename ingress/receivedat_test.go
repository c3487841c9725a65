package ingress

import (
	"encoding/json"
	"testing"
	"time"
)

func TestReceivedAt_ReadsWhatTheIngressWrites(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(2026, 11, 22, 10, 0, 0, 123000000, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 1, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("x", 3600)),
	} {
		ev := Event{ID: "p:1", Provider: "p", Type: "t", Status: StatusInfo, User: "7", ReceivedAt: FormatTime(at),
			Details: map[string]any{"received_at": "1970-01-01T00:00:00Z"}, Raw: json.RawMessage(`{"received_at":"x"}`)}
		data, err := ev.encode()
		if err != nil {
			t.Fatal(err)
		}
		got, ok := ReceivedAt(data)
		if !ok || !got.Equal(at) {
			t.Errorf("%s: got %v %v, want %v", data, got, ok, at)
		}
	}
}

func TestReceivedAt_IgnoresOtherData(t *testing.T) {
	for _, data := range []string{
		`{"hello":"world"}`,
		`{"received_at":"2026-01-02T03:04:05Z"}`,
		`{"id":"x","received_at":"yesterday"}`,
		`{"id":"x","received_at":"2026-01-02T03:04:05.Z"}`,
		`{"id":"x","received_at":"2026-01-02T03:04:05+01:00"}`,
		`{"id":"x","received_at":"2026-01-02T03:04:05`,
		`"just a string"`,
	} {
		if got, ok := ReceivedAt([]byte(data)); ok {
			t.Errorf("%s: got %v", data, got)
		}
	}
}

func TestReceivedAt_DoesNotAllocate(t *testing.T) {
	data, _ := json.Marshal(Event{ID: "kriptomat:exchange:58463:SUCCESS", Provider: "kriptomat", Type: "exchange.buy",
		Status: StatusSucceeded, User: "34693", ReceivedAt: FormatTime(time.Now()), Raw: json.RawMessage(`{}`)})
	if n := testing.AllocsPerRun(100, func() { _, _ = ReceivedAt(data) }); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}
