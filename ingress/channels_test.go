package ingress

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A counterparty (a transfer's receiver) gets the event on its own user
// channel, once, and never a one-time code or an alert meant elsewhere;
// one that cannot be a channel id is left out, not refused.
func TestChannels_Counterparty(t *testing.T) {
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{Event{User: "a", Counterparty: "b", Merchant: "m"}, "user:a user:b merchant:m"},
		{Event{User: "a", Counterparty: "a", Merchant: "m"}, "user:a merchant:m"},
		{Event{Counterparty: "b", Merchant: "m"}, "user:b merchant:m"},
		{Event{User: "a", Counterparty: "b", Route: RouteUserOnly}, "user:a"},
		{Event{User: "a", Counterparty: "b", Merchant: "m", Route: RouteAlertOnly}, "alerts:m"},
	} {
		if got := strings.Join(tc.ev.Channels(), " "); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.ev, got, tc.want)
		}
	}

	in := &Ingress{opts: Options{Logger: slog.New(slog.DiscardHandler)}}
	ev := &Event{ID: "p:1", Type: "t", Status: StatusInfo, User: "a", Counterparty: "b+c"}
	if err := in.complete(ev, "p", Config{Merchant: "m"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ev.Channels(), " "); got != "user:a merchant:m" {
		t.Fatalf("with a counterparty outside the grammar: %s", got)
	}
}
