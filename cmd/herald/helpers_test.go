package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/internal/heraldtest"
)

// Secrets of the nodes the binary tests start.
const (
	testJWTSecret      = "jwt-secret-0f1e2d3c4b5a69788796a5b4"
	testAPIKey         = "api-key-5a6b7c8d9e0f1a2b"
	testProviderSecret = "provider-secret-9e8d7c6b5a4f"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// heraldBin builds the binary once for the tests that run it.
func heraldBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "herald-bin"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "herald")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a running herald binary.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *heraldtest.Buffer
	done           chan struct{}
	err            error
}

// startProc runs the binary with only env (and PATH) in its environment;
// it is killed when the test ends if still running.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(heraldBin(t), args...), stdout: &heraldtest.Buffer{}, stderr: &heraldtest.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitOutput waits until the process has written s (stdout or stderr).
func (p *proc) waitOutput(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.stdout.String()+p.stderr.String(), s) {
		select {
		case <-p.done:
			t.Fatalf("exited (%v) before writing %q:\n%s\n%s", p.err, s, p.stdout, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after %v:\n%s\n%s", s, d, p.stdout, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exitCode waits for the process to end and returns its exit code.
func (p *proc) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("still running after %v:\n%s\n%s", d, p.stdout, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// freeAddr returns a loopback address nothing listens on, for a node that
// must come back on the same address.
func freeAddr(t *testing.T) string {
	t.Helper()
	// The binary first: building it takes seconds, in which another
	// process could take a port picked before.
	heraldBin(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// nodeEnv is the environment of a node on addr with the test secrets and
// Kriptomat enabled for merchant acme.
func nodeEnv(addr string, extra ...string) []string {
	return append([]string{
		"HERALD_ADDR=" + addr,
		"HERALD_JWT_SECRET=" + testJWTSecret,
		"HERALD_API_KEY=" + testAPIKey,
		"HERALD_INGRESS_KRIPTOMAT_SECRET=" + testProviderSecret,
		"HERALD_INGRESS_KRIPTOMAT_MERCHANT=acme",
	}, extra...)
}

// startNode runs a node on addr and waits until it listens.
func startNode(t *testing.T, addr string, extra ...string) *proc {
	t.Helper()
	p := startProc(t, nodeEnv(addr, extra...))
	p.waitOutput(t, `"msg":"herald listening"`, 20*time.Second)
	return p
}

// wsClient is a websocket client of a node run by the binary tests.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

// dialNode connects with the token in the upgrade's Authorization header
// and reads the connected frame.
func dialNode(t *testing.T, addr, token string) (*wsClient, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{
		HTTPHeader: map[string][]string{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	c := &wsClient{t: t, conn: conn}
	f := c.read()
	if f["type"] != "connected" {
		t.Fatalf("first frame %v", f)
	}
	return c, f
}

func (c *wsClient) send(f map[string]any) {
	c.t.Helper()
	b, _ := json.Marshal(f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) read() map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		c.t.Fatalf("frame %q: %v", b, err)
	}
	return f
}
