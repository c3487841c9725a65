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
