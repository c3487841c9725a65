package ingress

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// A stale event is marked by splicing into its encoding (so that Redis can
// do it in the script that appends it); the result must be exactly what
// encoding the event with Stale set gives.
func TestSequence_MarkEqualsEncodingTheStaleEvent(t *testing.T) {
	in := &Ingress{opts: Options{DedupWindow: time.Hour}}
	events := []Event{
		{ID: "k:1", Provider: "kriptomat", Type: "deposit.fiat", Status: StatusPending, User: "5", ReceivedAt: "2026-11-23T10:00:00.000Z",
			Amounts: map[string]Amount{}, Details: map[string]any{}, Raw: json.RawMessage(`{}`), Txn: "k:deposit:1", Rank: 1},
		// Strings before amounts that hold the marker's bytes, escaped.
		{ID: `x,"amounts":{}`, Provider: "p", Type: "t", Status: StatusPending, User: `u,"amounts":`, Merchant: "<m&>",
			OccurredAt: "\u2028", ReceivedAt: "now", Amounts: map[string]Amount{"amount": {Value: "1.00", Currency: "EUR"}},
			Details: map[string]any{"k": `,"amounts":`}, Raw: json.RawMessage(`{"amounts":1}`), Txn: "t", Rank: 0},
	}
	for _, ev := range events {
		data, err := ev.encode()
		if err != nil {
			t.Fatal(err)
		}
		seq := in.sequence(&ev, data)
		if seq == nil || seq.Key != ev.Txn || seq.Label != ev.Status || seq.Rank != ev.Rank || seq.TTL != time.Hour {
			t.Fatalf("sequence of %s: %+v", ev.ID, seq)
		}
		stale := ev
		stale.Stale, stale.CurrentStatus = true, StatusSucceeded
		want, _ := stale.encode()
		if got := seq.Mark(data, StatusSucceeded); !bytes.Equal(got, want) {
			t.Errorf("marked\n got %s\nwant %s", got, want)
		}
	}
	if seq := in.sequence(&Event{ID: "no txn"}, []byte(`{}`)); seq != nil {
		t.Fatalf("an event without Txn has a sequence: %+v", seq)
	}
}
