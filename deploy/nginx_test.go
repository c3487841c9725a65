package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/internal/heraldtest"
	"herald/internal/redistest"
)

const nginxBin = "/usr/sbin/nginx"

var (
	upstreamServer = regexp.MustCompile(`(?m)^(\s*server )herald-(\d):8080( .*;)$`)
	listenLine     = regexp.MustCompile(`(?m)^(\s*listen )8080;$`)
)

// templateNginx rewrites deploy/nginx.conf for a run on this machine: the
// upstream servers become the given addresses (without resolve), the
// listen port a free loopback one, and nginx's temporary files go under
// dir. Nothing else changes.
func templateNginx(t *testing.T, dir, listen string, upstreams []string) string {
	t.Helper()
	conf, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	s := string(conf)
	if n := len(upstreamServer.FindAllString(s, -1)); n != len(upstreams) {
		t.Fatalf("nginx.conf has %d upstream servers herald-N:8080, the test has %d nodes", n, len(upstreams))
	}
	s = upstreamServer.ReplaceAllStringFunc(s, func(line string) string {
		m := upstreamServer.FindStringSubmatch(line)
		var i int
		fmt.Sscan(m[2], &i)
		// An address needs no resolving (and Debian's nginx predates
		// resolve).
		return m[1] + upstreams[i-1] + strings.Replace(m[3], " resolve", "", 1)
	})
	if !listenLine.MatchString(s) {
		t.Fatal("nginx.conf does not listen on 8080")
	}
	s = listenLine.ReplaceAllString(s, "${1}"+listen+";")
	var temp strings.Builder
	temp.WriteString("http {\n")
	for _, k := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temp, "    %s_temp_path %s;\n", k, filepath.Join(dir, k))
	}
	s = strings.Replace(s, "http {\n", temp.String(), 1)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startNginx runs deploy/nginx.conf in front of the nodes until the test
// ends, and returns its base URL and its access log.
func startNginx(t *testing.T, nodes ...*heraldtest.Node) (string, *heraldtest.Buffer) {
	t.Helper()
	if _, err := os.Stat(nginxBin); err != nil {
		t.Fatalf("nginx is required (apt-get install nginx, or run scripts/deps.sh): %v", err)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	var upstreams []string
	for _, n := range nodes {
		upstreams = append(upstreams, strings.TrimPrefix(n.URL, "http://"))
	}
	conf := templateNginx(t, dir, listen, upstreams)
	global := fmt.Sprintf("daemon off; pid %s;", filepath.Join(dir, "nginx.pid"))
	if os.Geteuid() == 0 {
		global += " user root;" // workers must reach the temporary paths under dir
	}
	cmd := exec.Command(nginxBin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"), "-g", global)
	access := &heraldtest.Buffer{}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = access, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt) // fast shutdown of master and workers
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	base := "http://" + listen
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base, access
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %s\n%s", stderr.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx not answering: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client is a websocket client connected through nginx.
type client struct {
	t    *testing.T
	conn *websocket.Conn
	node string
}

func dial(t *testing.T, base, token string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{"herald.v1"},
	})
	if err != nil {
		t.Fatalf("websocket through nginx: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	c := &client{t: t, conn: conn}
	f := c.read()
	if f["type"] != "connected" || conn.Subprotocol() != "herald.v1" {
		t.Fatalf("through nginx: %v (subprotocol %q)", f, conn.Subprotocol())
	}
	c.node, _ = f["node"].(string)
	return c
}

func (c *client) read() map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read (node %s): %v", c.node, err)
	}
	var f map[string]any
	_ = json.Unmarshal(b, &f)
	return f
}

