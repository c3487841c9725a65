package hub_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"herald/internal/heraldtest"
)

// A client that stops reading while the node has plenty to send it, and
// sends pings meanwhile, must not make the node keep their pongs without
// bound (they cannot be written, and they are not counted in the send
// queue): the node closes it after a bounded amount.
func TestStalledClientSendingPingsIsClosed(t *testing.T) {
	n := start(t, nil)
	conn, _ := upgradeRaw(t, n, "")
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	send := func(b []byte) error {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := conn.Write(b)
		return err
	}
	if err := send(wsFrame(1, fmt.Appendf(nil, `{"id":1,"type":"connect","token":%q}`, heraldtest.Token(t, "42", "")))); err != nil {
		t.Fatal(err)
	}
	if err := send(wsFrame(1, []byte(`{"id":2,"type":"subscribe","channel":"user:42"}`))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// Far more than the socket buffers hold, far less than the send queue
	// (4 MiB): the node's writer for this client blocks.
	pad := strings.Repeat("x", 1000)
	for i := 0; i < 1000; i++ {
		n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	time.Sleep(200 * time.Millisecond)

	ping := wsFrame(9, make([]byte, 125))
	sent := 0
	for sent < 8<<20 {
		if err := send(ping); err != nil {
			t.Logf("closed by the node after %d KiB of pings: %v", sent>>10, err)
			return
		}
		sent += len(ping)
	}
	t.Fatalf("%d KiB of pings sent to a client that reads nothing, and the node still takes them", sent>>10)
}
