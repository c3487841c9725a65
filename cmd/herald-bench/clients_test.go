package main

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// The harness tells each way a delivery can go wrong apart: a duplicate,
// a skipped offset, one that arrives late (out of order, not lost), and a
// publication of another client's channel.
func TestClient_CountsEachDeliveryFault(t *testing.T) {
	pub := func(channel string, offset int) []byte {
		return fmt.Appendf(nil, `{"type":"pub","channel":%q,"offset":%d,"epoch":"E","data":{}}`, channel, offset)
	}
	for _, tc := range []struct {
		name                                      string
		frames                                    [][]byte
		received, dup, gaps, reordered, misrouted int64
	}{
		{"in order", [][]byte{pub("user:1", 1), pub("user:1", 2)}, 2, 0, 0, 0, 0},
		{"duplicate", [][]byte{pub("user:1", 1), pub("user:1", 2), pub("user:1", 2)}, 2, 1, 0, 0, 0},
		{"skipped", [][]byte{pub("user:1", 1), pub("user:1", 3)}, 2, 0, 1, 0, 0},
		{"skipped two", [][]byte{pub("user:1", 1), pub("user:1", 4)}, 2, 0, 2, 0, 0},
		{"late", [][]byte{pub("user:1", 1), pub("user:1", 3), pub("user:1", 2)}, 3, 0, 0, 1, 0},
		{"two late", [][]byte{pub("user:1", 1), pub("user:1", 4), pub("user:1", 2), pub("user:1", 3)}, 4, 0, 0, 2, 0},
		{"one late, one lost", [][]byte{pub("user:1", 1), pub("user:1", 4), pub("user:1", 3)}, 3, 0, 1, 1, 0},
		{"late, then again", [][]byte{pub("user:1", 1), pub("user:1", 3), pub("user:1", 2), pub("user:1", 2)}, 3, 1, 0, 1, 0},
		{"another's", [][]byte{pub("user:1", 1), pub("user:12", 2)}, 1, 0, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &client{channel: "user:1", epoch: "E"}
			var tl tally
			for _, f := range tc.frames {
				c.frame(f, time.Now(), nil, &tl)
			}
			got := []int64{tl.received.Load(), tl.duplicates.Load(), tl.gaps.Load(), tl.reordered.Load(), tl.misrouted.Load()}
			want := []int64{tc.received, tc.dup, tc.gaps, tc.reordered, tc.misrouted}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("received, duplicates, gaps, out of order, misrouted: %v, want %v", got, want)
			}
		})
	}
}

// A run that would make no publication, or more webhooks than it may
// build, is refused before it starts.
func TestOptions_RefuseRunsWithoutPublicationsOrTooManyWebhooks(t *testing.T) {
	base := []string{"-url", "http://127.0.0.1:1", "-jwt-secret", "s", "-api-key", "k", "-provider-secret", "p"}
	for _, args := range [][]string{
		{"-scenario", "fanout", "-rate", "0.5", "-duration", "1s"},
		{"-scenario", "peruser", "-via", "ingress", "-rate", "50000", "-duration", "1m"},
	} {
		if _, err := parseOptions(append(base, args...), io.Discard); err == nil || !strings.Contains(err.Error(), "-rate × -duration") {
			t.Errorf("%v: %v, want refused", args, err)
		}
	}
	if _, err := parseOptions(append(base, "-scenario", "fanout", "-rate", "20", "-duration", "1s"), io.Discard); err != nil {
		t.Errorf("a small fanout run: %v", err)
	}
}
