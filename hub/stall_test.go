package hub_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
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
	conn, r := upgradeRaw(t, n, "")
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	// The deadline only catches a hang: a node that stops reading without
	// closing the connection fails the test by it.
	send := func(b []byte) error {
		_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := conn.Write(b)
		return err
	}
	if err := send(wsFrame(1, fmt.Appendf(nil, `{"id":1,"type":"connect","token":%q}`, heraldtest.Token(t, "42", "")))); err != nil {
		t.Fatal(err)
	}
	if err := send(wsFrame(1, []byte(`{"id":2,"type":"subscribe","channel":"user:42"}`))); err != nil {
		t.Fatal(err)
	}
	// The publications must reach the subscription: wait for its reply.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, want := range []string{`"connected"`, `"subscribed"`} {
		if op, payload := readFrame(t, r); op != 1 || !strings.Contains(string(payload), want) {
			t.Fatalf("got opcode %d %s, want %s", op, payload, want)
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	// Far more than the socket buffers hold, far less than the send queue
	// (4 MiB): the node's writer for this client blocks.
	pad := strings.Repeat("x", 1000)
	for i := 0; i < 1000; i++ {
		n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	// Not needed for the outcome, only so that the pings mostly come while
	// the node's writer is blocked, the case this test is about.
	time.Sleep(200 * time.Millisecond)

	ping := wsFrame(9, make([]byte, 125))
	sent := 0
	for sent < 8<<20 {
		err := send(ping)
		switch {
		case err == nil:
		case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
			t.Logf("closed by the node after %d KiB of pings: %v", sent>>10, err)
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatalf("after %d KiB of pings the node neither reads them nor closes the connection: %v", sent>>10, err)
		default:
			t.Fatalf("after %d KiB of pings: %v, want the connection reset by the node", sent>>10, err)
		}
		sent += len(ping)
	}
	t.Fatalf("%d KiB of pings sent to a client that reads nothing, and the node still takes them", sent>>10)
}
