package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
)

func clientToken(t *testing.T, sub string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(testJWTSecret), auth.NewClaims(sub, "acme", nil, time.Hour, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// slowIngress starts a webhook whose body arrives in two parts: the node
// has the request in flight until finish is called.
func slowIngress(t *testing.T, addr string, body []byte) (finish func() (*http.Response, error)) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /ingress/kriptomat HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		addr, testProviderSecret, len(body))
	half := len(body) / 2
	if _, err := conn.Write(body[:half]); err != nil {
		t.Fatal(err)
	}
	return func() (*http.Response, error) {
		if _, err := conn.Write(body[half:]); err != nil {
			return nil, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		return http.ReadResponse(bufio.NewReader(conn), nil)
	}
}

// TestServe_SIGTERMDrains runs the binary, and on SIGTERM checks the whole
// drain: readiness fails and new connections are refused at once, the
// clients get 4010 spread over the drain window, a webhook that was in
// flight still gets its 200, and the process exits 0.
func TestServe_SIGTERMDrains(t *testing.T) {
	addr := freeAddr(t)
	const window = 4 * time.Second // long enough for a loaded machine's delays to stay small beside it
	node := startNode(t, addr, "HERALD_DRAIN_WINDOW="+window.String(), "HERALD_SHUTDOWN_TIMEOUT=10s")

	const clients = 4
	type closed struct {
		code websocket.StatusCode
		at   time.Time
	}
	closes := make(chan closed, clients)
	for i := 0; i < clients; i++ {
		c, _ := dialNode(t, addr, clientToken(t, fmt.Sprint(i)))
		c.send(map[string]any{"id": 1, "type": "subscribe", "channel": fmt.Sprintf("user:%d", i)})
		if f := c.read(); f["type"] != "subscribed" {
			t.Fatalf("subscribe: %v", f)
		}
		go func() {
			_, _, err := c.conn.Read(context.Background())
			closes <- closed{websocket.CloseStatus(err), time.Now()}
		}()
	}
	body, err := os.ReadFile("../../testdata/kriptomat/withdrawal.json")
	if err != nil {
		t.Fatal(err)
	}
	finish := slowIngress(t, addr, body)
	time.Sleep(200 * time.Millisecond) // the node has read the headers

	sigterm := time.Now()
	if err := node.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness fails and new connections are refused at once: while the
	// drain is under way, before the last client is closed. Refused is an
	// answer 503 or a connection refused; a connection that the closing
	// listener had taken and then dropped is asked again, on a new one
	// (never a kept one the node may have closed). The deadline only
	// catches a hang.
	fresh := func() *http.Client { return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} }
	refused := func(resp *http.Response, err error) bool {
		if resp != nil {
			return resp.StatusCode == http.StatusServiceUnavailable
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	deadline := time.Now().Add(2 * window)
	for {
		resp, err := fresh().Get("http://" + addr + "/readyz")
		if resp != nil {
			resp.Body.Close()
		}
		if refused(resp, err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still answers %v (%v) %v after SIGTERM", resp, err, time.Since(sigterm))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// A transport of its own, since the upgrade must not close.
		conn, resp, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{}}})
		cancel()
		if err == nil {
			conn.CloseNow()
			t.Fatal("a new websocket connection was accepted while draining")
		}
		if refused(resp, err) {
			break
		}
		if resp != nil || errors.Is(err, context.DeadlineExceeded) || time.Now().After(deadline) {
			t.Fatalf("a new websocket connection while draining: %v (%v), want 503 or a refused connection", err, resp)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(closes) == clients {
		t.Fatal("readiness failed and new connections were refused only after every client was closed")
	}

	resp, err := finish()
	if err != nil {
		t.Fatalf("in-flight webhook: %v", err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(answer), `"published"`) {
		t.Fatalf("in-flight webhook: %s %s", resp.Status, answer)
	}

	var at []time.Duration
	for i := 0; i < clients; i++ {
		select {
		case c := <-closes:
			if c.code != 4010 {
				t.Fatalf("client closed with %d, want 4010", c.code)
			}
			at = append(at, c.at.Sub(sigterm))
		case <-time.After(2*window + 10*time.Second):
			t.Fatalf("only %d of %d clients closed", i, clients)
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	// Client i is due at i*window/clients: 0, 1s, 2s, 3s after the drain
	// starts, spread over three quarters of the window. Closing all at
	// once, at the start or at the end, would put them within
	// milliseconds of each other. A loaded machine's delays shift the
	// closes by far less than the margins here: only seconds could shrink
	// the spread to a quarter of the window, stretch it to one and a half,
	// or put the first close in the window's second half.
	spread := at[clients-1] - at[0]
	if spread < window/4 || spread > window*3/2 {
		t.Errorf("closes spread over %v of the %v window, want about three quarters of it: %v", spread, window, at)
	}
	if at[0] > window/2 {
		t.Errorf("first close %v after SIGTERM, want it at the start of the %v window: %v", at[0], window, at)
	}
	// Exit 0 says the drain ended within HERALD_SHUTDOWN_TIMEOUT: a
	// stop past it is cut, and exits 1. The wait only catches a hang.
	if code := node.exitCode(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, node.stderr)
	}
	if !strings.Contains(node.stderr.String(), `"msg":"stopped"`) {
		t.Errorf("no stopped line:\n%s", node.stderr)
	}
}

// TestServe_ShutdownTimeoutIsAHardDeadline: a request that never finishes
// does not keep the process alive past HERALD_SHUTDOWN_TIMEOUT; the exit
// code and message say the shutdown was cut.
func TestServe_ShutdownTimeoutIsAHardDeadline(t *testing.T) {
	addr := freeAddr(t)
	node := startNode(t, addr, "HERALD_DRAIN_WINDOW=200ms", "HERALD_SHUTDOWN_TIMEOUT=1s")
	body, _ := os.ReadFile("../../testdata/kriptomat/withdrawal.json")
	_ = slowIngress(t, addr, body) // never finished
	time.Sleep(200 * time.Millisecond)
	sigterm := time.Now()
	if err := node.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The wait only catches a hang: without the hard deadline the request
	// would hold the process until the server's 30 s read timeout.
	if code := node.exitCode(t, 15*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, node.stderr)
	}
	// And it was waited for until the deadline, not cut at once.
	if took := time.Since(sigterm); took < time.Second {
		t.Errorf("exited %v after SIGTERM with a 1s shutdown timeout", took)
	}
	if !strings.Contains(node.stderr.String(), "shutdown cut after") {
		t.Errorf("stderr:\n%s", node.stderr)
	}
}

// TestRun_BadConfigurationFailsFast: every bad setting stops the node
// before it listens, with exit code 2 and a message naming the setting.
func TestRun_BadConfigurationFailsFast(t *testing.T) {
	secret := []string{"HERALD_JWT_SECRET", "s3cret"}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{append(secret, "HERALD_DRAIN_WINDOW", "30s"), "HERALD_DRAIN_WINDOW (30s) must be shorter than HERALD_SHUTDOWN_TIMEOUT (30s)"},
		{append(secret, "HERALD_DRAIN_WINDOW", "5s", "HERALD_SHUTDOWN_TIMEOUT", "2s"), "HERALD_DRAIN_WINDOW (5s) must be shorter"},
		{append(secret, "HERALD_SHUTDOWN_TIMEOUT", "0s"), "HERALD_SHUTDOWN_TIMEOUT: must be a positive duration"},
		{append(secret, "HERALD_DRAIN_WINDOW", "soon"), "HERALD_DRAIN_WINDOW: must be a duration"},
		{append(secret, "HERALD_LOG_FORMAT", "xml"), "HERALD_LOG_FORMAT: must be one of json, text"},
		{append(secret, "HERALD_SEND_QUEUE_BYTES", "-1"), "HERALD_SEND_QUEUE_BYTES"},
		{append(secret, "HERALD_SEND_QUEUE_BYTES", "4096"), "HERALD_SEND_QUEUE_BYTES: must be at least 65536"},
		{append(secret, "HERALD_CLIENT_FRAME_RATE", "NaN"), "HERALD_CLIENT_FRAME_RATE: must be a positive number"},
		{append(secret, "HERALD_CLIENT_FRAME_RATE", "+Inf"), "HERALD_CLIENT_FRAME_RATE: must be a positive number"},
	} {
		start := time.Now()
		code, _, errOut := runCmd(t, tc.env)
		if code != 2 || !strings.Contains(errOut, "herald: configuration: "+tc.want) {
			t.Errorf("env %v: exit %d, %q; want 2 and %q", tc.env, code, errOut, tc.want)
		}
		if time.Since(start) > 5*time.Second { // a refusal does not wait for anything
			t.Errorf("env %v: took %v to refuse", tc.env, time.Since(start))
		}
	}
	// A Redis URL that does not parse is named, its password is not.
	code, _, errOut := runCmd(t, append(secret, "HERALD_REDIS_URL", "redis://default:S3cretPW@host:63x79"))
	if code == 0 || !strings.Contains(errOut, "HERALD_REDIS_URL: parse") || strings.Contains(errOut, "S3cretPW") {
		t.Errorf("bad Redis URL: exit %d, %q", code, errOut)
	}
	// An empty variable is an unset one; an empty flag is a value.
	if code, _, errOut := runCmd(t, secret, "--addr", ""); code != 2 || !strings.Contains(errOut, "HERALD_ADDR: must not be empty") {
		t.Errorf("--addr '': exit %d, %q", code, errOut)
	}
	// And the binary's own exit code.
	p := startProc(t, []string{"HERALD_JWT_SECRET=s3cret", "HERALD_DRAIN_WINDOW=1m"})
	if code := p.exitCode(t, 10*time.Second); code != 2 || !strings.Contains(p.stderr.String(), "HERALD_DRAIN_WINDOW") {
		t.Fatalf("binary: exit %d, %s", code, p.stderr)
	}
}
