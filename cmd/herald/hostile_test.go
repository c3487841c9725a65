package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestServe_SlowlorisIsCutOff: a peer that sends its upgrade request a
// byte at a time, and one that upgrades but never authenticates, are both
// cut off by deadlines (10 s each), while other clients are served.
func TestServe_SlowlorisIsCutOff(t *testing.T) {
	addr := freeAddr(t)
	startNode(t, addr)

	headers, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer headers.Close()
	if _, err := headers.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")); err != nil {
		t.Fatal(err)
	}
	headersCut := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		_ = headers.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, _ = io.Copy(io.Discard, headers) // returns when the server hangs up
		headersCut <- time.Since(start)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	silent, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.CloseNow()

	// Meanwhile a normal client is served.
	c, _ := dialNode(t, addr, clientToken(t, "42"))
	c.send(map[string]any{"id": 1, "type": "ping"})
	if f := c.read(); f["type"] != "pong" {
		t.Fatalf("normal client: %v", f)
	}

	_, _, err = silent.Read(ctx)
	if code := websocket.CloseStatus(err); code != 4001 {
		t.Fatalf("silent upgraded client: %v", err)
	}
	select {
	case took := <-headersCut:
		if took < 9*time.Second || took > 15*time.Second {
			t.Fatalf("slow headers cut after %v, want about 10s", took)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("slow headers never cut off")
	}
}

// TestServe_ConnectionFloodWaitsInTheKernelsQueue: a node holds at most
// HERALD_MAX_CONNECTIONS plus 512 TCP connections, upgraded or not; one
// beyond them is served when another ends, never refused and never given
// a file the node needs for itself.
func TestServe_ConnectionFloodWaitsInTheKernelsQueue(t *testing.T) {
	addr := freeAddr(t)
	startNode(t, addr, "HERALD_MAX_CONNECTIONS=4")

	held := make([]net.Conn, acceptedConns(4))
	for i := range held {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		held[i] = c
	}
	// The kernel hands connections over in the order they came: the node
	// takes every held one before this one.
	late, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if _, err := late.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = late.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := late.Read(buf); err == nil {
		t.Fatalf("a connection beyond %d was served: %q", len(held), buf[:n])
	}

	for _, c := range held[:16] {
		c.Close()
	}
	_ = late.SetReadDeadline(time.Now().Add(8 * time.Second))
	n, err := late.Read(buf)
	if err != nil {
		t.Fatalf("the waiting connection was not served once others ended: %v", err)
	}
	if got := string(buf[:n]); len(got) < 12 || got[:12] != "HTTP/1.1 200" {
		t.Fatalf("the waiting connection got %q", got)
	}
}
