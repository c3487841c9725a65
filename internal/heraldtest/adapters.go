package heraldtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"testing"

	"github.com/shopspring/decimal"

	"herald/channels"
	"herald/ingress"
)

// typeName is the shape of every event type: dotted, lower case.
var typeName = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)+$`)

var statuses = map[string]bool{
	ingress.StatusPending: true, ingress.StatusSucceeded: true, ingress.StatusFailed: true,
	ingress.StatusApproved: true, ingress.StatusRejected: true, ingress.StatusCancelled: true,
	ingress.StatusExpired: true, ingress.StatusInfo: true,
}

// CheckParse asserts what every adapter's Parse promises for any body:
// an error wraps ErrMalformed or ErrUnknownEvent; an event has an id, a
// dotted lower-case type and one of SPEC's statuses, encodes as JSON, and
// each amount is a valid decimal in the provider's own digits (found
// verbatim in the body whenever the body has no escapes to hide them).
func CheckParse(t testing.TB, body []byte, ev *ingress.Event, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ingress.ErrMalformed) && !errors.Is(err, ingress.ErrUnknownEvent) {
			t.Fatalf("error wraps neither ErrMalformed nor ErrUnknownEvent: %v", err)
		}
		if ev != nil {
			t.Fatalf("an event and an error: %+v, %v", ev, err)
		}
		return
	}
	if ev == nil || ev.ID == "" || !typeName.MatchString(ev.Type) || !statuses[ev.Status] {
		t.Fatalf("bad event: %+v", ev)
	}
	if _, err := json.Marshal(ev); err != nil {
		t.Fatalf("event does not encode: %v", err)
	}
	for name, a := range ev.Amounts {
		if _, err := decimal.NewFromString(a.Value); err != nil {
			t.Fatalf("amount %s = %q is not a decimal", name, a.Value)
		}
		if !bytes.ContainsRune(body, '\\') && !bytes.Contains(body, []byte(a.Value)) {
			t.Fatalf("amount %s = %q is not the provider's digits", name, a.Value)
		}
	}
}

// AddFixtures seeds a fuzz corpus with every fixture of provider.
func AddFixtures(f *testing.F, provider string) {
	for _, body := range Fixtures(f, provider) {
		f.Add(body)
	}
}

// Events returns every event published to channel, oldest first.
func (n *Node) Events(t testing.TB, channel string) []ingress.Event {
	t.Helper()
	h, err := n.Server.Broker().History(context.Background(), channel, channels.HistoryOptions{Limit: 1000})
	if err != nil {
		t.Fatalf("history of %s: %v", channel, err)
	}
	out := make([]ingress.Event, len(h.Publications))
	for i, p := range h.Publications {
		if err := json.Unmarshal(p.Data, &out[i]); err != nil {
			t.Fatalf("publication %d of %s: %v", i, channel, err)
		}
	}
	return out
}

// Deliver posts a webhook authenticated with ProviderSecret, fails the
// test unless it was published, and returns the channels it went to, in
// the answer's order, and the event as the first of them received it.
func (n *Node) Deliver(t testing.TB, provider string, body []byte) ([]string, ingress.Event) {
	t.Helper()
	code, res := n.Ingress(t, provider, body)
	if code != 200 || res["status"] != "published" {
		t.Fatalf("not published: %d %v", code, res)
	}
	var chans []string
	for _, p := range res["publications"].([]any) {
		chans = append(chans, p.(map[string]any)["channel"].(string))
	}
	evs := n.Events(t, chans[0])
	ev := evs[len(evs)-1]
	if ev.ID != res["event"] {
		t.Fatalf("answer names event %v, %s received %s", res["event"], chans[0], ev.ID)
	}
	return chans, ev
}

// CheckRefusals runs every body through parse, one subtest each by
// name, and fails unless the error wraps want.
func CheckRefusals(t *testing.T, parse func(*ingress.Request) (*ingress.Event, error), want error, bodies map[string]string) {
	t.Helper()
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			ev, err := parse(&ingress.Request{Body: []byte(body)})
			if !errors.Is(err, want) {
				t.Fatalf("got %+v, %v; want %v", ev, err, want)
			}
		})
	}
}
