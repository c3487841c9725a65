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
