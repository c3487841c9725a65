package hub_test

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/internal/heraldtest"
)

// A client may send its first frame in the same packet as the upgrade
// request; the hub must read it, not lose it with net/http's buffer.
func TestUpgrade_FrameSentWithTheRequestIsRead(t *testing.T) {
	n := start(t, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(n.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))

	payload := `{"id":1,"type":"connect","token":"` + heraldtest.Token(t, "42", "") + `"}`
	var req bytes.Buffer
	req.WriteString("GET /ws HTTP/1.1\r\nHost: herald\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	req.Write(clientFrame(payload))
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}

	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %v, %v", resp, err)
	}
	_, frame := readFrame(t, r)
	if !bytes.Contains(frame, []byte(`"type":"connected"`)) || !bytes.Contains(frame, []byte(`"id":1`)) {
		t.Fatalf("first frame %s, want the answer to the connect frame", frame)
	}
}
