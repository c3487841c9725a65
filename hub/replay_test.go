package hub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"herald/auth"
	"herald/channels"
	"herald/channels/memory"
)

// anyToken takes a token for the user it names, with merchant:fill.
type anyToken struct{}

func (anyToken) Verify(tok string) (*auth.Claims, error) {
	c := auth.NewClaims(tok, "fill", nil, time.Hour, time.Now())
	return &c, nil
}

// historyCounter counts the history reads of one channel.
type historyCounter struct {
	*memory.Broker
	channel string
	reads   atomic.Int64
}

func (b *historyCounter) History(ctx context.Context, ch string, o channels.HistoryOptions) (channels.HistoryResult, error) {
	if ch == b.channel {
		b.reads.Add(1)
	}
	return b.Broker.History(ctx, ch, o)
}

// A resume whose next missed publication is larger than a quarter of the
// send queue, for a client with a little under a quarter waiting, could
// not queue it: the resume waited for a quarter, read the log again and
// was refused again, thousands of times a second (on Redis, each read of
// a publication up to 2 MiB). It now waits until that publication fits.
func TestReplay_LargePublicationWaitsWithoutRereading(t *testing.T) {
	b := &historyCounter{Broker: memory.New(memory.Options{}), channel: "user:42"}
	h, err := New(Options{Broker: b, Verifier: anyToken{}, SendQueueBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(h); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { h.Close(); srv.Close(); b.Close() })
	ctx := context.Background()
	// Half the queue is 32 KiB: a publication of 22 KiB is accepted, and
	// does not fit beside more than 10 KiB.
	big, _ := json.Marshal(map[string]string{"pad": strings.Repeat("x", 22<<10)})
	first, err := b.Publish(ctx, "user:42", big, channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A client that reads nothing, subscribed to merchant:fill.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: herald.v1\r\n"+
		"Authorization: Bearer 42\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	send := func(s string) {
		t.Helper()
		// A masked text frame (key 0) of under 126 bytes.
		if _, err := conn.Write(append([]byte{0x81, 0x80 | byte(len(s)), 0, 0, 0, 0}, s...)); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"id":1,"type":"subscribe","channel":"merchant:fill"}`)
	var c *client
	for c == nil {
		time.Sleep(10 * time.Millisecond)
		h.mu.RLock()
		for cc := range h.clients {
			c = cc
		}
		h.mu.RUnlock()
	}
	queued := func() int { c.mu.Lock(); defer c.mu.Unlock(); return c.queued }

	// Fill the socket until 11–16 KiB wait in the queue: under a quarter.
	pad, _ := json.Marshal(map[string]string{"pad": strings.Repeat("y", 900)})
	for i := 0; queued() < 11<<10; i++ {
		if i == 5000 {
			t.Fatalf("the queue never filled: %d bytes", queued())
		}
		if _, err := b.Publish(ctx, "merchant:fill", pad, channels.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	time.Sleep(100 * time.Millisecond)
	if q := queued(); q > 16<<10 {
		t.Fatalf("%d bytes queued, want at most a quarter of the queue", q)
	}

	send(fmt.Sprintf(`{"id":2,"type":"subscribe","channel":"user:42","since":{"offset":0,"epoch":%q}}`, first.Epoch))
	time.Sleep(200 * time.Millisecond)
	before := b.reads.Load()
	time.Sleep(time.Second)
	// A loaded machine may take the resume's own two reads (the
	// subscribe's, then the first page) into the second; the bug it
	// guards against read thousands of times.
	if reads := b.reads.Load() - before; reads > 2 {
		t.Errorf("the resume read the log %d times in a second without queueing anything (%d bytes queued)", reads, queued())
	}

	// Once the client reads, the missed publication follows. (With a
	// receive buffer this small loopback's window updates can wait on
	// the sender's zero-window probes for seconds.)
	_ = conn.(*net.TCPConn).SetReadBuffer(1 << 20)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 64<<10)
	for !bytes.Contains(got, big) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %d bytes, no missed publication: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
}
