package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"herald/auth"
	"herald/ingress"
	"herald/internal/heraldtest"
)

// runCmd runs a subcommand in-process and returns its exit code and output.
func runCmd(t *testing.T, envKV []string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, env(envKV...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestToken_MintsWhatTheNodeAccepts(t *testing.T) {
	code, out, errOut := runCmd(t, []string{"HERALD_JWT_SECRET", "s3cret", "HERALD_JWT_ISSUER", "iss-1", "HERALD_JWT_AUDIENCE", "herald"},
		"token", "--sub", "42", "--merchant", "acme", "--channel", "user:7", "--channel", "alerts:other", "--ttl", "2h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	v, err := auth.NewVerifier(auth.Config{Secret: []byte("s3cret"), Issuer: "iss-1", Audience: "herald"})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("node refuses the token: %v", err)
	}
	g := claims.Grants()
	for _, ch := range []string{"user:42", "merchant:acme", "alerts:acme", "user:7", "alerts:other"} {
		if !g.Allows(ch) {
			t.Errorf("token does not grant %s", ch)
		}
	}
	if g.Allows("user:8") {
		t.Error("token grants user:8")
	}
	if left := time.Until(claims.Expires()); left < 119*time.Minute || left > 2*time.Hour {
		t.Errorf("expires in %v", left)
	}
}

func TestToken_Refusals(t *testing.T) {
	secret := []string{"HERALD_JWT_SECRET", "s3cret"}
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"--sub", "42"}, "HERALD_JWT_SECRET"},
		{secret, nil, "--sub is required"},
		{secret, []string{"--sub", "a b"}, "--sub"},
		{secret, []string{"--sub", "42", "--merchant", "a/b"}, "--merchant"},
		{secret, []string{"--sub", "42", "--channel", "room:1"}, "--channel"},
		{secret, []string{"--sub", "42", "--ttl", "-1h"}, "--ttl"},
		{secret, []string{"--sub", "42", "extra"}, "argument"},
	} {
		code, _, errOut := runCmd(t, tc.env, append([]string{"token"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("token %v: exit %d, %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

func TestSubcommands_HaveHelp(t *testing.T) {
	for _, c := range commands() {
		// config takes the node's own flags, so its help is the node's.
		want := "usage: herald " + c.name
		if c.name == "config" {
			want = "usage: herald [flags]"
		}
		code, _, errOut := runCmd(t, nil, c.name, "--help")
		if code != 0 || !strings.Contains(errOut, want) {
			t.Errorf("%s --help: exit %d\n%s", c.name, code, errOut)
		}
	}
	code, _, errOut := runCmd(t, nil, "--help")
	for _, c := range commands() {
		if !strings.Contains(errOut, "  "+c.name+" ") {
			t.Errorf("herald --help does not list %s (exit %d):\n%s", c.name, code, errOut)
		}
	}
}

func TestSend_UsesTheProvidersSignatureElseTheSecret(t *testing.T) {
	target, _ := ingressURL("http://node.example/prefix/", "acme")
	if target.String() != "http://node.example/prefix/ingress/acme" {
		t.Fatalf("ingress URL %s", target)
	}
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"a":1}`)
	var got struct {
		method, path string
		body         []byte
		secret       string
		now          time.Time
	}
	signing := ingress.Provider{Slug: "acme", Sign: func(h http.Header, method, path string, b []byte, cfg ingress.Config, at time.Time) {
		got.method, got.path, got.body, got.secret, got.now = method, path, b, cfg.Secret, at
		h.Set("X-Signature", "sig")
	}}
	req, err := webhookRequest(context.Background(), target, signing, ingress.Config{Secret: "k"}, body, now)
	if err != nil {
		t.Fatal(err)
	}
	if req.Header.Get("X-Signature") != "sig" || req.Header.Get("Authorization") != "" ||
		got.method != "POST" || got.path != "/prefix/ingress/acme" || string(got.body) != string(body) || got.secret != "k" || !got.now.Equal(now) {
		t.Fatalf("signed request: headers %v, Sign saw %+v", req.Header, got)
	}
	req, _ = webhookRequest(context.Background(), target, ingress.Provider{Slug: "acme"}, ingress.Config{Secret: "k"}, body, now)
	if req.Header.Get("Authorization") != "Bearer k" || req.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("unsigned request headers %v", req.Header)
	}
}

func TestSend_PrintsTheAnswerAndExitsByStatus(t *testing.T) {
	var mu sync.Mutex
	var auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path != "/ingress/kriptomat" || r.Header.Get("Authorization") != "Bearer right" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"missing or wrong secret"}`)
			return
		}
		if r.URL.Query().Get("unknown") != "" {
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"status":"dead_letter","reason":"unknown event"}`)
			return
		}
		io.WriteString(w, `{"status":"published"}`)
	}))
	defer srv.Close()
	file := "../../testdata/kriptomat/withdrawal.json"
	code, out, errOut := runCmd(t, []string{"HERALD_INGRESS_KRIPTOMAT_SECRET", "right", "HERALD_URL", srv.URL}, "send", "kriptomat", file)
	if code != 0 || !strings.Contains(out, `"published"`) || !strings.Contains(errOut, "200 OK") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = runCmd(t, []string{"HERALD_INGRESS_KRIPTOMAT_SECRET", "right"}, "send", "kriptomat", file, "--url", srv.URL, "--secret", "wrong")
	if code != 1 || !strings.Contains(out, "wrong secret") || !strings.Contains(errOut, "401") {
		t.Fatalf("wrong secret: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if len(auths) != 2 || auths[1] != "Bearer wrong" {
		t.Fatalf("authorizations sent: %q", auths)
	}
	// A dead letter is a 2xx, but nothing was published.
	code, out, errOut = runCmd(t, []string{"HERALD_INGRESS_KRIPTOMAT_SECRET", "right"}, "send", "kriptomat", file, "--url", srv.URL+"/?unknown=1")
	if code != 3 || !strings.Contains(out, "dead_letter") || !strings.Contains(errOut, "not published") {
		t.Fatalf("dead letter: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestSend_Refusals(t *testing.T) {
	secret := []string{"HERALD_INGRESS_KRIPTOMAT_SECRET", "k"}
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{secret, []string{"nope", "x.json"}, `unknown provider "nope"`},
		{nil, []string{"kriptomat", "x.json"}, "HERALD_INGRESS_KRIPTOMAT_SECRET"},
		{secret, []string{"kriptomat"}, "argument"},
		{secret, []string{"kriptomat", "/nonexistent.json"}, "nonexistent"},
		{secret, []string{"kriptomat", "../../testdata/kriptomat/withdrawal.json", "--url", "ftp://x"}, "--url"},
	} {
		code, _, errOut := runCmd(t, tc.env, append([]string{"send"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("send %v: exit %d, %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

// 0xpay names the merchant in a header; send fills it from --merchant or
// the node's HERALD_INGRESS_0XPAY_MERCHANT.
func TestSend_NamesTheMerchantWhereTheProviderDoes(t *testing.T) {
	merchants := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		merchants <- r.Header.Get("merchant-id")
		io.WriteString(w, `{"status":"published"}`)
	}))
	defer srv.Close()
	file := "../../testdata/0xpay/exchange_done.json"
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{[]string{"HERALD_INGRESS_0XPAY_MERCHANT", "acme"}, nil},
		{[]string{"HERALD_INGRESS_0XPAY_MERCHANT", "acme"}, []string{"--merchant", "other"}},
	} {
		env := append([]string{"HERALD_INGRESS_0XPAY_SECRET", "s", "HERALD_URL", srv.URL}, tc.env...)
		if code, _, errOut := runCmd(t, env, append([]string{"send", "0xpay", file}, tc.args...)...); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	}
	if got := []string{<-merchants, <-merchants}; got[0] != "acme" || got[1] != "other" {
		t.Fatalf("merchant-id headers sent: %q, want acme then other", got)
	}
}

func TestHealthcheck_ExitsByReadiness(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if code, out, errOut := runCmd(t, []string{"HERALD_ADDR", addr}, "healthcheck"); code != 0 {
		t.Fatalf("ready: exit %d %s %s", code, out, errOut)
	}
	ready = false
	if code, _, _ := runCmd(t, []string{"HERALD_ADDR", addr}, "healthcheck"); code != 1 {
		t.Fatalf("not ready: exit %d", code)
	}
	srv.Close()
	if code, _, _ := runCmd(t, nil, "healthcheck", "--url", srv.URL+"/readyz", "--timeout", "1s"); code != 1 {
		t.Fatalf("down: exit %d", code)
	}
	// Called wrongly: unhealthy, and not 2, which Docker reserves.
	if code, _, _ := runCmd(t, nil, "healthcheck", "--nope"); code != 1 {
		t.Fatalf("a bad flag: exit %d", code)
	}
	for in, want := range map[string]string{":8080": "127.0.0.1:8080", "0.0.0.0:9": "127.0.0.1:9", "[::]:9": "127.0.0.1:9", "10.1.2.3:80": "10.1.2.3:80"} {
		if got, err := localHost(in); err != nil || got != want {
			t.Errorf("localHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestReconnectDelay_GrowsAndIsJittered(t *testing.T) {
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		d := reconnectDelay(0)
		if d < 250*time.Millisecond || d >= 500*time.Millisecond {
			t.Fatalf("first delay %v", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("delays barely vary: %v", seen)
	}
	if d := reconnectDelay(100); d < 5*time.Second || d > 10*time.Second {
		t.Fatalf("delay after many failures %v", d)
	}
}

func TestTail_Refusals(t *testing.T) {
	tok := []string{"HERALD_TOKEN", "t"}
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"user:42"}, "token is required"},
		{tok, []string{"room:42"}, "bad channel name"},
		{tok, []string{"user:42", "--since", "3"}, "--since and --epoch go together"},
		{tok, []string{"user:42", "--epoch", "E"}, "--since and --epoch go together"},
		{tok, []string{"user:42", "--url", "ftp://x"}, "--url"},
		{tok, nil, "argument"},
	} {
		code, _, errOut := runCmd(t, tc.env, append([]string{"tail"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("tail %v: exit %d, %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

// cutter forwards TCP connections to a node and can cut them all, as a
// network failure would, while the node and its channels live on.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

func TestTail_ResumesAfterADropWithoutGapOrDuplicate(t *testing.T) {
	n := heraldtest.Start(t, heraldtest.Config())
	proxy := newCutter(t, strings.TrimPrefix(n.URL, "http://"))
	var stdout, stderr heraldtest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"tail", "user:42", "--count", "4", "--url", "http://" + proxy.ln.Addr().String()},
			env("HERALD_TOKEN", heraldtest.Token(t, "42", "")), &stdout, &stderr)
	}()
	waitFor := func(buf *heraldtest.Buffer, s string) {
		t.Helper()
		for !strings.Contains(buf.String(), s) {
			if ctx.Err() != nil {
				t.Fatalf("no %q; stdout:\n%s\nstderr:\n%s", s, stdout.String(), stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(&stderr, "subscribed to user:42 at offset 0")
	n.Publish(t, "user:42", map[string]int{"n": 1})
	waitFor(&stdout, `"offset":1`)

	proxy.cut()
	waitFor(&stderr, "disconnected")
	for i := 2; i <= 4; i++ { // published while tail is away
		n.Publish(t, "user:42", map[string]int{"n": i})
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("tail did not finish; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "resumed user:42 after offset 1: no gap; what was missed follows") || strings.Contains(stderr.String(), "GAP") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("printed %d lines:\n%s", len(lines), stdout.String())
	}
	for i, l := range lines {
		var f struct {
			Type    string
			Channel string
			Offset  int
			Data    struct{ N int }
		}
		if err := json.Unmarshal([]byte(l), &f); err != nil || f.Type != "pub" || f.Channel != "user:42" || f.Offset != i+1 || f.Data.N != i+1 {
			t.Fatalf("line %d: %s (%v)", i, l, err)
		}
	}
}

// TestCLI_RoundTrip is the README's terminal session with the real binary:
// token → tail → send delivers; a SIGTERM closes tail's connection with
// 4010 and the node exits 0; tail reconnects to the restarted node, which
// lost everything (embedded broker), and reports the gap on stderr; the
// next send reaches it.
func TestCLI_RoundTrip(t *testing.T) {
	addr := freeAddr(t)
	node := startNode(t, addr, "HERALD_DRAIN_WINDOW=100ms")
	cli := nodeEnv(addr, "HERALD_URL=http://"+addr)

	tok := startProc(t, cli, "token", "--sub", "84624", "--merchant", "acme")
	if code := tok.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("token: exit %d %s", code, tok.stderr)
	}
	token := strings.TrimSpace(tok.stdout.String())
	tail := startProc(t, append(cli, "HERALD_TOKEN="+token), "tail", "merchant:acme", "--count", "2")
	tail.waitOutput(t, "subscribed to merchant:acme at offset 0", 10*time.Second)

	send := startProc(t, cli, "send", "kriptomat", "../../testdata/kriptomat/withdrawal.json")
	if code := send.exitCode(t, 10*time.Second); code != 0 || !strings.Contains(send.stdout.String(), `"status":"published"`) {
		t.Fatalf("send: exit %d\n%s\n%s", code, send.stdout, send.stderr)
	}
	tail.waitOutput(t, `"type":"withdrawal.fiat"`, 10*time.Second)

	if err := node.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := node.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("node exit %d after SIGINT:\n%s", code, node.stderr)
	}
	tail.waitOutput(t, "node shutting down (4010)", 5*time.Second)
	startNode(t, addr)
	tail.waitOutput(t, "GAP in merchant:acme", 20*time.Second)

	send = startProc(t, cli, "send", "kriptomat", "../../testdata/kriptomat/deposit.json")
	if code := send.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("second send: exit %d\n%s\n%s", code, send.stdout, send.stderr)
	}
	if code := tail.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("tail: exit %d\n%s", code, tail.stderr)
	}
	lines := strings.Split(strings.TrimSpace(tail.stdout.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"offset":1`) || !strings.Contains(lines[1], `"offset":1`) ||
		!strings.Contains(lines[1], `"provider":"kriptomat"`) || strings.Contains(lines[1], "withdrawal") {
		t.Fatalf("tail printed:\n%s\nstderr:\n%s", tail.stdout, tail.stderr)
	}
	if !strings.Contains(tail.stderr.String(), "epoch_mismatch") {
		t.Fatalf("gap reason not reported:\n%s", tail.stderr)
	}
}

// An interrupted tail closes its connection with 1001 (going away), which
// the node counts as such, not as a dropped connection (1006).
func TestTail_InterruptSaysGoodbye(t *testing.T) {
	addr := freeAddr(t)
	startNode(t, addr)
	cli := nodeEnv(addr, "HERALD_URL=http://"+addr)
	tail := startProc(t, append(cli, "HERALD_TOKEN="+clientToken(t, "84624")), "tail", "user:84624")
	tail.waitOutput(t, "subscribed to user:84624", 10*time.Second)
	if err := tail.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := tail.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("tail: exit %d\n%s", code, tail.stderr)
	}
	if m := closedMetrics(t, addr); m.Get("herald_closes_total", "code", "1001") != 1 {
		t.Errorf("closes with 1001: %v (1006: %v)", m.Get("herald_closes_total", "code", "1001"), m.Get("herald_closes_total", "code", "1006"))
	}
}

