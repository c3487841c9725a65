// Package clientip tells who is really on the other end of a request when
// herald runs behind load balancers: the connection's address, unless it
// is a trusted proxy, in which case the nearest untrusted address of
// X-Forwarded-For. Per-address limits and provider allow lists both depend
// on getting this right — and on never believing a header that an
// untrusted peer could have written.
package clientip

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Resolver finds a request's client address.
type Resolver struct {
	// Trusted lists the proxies whose X-Forwarded-For is believed.
	Trusted []netip.Prefix
	// Untrusted, when set, is told of a peer that sent X-Forwarded-For
	// but is not trusted: most often a load balancer left out of Trusted,
	// which makes all its clients one address.
	Untrusted func(peer netip.Addr)
}

// Of returns the client address of r, or the zero Addr when it cannot be
// read.
func (res Resolver) Of(r *http.Request) netip.Addr {
	addr := remote(r.RemoteAddr)
	if !res.trusted(addr) {
		if res.Untrusted != nil && len(r.Header.Values("X-Forwarded-For")) > 0 {
			res.Untrusted(addr)
		}
		return addr
	}
	// Walk X-Forwarded-For from the nearest hop back: the first address
	// that is not one of our proxies is the client.
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := parseHop(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // a malformed chain: trust nothing beyond the proxy
		}
		hop = hop.Unmap()
		if !res.trusted(hop) {
			return hop
		}
		addr = hop
	}
	return addr
}

func (res Resolver) trusted(a netip.Addr) bool {
	for _, p := range res.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func remote(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// parseHop reads one X-Forwarded-For entry: an address, or, as some load
// balancers write it, an address with a port ("198.51.100.9:51234",
// "[2001:db8::9]:443") or a bracketed IPv6 address.
func parseHop(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err == nil {
		return a, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), nil
	}
	if inner, ok := strings.CutPrefix(s, "["); ok {
		if inner, ok = strings.CutSuffix(inner, "]"); ok {
			return netip.ParseAddr(inner)
		}
	}
	return netip.Addr{}, err
}
