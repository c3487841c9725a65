package channels_test

import (
	"errors"
	"strings"
	"testing"

	"herald/channels"
)

func TestParse_AcceptsTheGrammar(t *testing.T) {
	for _, s := range []string{"user:42", "merchant:acme", "alerts:acme", "user:a.b_c@d:e-f", "user:" + strings.Repeat("x", 128)} {
		if _, err := channels.Parse(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestParse_RejectsWithoutNormalising(t *testing.T) {
	for _, s := range []string{"", "user", "user:", "User:42", "users:42", "user:4 2", "user:42/", "user:é", " user:42",
		"user:" + strings.Repeat("x", 129), "other:1", ":42", "user:42\n"} {
		if _, err := channels.Parse(s); !errors.Is(err, channels.ErrBadName) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestGrants(t *testing.T) {
	g := channels.Grants{Subject: "42", Merchant: "acme", Channels: []string{"user:7", "merchant:other"}}
	for ch, want := range map[string]bool{
		"user:42": true, "merchant:acme": true, "alerts:acme": true, "user:7": true, "merchant:other": true,
		"user:43": false, "merchant:acme2": false, "alerts:other": false, "user:4": false, "alerts:42": false,
	} {
		if got := g.Allows(ch); got != want {
			t.Errorf("Allows(%q) = %v, want %v", ch, got, want)
		}
	}
	if (channels.Grants{Subject: "42"}).Allows("merchant:") {
		t.Error("a token without merchant claim was granted merchant:")
	}
	if got := (channels.Grants{Subject: "a b"}).List(); len(got) != 0 {
		t.Errorf("invalid subject listed: %v", got)
	}
}

func TestRecover(t *testing.T) {
	res := channels.HistoryResult{Position: channels.Position{Offset: 25, Epoch: "E"}, Earliest: 10}
	cases := []struct {
		since  channels.Position
		ok     bool
		reason string
	}{
		{channels.Position{Offset: 17, Epoch: "E"}, true, ""},
		{channels.Position{Offset: 25, Epoch: "E"}, true, ""},
		{channels.Position{Offset: 9, Epoch: "E"}, true, ""},
		{channels.Position{Offset: 8, Epoch: "E"}, false, channels.ReasonOffsetExpired},
		{channels.Position{Offset: 17, Epoch: "F"}, false, channels.ReasonEpochMismatch},
		{channels.Position{Offset: 26, Epoch: "E"}, false, channels.ReasonEpochMismatch},
	}
	for _, tc := range cases {
		ok, reason := res.Recover(tc.since)
		if ok != tc.ok || reason != tc.reason {
			t.Errorf("Recover(%+v) = %v %q, want %v %q", tc.since, ok, reason, tc.ok, tc.reason)
		}
	}
}
