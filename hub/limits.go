package hub

import (
	"net/netip"
	"syscall"
)

// FilesKept is what the default MaxConns leaves of the process's file
// limit for everything but websocket clients: webhooks and API calls in
// flight, the broker's connections, and the files a node opens.
const FilesKept = 1024

// DefaultMaxConns is the process's file limit less FilesKept, and at least
// a quarter of the limit. (Go raises the soft limit to the hard one at
// start.)
func DefaultMaxConns() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 { // unlimited, or as good as
		return 1 << 30
	}
	files := int(lim.Cur)
	return max(files-FilesKept, files/4, 1)
}

// addressOf is what the per-address limit counts for a client at a (as
// clientip gives it, unmapped): a itself, or for IPv6 its /64, which one
// host is commonly given whole.
func addressOf(a netip.Addr) netip.Addr {
	if !a.Is6() {
		return a
	}
	p, err := a.Prefix(64)
	if err != nil {
		return a
	}
	return p.Addr()
}
