package hub_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
	"herald/internal/heraldtest"
)

// rawClient is a websocket client usable from goroutines other than the
// test's own (it reports errors instead of failing the test).
type rawClient struct{ conn *websocket.Conn }

func dialRaw(ctx context.Context, n *heraldtest.Node) (*rawClient, error) {
	conn, _, err := websocket.Dial(ctx, n.WS(), &websocket.DialOptions{Subprotocols: []string{"herald.v1"}})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(-1)
	return &rawClient{conn: conn}, nil
}

func (c *rawClient) send(ctx context.Context, f map[string]any) error {
	b, _ := json.Marshal(f)
	return c.conn.Write(ctx, websocket.MessageText, b)
}

func (c *rawClient) read(ctx context.Context) (map[string]any, error) {
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	var f map[string]any
	err = json.Unmarshal(b, &f)
	return f, err
}

func (c *rawClient) close() { _ = c.conn.CloseNow() }

func tokenFor(sub string) string {
	tok, err := auth.Mint([]byte(heraldtest.Secret), auth.NewClaims(sub, "", nil, time.Hour, time.Now()))
	if err != nil {
		panic(err)
	}
	return tok
}

// wsFrame is a client frame of up to 64 KiB, masked as RFC 6455 requires
// of clients (with key 0, which leaves the payload as it is).
func wsFrame(opcode byte, payload []byte) []byte {
	f := []byte{0x80 | opcode}
	if n := len(payload); n < 126 {
		f = append(f, 0x80|byte(n))
	} else {
		f = binary.BigEndian.AppendUint16(append(f, 0x80|126), uint16(n))
	}
	return append(append(f, 0, 0, 0, 0), payload...)
}

// upgradeRaw opens a websocket session on a bare TCP connection, for tests
// that write frames no client library would; extra is more header lines.
// What the server sends comes from the returned reader.
func upgradeRaw(t *testing.T, n *heraldtest.Node, extra string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(n.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Protocol: herald.v1\r\n%s\r\n",
		base64.StdEncoding.EncodeToString(key), extra)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return conn, r
}

// readFrame reads one server frame (unmasked, unfragmented) from r and
// returns its opcode and payload.
func readFrame(t *testing.T, r *bufio.Reader) (opcode byte, payload []byte) {
	t.Helper()
	head := make([]byte, 2)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	size := int(head[1] & 0x7f)
	if size >= 126 {
		ext := make([]byte, 2+6*(size-126)) // 2 bytes of length, or 8
		if _, err := io.ReadFull(r, ext); err != nil {
			t.Fatal(err)
		}
		size = 0
		for _, b := range ext {
			size = size<<8 | int(b)
		}
	}
	payload = make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		t.Fatal(err)
	}
	return head[0] & 0x0f, payload
}
