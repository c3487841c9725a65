package hub_test

import (
	"context"
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
