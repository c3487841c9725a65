package hub_test

import (
	"context"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/hub"
	"herald/internal/heraldtest"
	"herald/internal/server"
)

func TestConnectionsPerAddressAreLimited(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.MaxConnsPerIP = 3 })
	var open []*heraldtest.Client
	for i := 0; i < 3; i++ {
		open = append(open, heraldtest.Connect(t, n, heraldtest.Token(t, "42", "")))
	}
	flood := heraldtest.Dial(t, n)
	if code := flood.CloseStatus(5 * time.Second); code != hub.StatusRateLimited {
		t.Fatalf("the 4th connection from one address: close %d, want 4029", code)
	}
	// The ones already open are untouched, and a slot freed is reusable.
	open[0].Send(map[string]any{"type": "ping"})
	open[0].Expect("pong")
	_ = open[1].Conn.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for n.Server.Hub().Clients() != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
}

func TestConnectionsPerAddressBehindTrustedProxies(t *testing.T) {
	from := behindProxy(t, 2)
	for _, addr := range []string{"198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.2"} {
		from(addr).Expect("connected")
	}
	if code := from("198.51.100.1").CloseStatus(5 * time.Second); code != hub.StatusRateLimited {
		t.Fatalf("third connection of one client behind the proxy: %d", code)
	}
	from("198.51.100.3").Expect("connected")
}

func TestFramesTooFastClose4029(t *testing.T) {
	n := start(t, func(c *server.Config) {
		c.Hub.FrameRate = 20
		c.Hub.FrameBurst = 30
	})
	sane := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	for i := 0; i < 10; i++ {
		sane.Send(map[string]any{"type": "ping"})
		sane.Expect("pong")
		time.Sleep(60 * time.Millisecond)
	}
	flood := heraldtest.Connect(t, n, heraldtest.Token(t, "43", ""))
	for i := 0; i < 200; i++ {
		b := []byte(`{"type":"ping"}`)
		if err := flood.Conn.Write(context.Background(), websocket.MessageText, b); err != nil {
			break
		}
	}
	if code := flood.CloseStatus(5 * time.Second); code != hub.StatusRateLimited {
		t.Fatalf("a client flooding frames: close %d, want 4029", code)
	}
	sane.Send(map[string]any{"type": "ping"})
	sane.Expect("pong")
}

// waitClients waits until the node counts want clients.
func waitClients(t *testing.T, n *heraldtest.Node, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Server.Hub().Clients() != want {
		if time.Now().After(deadline) {
			t.Fatalf("clients: %d, want %d", n.Server.Hub().Clients(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A node full of clients closes the next with 1013, so that it tries
// another node, and takes one again once a slot is free.
func TestConnectionsPerNodeAreLimited(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.MaxConns = 3 })
	var open []*heraldtest.Client
	for i := 0; i < 3; i++ {
		open = append(open, heraldtest.Connect(t, n, heraldtest.Token(t, "42", "")))
	}
	bearer := http.Header{"Authorization": {"Bearer " + heraldtest.Token(t, "42", "")}}
	if code := heraldtest.DialHeader(t, n, bearer).CloseStatus(5 * time.Second); code != websocket.StatusTryAgainLater {
		t.Fatalf("a 4th connection to a node for 3: close %d, want 1013", code)
	}
	open[0].Send(map[string]any{"type": "ping"})
	open[0].Expect("pong")
	_ = open[1].Conn.Close(websocket.StatusNormalClosure, "")
	waitClients(t, n, 2)
	heraldtest.DialHeader(t, n, bearer).Expect("connected")
}

// Connections awaiting their connect frame may hold a quarter of the
// node's slots: a flood of them leaves room for clients that authenticate
// at the upgrade, and those that do authenticate free their place.
func TestUnauthenticatedConnectionsAreLimited(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.MaxConns = 8 })
	silent := []*heraldtest.Client{heraldtest.Dial(t, n), heraldtest.Dial(t, n)}
	waitClients(t, n, 2)
	if code := heraldtest.Dial(t, n).CloseStatus(5 * time.Second); code != websocket.StatusTryAgainLater {
		t.Fatalf("a 3rd connection awaiting authentication of 8 slots: close %d, want 1013", code)
	}
	bearer := http.Header{"Authorization": {"Bearer " + heraldtest.Token(t, "42", "")}}
	heraldtest.DialHeader(t, n, bearer).Expect("connected")

	silent[0].Send(map[string]any{"type": "connect", "token": heraldtest.Token(t, "42", "")})
	silent[0].Expect("connected")
	heraldtest.Connect(t, n, heraldtest.Token(t, "43", ""))
}

// An IPv6 client is counted by its /64: one host is commonly given a
// whole one, and could otherwise take any number of addresses.
func TestConnectionsPerIPv6AddressCountTheSlash64(t *testing.T) {
	from := behindProxy(t, 1)
	from("2001:db8:0:1::1").Expect("connected")
	if code := from("2001:db8:0:1:ffff::2").CloseStatus(5 * time.Second); code != hub.StatusRateLimited {
		t.Fatalf("a second address of the same /64: close %d, want 4029", code)
	}
	from("2001:db8:0:2::1").Expect("connected")
}

// behindProxy starts a node that allows perIP connections from one client
// address and trusts the loopback as its proxy. It returns a dial of a
// client at an address.
func behindProxy(t *testing.T, perIP int) func(addr string) *heraldtest.Client {
	n := start(t, func(c *server.Config) {
		c.Hub.MaxConnsPerIP = perIP
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	return func(addr string) *heraldtest.Client {
		return heraldtest.DialHeader(t, n, http.Header{
			"X-Forwarded-For": {addr},
			"Authorization":   {"Bearer " + heraldtest.Token(t, "42", "")},
		})
	}
}
