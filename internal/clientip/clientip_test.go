package clientip_test

import (
	"net/http"
	"net/netip"
	"testing"

	"herald/internal/clientip"
)

func TestOf(t *testing.T) {
	proxies := clientip.Resolver{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	cases := []struct {
		name   string
		res    clientip.Resolver
		remote string
		xff    []string
		want   string
	}{
		{"direct", proxies, "203.0.113.7:5000", nil, "203.0.113.7"},
		{"untrusted peer's header is ignored", proxies, "203.0.113.7:5000", []string{"1.2.3.4"}, "203.0.113.7"},
		{"no proxies configured", clientip.Resolver{}, "10.0.0.2:5000", []string{"1.2.3.4"}, "10.0.0.2"},
		{"through our proxy", proxies, "10.0.0.2:5000", []string{"198.51.100.9"}, "198.51.100.9"},
		{"spoofed hops before the client are ignored", proxies, "10.0.0.2:5000", []string{"6.6.6.6, 198.51.100.9"}, "198.51.100.9"},
		{"two of our proxies", proxies, "10.0.0.2:5000", []string{"198.51.100.9, 10.0.0.3"}, "198.51.100.9"},
		{"several headers", proxies, "10.0.0.2:5000", []string{"6.6.6.6", "198.51.100.9"}, "198.51.100.9"},
		{"malformed chain stops at the proxy", proxies, "10.0.0.2:5000", []string{"198.51.100.9, garbage"}, "10.0.0.2"},
		{"hop with a port", proxies, "10.0.0.2:5000", []string{"198.51.100.9:51234"}, "198.51.100.9"},
		{"ipv6 hop with a port", proxies, "10.0.0.2:5000", []string{"[2001:db8::9]:443"}, "2001:db8::9"},
		{"bracketed ipv6 hop", proxies, "10.0.0.2:5000", []string{"[2001:db8::9]"}, "2001:db8::9"},
		{"our proxy with a port", proxies, "10.0.0.2:5000", []string{"198.51.100.9, 10.0.0.3:8080"}, "198.51.100.9"},
		{"a port alone is malformed", proxies, "10.0.0.2:5000", []string{":443"}, "10.0.0.2"},
		{"ipv6", proxies, "[2001:db8::1]:5000", nil, "2001:db8::1"},
		{"mapped ipv4", proxies, "[::ffff:203.0.113.7]:5000", nil, "203.0.113.7"},
	}
	for _, tc := range cases {
		r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{"X-Forwarded-For": tc.xff}}
		if got := tc.res.Of(r); got.String() != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// A peer outside Trusted that sends X-Forwarded-For is reported (a load
// balancer left out of the list); a trusted one, or a plain client, is not.
func TestOf_ReportsAnUntrustedForwarder(t *testing.T) {
	var told []string
	res := clientip.Resolver{
		Trusted:   []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Untrusted: func(peer netip.Addr) { told = append(told, peer.String()) },
	}
	for _, r := range []*http.Request{
		{RemoteAddr: "203.0.113.7:5000", Header: http.Header{}},
		{RemoteAddr: "10.0.0.2:5000", Header: http.Header{"X-Forwarded-For": {"198.51.100.9"}}},
		{RemoteAddr: "192.0.2.1:5000", Header: http.Header{"X-Forwarded-For": {"198.51.100.9"}}},
	} {
		res.Of(r)
	}
	if len(told) != 1 || told[0] != "192.0.2.1" {
		t.Fatalf("told of %v, want [192.0.2.1]", told)
	}
}