// A tail that gives up (its subscription refused) still closes its
// connection properly: the node counts 1000, not a dropped connection.
func TestTail_RefusedSaysGoodbye(t *testing.T) {
	addr := freeAddr(t)
	startNode(t, addr)
	cli := nodeEnv(addr, "HERALD_URL=http://"+addr)
	tail := startProc(t, append(cli, "HERALD_TOKEN="+clientToken(t, "84624")), "tail", "user:1")
	if code := tail.exitCode(t, 10*time.Second); code == 0 || !strings.Contains(tail.stderr.String(), "subscribe refused: forbidden") {
		t.Fatalf("tail: exit %d\n%s", code, tail.stderr)
	}
	if m := closedMetrics(t, addr); m.Get("herald_closes_total", "code", "1000") != 1 {
		t.Errorf("closes with 1000: %v (1006: %v)", m.Get("herald_closes_total", "code", "1000"), m.Get("herald_closes_total", "code", "1006"))
	}
}

// closedMetrics waits until the node at addr has seen a connection and
// counts none open, and returns its metrics then.
func closedMetrics(t *testing.T, addr string) heraldtest.Metrics {
	t.Helper()
	var m heraldtest.Metrics
	for deadline := time.Now().Add(10 * time.Second); m.Get("herald_connections_total") == 0 || m.Get("herald_connections") != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the node still counts the connection: %v", m.Get("herald_connections"))
		}
		req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		m, err = heraldtest.ParseMetrics(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// An interrupted tail whose node has stopped answering does not wait for
// the close handshake's own timeouts (5 s and more): it drops the
// connection after a second.
func TestTail_InterruptLeavesAFrozenNodeQuickly(t *testing.T) {
	addr := freeAddr(t)
	node := startNode(t, addr)
	cli := nodeEnv(addr, "HERALD_URL=http://"+addr)
	tail := startProc(t, append(cli, "HERALD_TOKEN="+clientToken(t, "84624")), "tail", "user:84624")
	tail.waitOutput(t, "subscribed to user:84624", 10*time.Second)
	if err := node.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer node.cmd.Process.Signal(syscall.SIGCONT)
	if err := tail.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := tail.exitCode(t, 4*time.Second); code != 0 {
		t.Fatalf("tail: exit %d\n%s", code, tail.stderr)
	}
}

// A node that stops answering leaves tail's connection open and silent:
// tail's pings notice, and it reconnects and resumes once the node is
// back.
func TestTail_LeavesANodeThatDoesNotAnswerPings(t *testing.T) {
	addr := freeAddr(t)
	node := startNode(t, addr)
	cli := nodeEnv(addr, "HERALD_URL=http://"+addr)
	tail := startProc(t, append(cli, "HERALD_TOKEN="+clientToken(t, "84625")), "tail", "user:84625", "--ping", "500ms")
	tail.waitOutput(t, "subscribed to user:84625", 10*time.Second)
	if err := node.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	tail.waitOutput(t, "disconnected: the node did not answer a ping within 10 s", 30*time.Second)
	if err := node.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	tail.waitOutput(t, "resumed user:84625 after offset 0", 30*time.Second)
}

// Every flag a subcommand takes is in the synopsis its --help opens with.
func TestCommands_SynopsisNamesEveryFlag(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^  -(\S+)`)
	for _, c := range commands() {
		if c.name == "config" { // takes the node's flags, "[flags]"
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			_, _, stderr := runCmd(t, nil, c.name, "--help")
			flags := flagLine.FindAllStringSubmatch(stderr, -1)
			if len(flags) == 0 {
				t.Fatalf("no flags listed by --help:\n%s", stderr)
			}
			for _, f := range flags {
				if !strings.Contains(c.synopsis, "--"+f[1]) {
					t.Errorf("synopsis %q leaves out --%s", c.synopsis, f[1])
				}
			}
		})
	}
}
