// Package heraldtest starts real herald nodes on free loopback ports and
// dials them with real websocket clients, for integration tests.
package heraldtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
	"herald/channels"
	"herald/ingress"
	"herald/internal/server"
)

// Secret is the JWT secret, APIKey the server API key, and ProviderSecret
// every provider's secret in nodes started by Start (unless overridden).
const (
	Secret         = "test-jwt-secret-0123456789abcdef"
	APIKey         = "test-api-key"
	ProviderSecret = "test-provider-secret"
	Merchant       = "acme"
)

// Node is a running herald node.
type Node struct {
	URL    string // http://127.0.0.1:port
	Server *server.Server
	http   *http.Server
	ln     net.Listener
}

// WS returns the node's websocket URL.
func (n *Node) WS() string { return "ws" + strings.TrimPrefix(n.URL, "http") + "/ws" }

// Config returns the configuration Start uses when given none: the
// embedded broker, HS256 tokens with Secret, the API with APIKey, and every
// provider enabled with ProviderSecret and Merchant.
func Config() server.Config {
	providers := map[string]ingress.Config{}
	for _, slug := range Providers() {
		providers[slug] = ingress.Config{Secret: ProviderSecret, Merchant: Merchant}
	}
	var logger *slog.Logger
	if os.Getenv("HERALD_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return server.Config{
		Logger:    logger,
		Node:      "test-node",
		Auth:      auth.Config{Secret: []byte(Secret)},
		APIKey:    APIKey,
		Providers: providers,
	}
}

// Start runs a node with cfg on a free port until the test ends.
func Start(t testing.TB, cfg server.Config) *Node {
	t.Helper()
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("starting node: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	n := &Node{URL: "http://" + ln.Addr().String(), Server: srv, http: hs, ln: ln}
	t.Cleanup(n.Stop)
	return n
}

// Stop ends the node abruptly (no drain), as a crash would for clients.
func (n *Node) Stop() {
	_ = n.http.Close()
	_ = n.Server.Close()
}

// Token mints an HS256 token with Secret.
func Token(t testing.TB, sub, merchant string, chans ...string) string {
	t.Helper()
	return TokenTTL(t, time.Hour, sub, merchant, chans...)
}

// TokenTTL mints an HS256 token with Secret that expires after ttl.
func TokenTTL(t testing.TB, ttl time.Duration, sub, merchant string, chans ...string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(Secret), auth.NewClaims(sub, merchant, chans, ttl, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Post sends body to path with the given headers and returns the status
// and the decoded JSON answer (nil when the body is not JSON).
func (n *Node) Post(t testing.TB, path string, body []byte, header http.Header) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, n.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	if req.Header == nil {
		req.Header = http.Header{}
	}
	return do(t, req)
}

// Ingress posts a webhook authenticated with ProviderSecret.
func (n *Node) Ingress(t testing.TB, provider string, body []byte) (int, map[string]any) {
	t.Helper()
	return n.Post(t, "/ingress/"+provider, body, http.Header{"Authorization": {"Bearer " + ProviderSecret}})
}

// PublishDirect appends data to channel through the node's broker, past
// the API's limits on rate and size.
func (n *Node) PublishDirect(t testing.TB, channel, data string) channels.PublishResult {
	t.Helper()
	r, err := n.Server.Broker().Publish(context.Background(), channel, json.RawMessage(data), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Publish publishes data to channel through the server API and returns
// the offset.
func (n *Node) Publish(t testing.TB, channel string, data any) uint64 {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"channel": channel, "data": data})
	status, res := n.Post(t, "/v1/publish", b, http.Header{"Authorization": {"Bearer " + APIKey}})
	if status != http.StatusOK {
		t.Fatalf("publish to %s: %d %v", channel, status, res)
	}
	return uint64(res["offset"].(float64))
}

// Get fetches path with the API key.
func (n *Node) Get(t testing.TB, path string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+APIKey)
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// Client is a websocket client of a node.
type Client struct {
	t    testing.TB
	Conn *websocket.Conn
	next int64
}

// Dial connects without a token; the first frame must authenticate.
func Dial(t testing.TB, n *Node) *Client {
	t.Helper()
	return DialHeader(t, n, nil)
}

// DialHeader connects with extra upgrade headers.
func DialHeader(t testing.TB, n *Node, h http.Header) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, n.WS(), &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{"herald.v1"}})
	if err != nil {
		t.Fatalf("dial %s: %v", n.WS(), err)
	}
	conn.SetReadLimit(-1)
	c := &Client{t: t, Conn: conn}
	t.Cleanup(func() { _ = conn.CloseNow() })
	return c
}

// Connect dials and authenticates with the connect frame.
func Connect(t testing.TB, n *Node, token string) *Client {
	t.Helper()
	c := Dial(t, n)
	c.Send(map[string]any{"type": "connect", "token": token})
	c.Expect("connected")
	return c
}

// Send writes a frame, adding an id when it has none, and returns the id.
func (c *Client) Send(f map[string]any) int64 {
	c.t.Helper()
	if _, ok := f["id"]; !ok {
		c.next++
		f["id"] = c.next
	}
	b, err := json.Marshal(f)
	if err != nil {
		c.t.Fatal(err)
	}
	c.SendRaw(b)
	id, _ := f["id"].(int64)
	return id
}

// SendRaw writes a text frame as is.
func (c *Client) SendRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Frame is a decoded server frame.
type Frame map[string]any

// Type returns the frame's type.
func (f Frame) Type() string { s, _ := f["type"].(string); return s }

// Offset returns the frame's offset.
func (f Frame) Offset() uint64 { v, _ := f["offset"].(float64); return uint64(v) }

// Offsets returns the offsets of a history reply's publications, in order.
func (f Frame) Offsets() []uint64 {
	var out []uint64
	for _, p := range f["publications"].([]any) {
		out = append(out, uint64(p.(map[string]any)["offset"].(float64)))
	}
	return out
}

// String returns a field as a string.
func (f Frame) String(k string) string { s, _ := f[k].(string); return s }

// Read returns the next frame, failing the test after 10s.
func (c *Client) Read() Frame {
	c.t.Helper()
	f, err := c.ReadTimeout(10 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// ReadTimeout returns the next frame or the error that ended the wait.
// A timeout closes the connection (coder/websocket's rule).
func (c *Client) ReadTimeout(d time.Duration) (Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, b, err := c.Conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	var f Frame
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("frame %q is not JSON: %w", b, err)
	}
	return f, nil
}

// Expect reads the next frame and fails unless it has type typ.
func (c *Client) Expect(typ string) Frame {
	c.t.Helper()
	f := c.Read()
	if f.Type() != typ {
		c.t.Fatalf("got frame %v, want type %q", f, typ)
	}
	return f
}

// Subscribe subscribes and returns the subscribed frame.
func (c *Client) Subscribe(channel string) Frame {
	c.t.Helper()
	c.Send(map[string]any{"type": "subscribe", "channel": channel})
	return c.Expect("subscribed")
}

// CloseStatus waits for the server to close the connection and returns the
// close code (-1 when it ended without one).
func (c *Client) CloseStatus(d time.Duration) websocket.StatusCode {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			c.t.Fatalf("connection still open after %v", d)
		}
		_, err := c.ReadTimeout(left)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				c.t.Fatalf("connection still open after %v", d)
			}
			return websocket.CloseStatus(err)
		}
	}
}
