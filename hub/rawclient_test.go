package hub_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
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