func (c *client) subscribe(channel string, since map[string]any) map[string]any {
	c.t.Helper()
	f := map[string]any{"id": 2, "type": "subscribe", "channel": channel}
	if since != nil {
		f["since"] = since
	}
	b, _ := json.Marshal(f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
	r := c.read()
	if r["type"] != "subscribed" {
		c.t.Fatalf("subscribe: %v", r)
	}
	return r
}

func post(t *testing.T, url, auth string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNginx_TwoNodesBehindOneURL runs deploy/nginx.conf in front of two
// nodes sharing a redis-server: websocket upgrades pass, connections are
// spread over both nodes, a webhook posted to the one URL reaches clients
// on both nodes, and when a node drains its clients come back through
// nginx on the other one and resume without a gap.
func TestNginx_TwoNodesBehindOneURL(t *testing.T) {
	redis := redistest.Start(t, redistest.Options{AOF: true})
	var nodes []*heraldtest.Node
	for _, id := range []string{"node-a", "node-b"} {
		cfg := heraldtest.Config()
		cfg.Node, cfg.RedisURL = id, redis.URL()
		nodes = append(nodes, heraldtest.Start(t, cfg))
	}
	base, access := startNginx(t, nodes...)
	token := heraldtest.Token(t, "84624", heraldtest.Merchant)

	// least_conn over open connections: four clients, two per node.
	perNode := map[string][]*client{}
	for i := 0; i < 4; i++ {
		c := dial(t, base, token)
		perNode[c.node] = append(perNode[c.node], c)
	}
	if len(perNode["node-a"]) != 2 || len(perNode["node-b"]) != 2 {
		t.Fatalf("connections per node: a %d, b %d", len(perNode["node-a"]), len(perNode["node-b"]))
	}
	var all []*client
	for _, cs := range perNode {
		for _, c := range cs {
			c.subscribe("merchant:acme", nil)
			all = append(all, c)
		}
	}

	// A webhook (authenticated with ?key=) and an API publish through the
	// one URL reach every client, whichever node took them.
	body, err := os.ReadFile("../testdata/kriptomat/withdrawal.json")
	if err != nil {
		t.Fatal(err)
	}
	if status, answer := post(t, base+"/ingress/kriptomat?key="+heraldtest.ProviderSecret, "", body); status != 200 || !strings.Contains(answer, `"published"`) {
		t.Fatalf("webhook through nginx: %d %s", status, answer)
	}
	if status, answer := post(t, base+"/v1/publish", heraldtest.APIKey, []byte(`{"channel":"merchant:acme","data":{"n":2}}`)); status != 200 {
		t.Fatalf("publish through nginx: %d %s", status, answer)
	}
	var epoch string
	for _, c := range all {
		for want := 1; want <= 2; want++ {
			f := c.read()
			if f["type"] != "pub" || f["offset"] != float64(want) {
				t.Fatalf("client on %s: %v, want pub %d", c.node, f, want)
			}
			epoch, _ = f["epoch"].(string)
		}
	}

	for _, path := range []string{"/metrics", "/readyz"} {
		if resp, err := http.Get(base + path); err != nil || resp.StatusCode != 404 {
			t.Fatalf("%s through nginx: %v %v", path, err, resp)
		}
	}
	if strings.Contains(access.String(), heraldtest.ProviderSecret) || !strings.Contains(access.String(), `"POST /ingress/kriptomat"`) {
		t.Fatalf("access log:\n%s", access.String())
	}

	// node-a drains: its clients get 4010, and reconnecting through the
	// same URL lands them on node-b, where they resume from offset 2.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- nodes[0].Server.Drain(ctx, 200*time.Millisecond) }()
	for _, c := range perNode["node-a"] {
		if _, _, err := c.conn.Read(ctx); websocket.CloseStatus(err) != 4010 {
			t.Fatalf("draining node closed with %v", err)
		}
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if status, _ := post(t, base+"/v1/publish", heraldtest.APIKey, []byte(`{"channel":"merchant:acme","data":{"n":3}}`)); status != 200 {
		t.Fatalf("publish during the drain: %d", status)
	}
	for range perNode["node-a"] {
		c := dial(t, base, token)
		if c.node != "node-b" {
			t.Fatalf("reconnected to %s while node-a drains", c.node)
		}
		if f := c.subscribe("merchant:acme", map[string]any{"offset": 2, "epoch": epoch}); f["recovered"] != true {
			t.Fatalf("resume on node-b: %v", f)
		}
		if f := c.read(); f["type"] != "pub" || f["offset"] != float64(3) {
			t.Fatalf("missed publication: %v", f)
		}
	}
}

// A client cannot name its own address through nginx: with nginx and its
// own hop trusted (a private network, as behind Docker's port proxy), a
// forged X-Forwarded-For naming an allowed provider address is still the
// client's real address to herald, and refused.
func TestNginx_ForwardedForCannotBeForged(t *testing.T) {
	cfg := heraldtest.Config()
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	kriptomat := cfg.Providers["kriptomat"]
	kriptomat.Allow = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	cfg.Providers["kriptomat"] = kriptomat
	base, _ := startNginx(t, heraldtest.Start(t, cfg), heraldtest.Start(t, cfg))
	body, err := os.ReadFile("../testdata/kriptomat/withdrawal.json")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/ingress/kriptomat", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+heraldtest.ProviderSecret)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a forged X-Forwarded-For through nginx: %d %s, want 403", resp.StatusCode, answer)
	}
}

// TestNginxConf_WebsocketSettings holds the file to what herald needs where
// a test cannot wait: the read timeout must outlast herald's ping interval.
func TestNginxConf_WebsocketSettings(t *testing.T) {
	conf, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	s := string(conf)
	for _, want := range []string{
		"proxy_http_version 1.1;",
		"proxy_set_header Upgrade $http_upgrade;",
		"proxy_set_header Connection $connection_upgrade;",
		"least_conn;",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*(ip_hash|hash|sticky)\b`).MatchString(s) {
		t.Error("nginx.conf makes sessions sticky")
	}
	m := regexp.MustCompile(`proxy_read_timeout (\d+)s;`).FindStringSubmatch(s)
	if m == nil {
		t.Fatal("nginx.conf sets no proxy_read_timeout in seconds")
	}
	var secs int
	fmt.Sscan(m[1], &secs)
	if time.Duration(secs)*time.Second < 2*25*time.Second {
		t.Errorf("proxy_read_timeout %ds would cut websockets between herald's 25s pings", secs)
	}
}
