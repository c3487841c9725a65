package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
	"herald/internal/heraldtest"
)

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestConfig_ErrorsNameTheSetting(t *testing.T) {
	base := []string{"HERALD_JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret"}
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		{nil, nil, "HERALD_JWT_SECRET or HERALD_JWT_PUBLIC_KEY is required"},
		{append(base, "HERALD_HISTORY_SIZE", "lots"), nil, "HERALD_HISTORY_SIZE: must be a positive integer"},
		{append(base, "HERALD_HISTORY_TTL", "-1h"), nil, "HERALD_HISTORY_TTL"},
		{append(base, "HERALD_LOG_LEVEL", "loud"), nil, "HERALD_LOG_LEVEL"},
		{append(base, "HERALD_INGRESS_KRIPTOMAT_ALLOW", "10.0.0.0/8,nowhere"), nil, "HERALD_INGRESS_KRIPTOMAT_ALLOW"},
		{append(base, "HERALD_INGRESS_KRIPTOMAT_MERCHANT", "a b"), nil, "HERALD_INGRESS_KRIPTOMAT_MERCHANT"},
		{append(base, "HERALD_JWT_PUBLIC_KEY", "/nonexistent.pem"), nil, "exclusive"},
		{append(base, "HERALD_INGRESS_KRIPTOMAT_USER_PREFIX", "km/"), nil, "HERALD_INGRESS_KRIPTOMAT_USER_PREFIX"},
		{append(base, "HERALD_INGRESS_PARTNER_USER_PREFIX", strings.Repeat("p", 128)), nil, "HERALD_INGRESS_PARTNER_USER_PREFIX"},
		{append(base, "HERALD_DEV", "1", "HERALD_REDIS_URL", "redis://10.0.0.5:6379"), nil, "--dev (HERALD_DEV) runs the embedded broker"},
		{append(base, "HERALD_REDIS_CLUSTER", "10.0.0.5:7000"), []string{"--dev"}, "--dev (HERALD_DEV) runs the embedded broker"},
		{base, []string{"--history-size", "0"}, "HERALD_HISTORY_SIZE"},
		{base, []string{"--no-such-flag"}, "no-such-flag"},
		{append(base, "HERALD_DEV", "no"), nil, `HERALD_DEV="no": want true or false`},
		{append(base, "HERALD_DEV", "off"), nil, `HERALD_DEV="off"`},
		{append(base, "HERALD_TRUSTED_PROXIES", "::ffff:10.0.0.0/80"), nil, "HERALD_TRUSTED_PROXIES"},
	}
	for _, tc := range cases {
		_, err := parseConfig(tc.args, env(tc.env...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v args %v: got %v, want %q", tc.env, tc.args, err, tc.want)
		}
	}
}

func TestConfig_DevIsABoolean(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "FALSE": false, "1": true, "true": true, "True": true} {
		c, err := parseConfig(nil, env("HERALD_JWT_SECRET", "x", "HERALD_DEV", v), io.Discard)
		if err != nil || c.Dev != want {
			t.Errorf("HERALD_DEV=%q: dev %v, %v; want %v", v, c != nil && c.Dev, err, want)
		}
	}
}

// An IPv4-mapped prefix means the IPv4 addresses it maps: client
// addresses are compared unmapped.
func TestConfig_MappedPrefixesAreIPv4(t *testing.T) {
	c, err := parseConfig(nil, env("HERALD_JWT_SECRET", "x", "HERALD_TRUSTED_PROXIES", "::ffff:10.0.0.0/104,::ffff:192.0.2.7",
		"HERALD_INGRESS_KRIPTOMAT_SECRET", "k", "HERALD_INGRESS_KRIPTOMAT_ALLOW", "::ffff:198.51.100.0/120"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		nets []netip.Prefix
		addr string
	}{
		{c.TrustedProxies, "10.1.2.3"}, {c.TrustedProxies, "192.0.2.7"}, {c.Providers["kriptomat"].Allow, "198.51.100.9"},
	} {
		if !slices.ContainsFunc(tc.nets, func(p netip.Prefix) bool { return p.Contains(netip.MustParseAddr(tc.addr)) }) {
			t.Errorf("%v does not contain %s", tc.nets, tc.addr)
		}
	}
}

func TestConfig_FlagsWinOverEnvironment(t *testing.T) {
	c, err := parseConfig([]string{"--history-size", "7", "--ingress-kriptomat-merchant", "m2"},
		env("HERALD_JWT_SECRET", "x", "HERALD_HISTORY_SIZE", "5", "HERALD_INGRESS_KRIPTOMAT_MERCHANT", "m1", "HERALD_INGRESS_KRIPTOMAT_SECRET", "k"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HistorySize != 7 || c.Providers["kriptomat"].Merchant != "m2" || c.Providers["kriptomat"].Secret != "k" || c.HistoryTTL != 24*time.Hour {
		t.Fatalf("%+v", c)
	}
}

// An empty variable is an unset one: docker compose passes "" for a
// ${VAR:-} the operator did not export.
func TestConfig_EmptyVariableIsUnset(t *testing.T) {
	c, err := parseConfig(nil, env("HERALD_JWT_SECRET", "x", "HERALD_HISTORY_SIZE", "", "HERALD_ADDR", "",
		"HERALD_DEDUP_WINDOW", "", "HERALD_INGRESS_KRIPTOMAT_TOLERANCE", "", "HERALD_INGRESS_KRIPTOMAT_SECRET", "k"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HistorySize != 1000 || c.Addr != ":8080" || c.DedupWindow != 72*time.Hour || c.Providers["kriptomat"].Tolerance != 12*time.Hour {
		t.Fatalf("%+v", c)
	}
}

func TestConfigCommand_MasksSecrets(t *testing.T) {
	var out bytes.Buffer
	code := run([]string{"config"}, env("HERALD_JWT_SECRET", "very-secret-value", "HERALD_API_KEY", "api-key-value",
		"HERALD_REDIS_URL", "redis://user:hunter2@redis:6379/0", "HERALD_INGRESS_KRIPTOMAT_SECRET", "provider-secret"), &out, io.Discard)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	s := out.String()
	for _, secret := range []string{"very-secret-value", "api-key-value", "hunter2", "provider-secret"} {
		if strings.Contains(s, secret) {
			t.Errorf("config output shows %q:\n%s", secret, s)
		}
	}
	for _, line := range []string{"HERALD_HISTORY_SIZE=1000", "HERALD_REDIS_URL=redis://user:******@redis:6379/0", "HERALD_INGRESS_KRIPTOMAT_SECRET=******"} {
		if !strings.Contains(s, line) {
			t.Errorf("config output lacks %q:\n%s", line, s)
		}
	}
}

// Help and flag errors print every flag with its default: the documented
// one, never the environment's value, which may be a secret.
func TestHelpAndFlagErrors_NeverShowTheEnvironmentsSecrets(t *testing.T) {
	secrets := env("HERALD_JWT_SECRET", "very-secret-value", "HERALD_API_KEY", "api-key-value",
		"HERALD_REDIS_URL", "redis://user:hunter2@redis:6379/0", "HERALD_INGRESS_KRIPTOMAT_SECRET", "provider-secret",
		"HERALD_TOKEN", "client-token-value", "HERALD_HISTORY_SIZE", "5")
	for _, args := range [][]string{
		{"--help"}, {"--histroy-size", "5"}, {"config", "--help"},
		{"token", "--help"}, {"token", "--nope"}, {"tail", "--help"}, {"send", "--help"}, {"healthcheck", "--help"},
	} {
		var stdout, stderr bytes.Buffer
		run(args, secrets, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if !strings.Contains(out, "usage:") {
			t.Errorf("%v printed no usage:\n%s", args, out)
		}
		for _, secret := range []string{"very-secret-value", "api-key-value", "hunter2", "provider-secret", "client-token-value"} {
			if strings.Contains(out, secret) {
				t.Errorf("%v shows %q:\n%s", args, secret, out)
			}
		}
	}
	// The environment still applies.
	c, err := parseConfig(nil, secrets, io.Discard)
	if err != nil || c.JWTSecret != "very-secret-value" || c.HistorySize != 5 {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestConfigCommand_MasksAClusterURLsPassword(t *testing.T) {
	var out bytes.Buffer
	code := run([]string{"config"}, env("HERALD_JWT_SECRET", "x", "HERALD_REDIS_CLUSTER", "rediss://:cluster-pw@10.0.0.1:6379?addr=10.0.0.2:6379"), &out, io.Discard)
	if code != 0 || strings.Contains(out.String(), "cluster-pw") ||
		!strings.Contains(out.String(), "HERALD_REDIS_CLUSTER=rediss://:******@10.0.0.1:6379?addr=10.0.0.2:6379\n") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
}

func TestEnvString_EmptyVariableIsUnset(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	empty := envString(fs, env("HERALD_URL", ""), "url", "HERALD_URL", "http://127.0.0.1:8080", "")
	set := envString(fs, env("HERALD_TOKEN", "tok"), "token", "HERALD_TOKEN", "", "")
	if err := fs.Parse(nil); err != nil || *empty != "http://127.0.0.1:8080" || *set != "tok" {
		t.Fatalf("%q %q %v", *empty, *set, err)
	}
}

func TestMaskURL_HidesTheWholePassword(t *testing.T) {
	for in, want := range map[string]string{
		"redis://user:hunter2@redis:6379/0": "redis://user:******@redis:6379/0",
		"redis://user:pa:ss@redis:6379":     "redis://user:******@redis:6379",
		"redis://:p@ss@redis":               "redis://:******@redis",
		"rediss://user@redis:6380":          "rediss://user@redis:6380",
		"redis://redis:6379":                "redis://redis:6379",
	} {
		if got := maskURL(in); got != want {
			t.Errorf("maskURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRun_BadConfigurationExitsWithMessage(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(nil, env(), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "HERALD_JWT_SECRET") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestDev_EndToEnd runs the README's command the way a newcomer does, uses
// what it prints, and stops it with SIGTERM.
func TestDev_EndToEnd(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "herald")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--dev", "--addr", "127.0.0.1:0", "--drain-window", "100ms")
	cmd.Dir = filepath.Join("..", "..") // the repository root, as the README says
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var dashboard, curl string
	deadline := time.After(20 * time.Second)
	for dashboard == "" || curl == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("herald --dev exited early:\n%s", stderr.String())
			}
			if strings.HasPrefix(l, "Dashboard:") {
				dashboard = strings.TrimSpace(strings.TrimPrefix(l, "Dashboard:"))
			}
			if strings.Contains(l, "withdrawal.json") {
				curl = l
			}
		case <-deadline:
			t.Fatalf("no dashboard link and curl line printed; stderr:\n%s", stderr.String())
		}
	}
	base, token, _ := strings.Cut(dashboard, "/#token=")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	resp, err := http.Get(base + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("dashboard page: %v %v", err, resp)
	}
	resp.Body.Close()

	conn, _, err := websocket.Dial(ctx, strings.Replace(base, "http", "ws", 1)+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	send := func(v any) {
		b, _ := json.Marshal(v)
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	read := func() map[string]any {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m
	}
	send(map[string]any{"id": 1, "type": "connect", "token": token})
	if f := read(); f["type"] != "connected" {
		t.Fatalf("connect: %v", f)
	}
	send(map[string]any{"id": 2, "type": "subscribe", "channel": "merchant:demo"})
	if f := read(); f["type"] != "subscribed" {
		t.Fatalf("subscribe: %v", f)
	}

	// Run the printed curl line's request.
	m := regexp.MustCompile(`Bearer ([0-9a-f]+)".*@(\S+) (\S+)$`).FindStringSubmatch(curl)
	if m == nil {
		t.Fatalf("unexpected curl line %q", curl)
	}
	body, err := os.ReadFile(filepath.Join("..", "..", m[2]))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, m[3], bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+m[1])
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("posting the sample: %v %v", err, resp)
	}
	resp.Body.Close()
	if f := read(); f["type"] != "pub" || f["data"].(map[string]any)["type"] != "withdrawal.fiat" {
		t.Fatalf("pub: %v", f)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, _, err = conn.Read(ctx)
	if code := websocket.CloseStatus(err); code != 4010 {
		t.Fatalf("close on SIGTERM: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
}

// --dev prints the secrets it generated, never one it was given (a stray
// HERALD_DEV on a real node would put them in its logs), nor a token
// signed with one.
func TestDev_PrintsOnlyWhatItGenerated(t *testing.T) {
	given := env("HERALD_JWT_SECRET", "given-jwt-secret-0123456789abcdef", "HERALD_API_KEY", "given-api-key",
		"HERALD_INGRESS_KRIPTOMAT_SECRET", "given-kriptomat-secret")
	c, err := parseConfig([]string{"--dev"}, given, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printDev(&out, c, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080})
	printed := out.String()
	for _, secret := range []string{"given-jwt-secret", "given-api-key", "given-kriptomat-secret", "Dashboard:"} {
		if strings.Contains(printed, secret) {
			t.Errorf("--dev printed %q:\n%s", secret, printed)
		}
	}
	for _, want := range []string{"API key:    $HERALD_API_KEY", `Bearer $HERALD_API_KEY"`, "herald token --sub demo"} {
		if !strings.Contains(printed, want) {
			t.Errorf("--dev did not print %q:\n%s", want, printed)
		}
	}
}

// The token --dev prints works on the node it was printed for, and grants
// the channels the configured providers' events go to, even when a
// provider was given its own merchant and the node checks iss and aud.
func TestDev_TokenGrantsConfiguredMerchants(t *testing.T) {
	c, err := parseConfig([]string{"--dev", "--ingress-kriptomat-merchant", "acme"},
		env("HERALD_JWT_ISSUER", "https://issuer.example", "HERALD_JWT_AUDIENCE", "herald-dev"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printDev(&out, c, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080})
	m := regexp.MustCompile(`Dashboard:\s+\S+/#token=(\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no dashboard token in:\n%s", out.String())
	}
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(c.JWTSecret), Issuer: c.JWTIssuer, Audience: c.JWTAudience})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(m[1])
	if err != nil {
		t.Fatalf("the printed token is refused by its own node: %v", err)
	}
	g := claims.Grants()
	for ch, want := range map[string]bool{
		"user:demo": true, "merchant:demo": true, "alerts:demo": true,
		"merchant:acme": true, "alerts:acme": true,
		"merchant:other": false, "user:acme": false,
	} {
		if g.Allows(ch) != want {
			t.Errorf("grants %+v allow %s: %v, want %v", g, ch, !want, want)
		}
	}
	if !strings.Contains(out.String(), "also alerts:acme merchant:acme") {
		t.Errorf("the extra grants are not printed:\n%s", out.String())
	}
}

// Every merchant and alerts channel a printed sample's event goes to is
// granted by the printed token: the configured merchant's (acme in the
// goldens, demo under --dev), and any a sample names itself (0xpay's
// merchantId).
func TestDev_TokenGrantsWhereEverySampleGoes(t *testing.T) {
	t.Chdir("../..")
	c, err := parseConfig([]string{"--dev"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	claims := devClaims(c, time.Now())
	g := claims.Grants()
	goldens, _ := filepath.Glob("testdata/*/*.golden.json")
	named := 0
	for _, f := range goldens {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var golden heraldtest.Golden
		if err := json.Unmarshal(b, &golden); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, ch := range golden.Channels {
			ns, m, _ := strings.Cut(ch, ":")
			if ns == "user" {
				continue
			}
			if m == heraldtest.Merchant {
				ch = ns + ":" + devMerchant
			} else {
				named++
			}
			if !g.Allows(ch) {
				t.Errorf("%s goes to %s, which the --dev token does not grant", f, ch)
			}
		}
	}
	if named == 0 {
		t.Fatal("no sample names its own merchant: the test checks nothing beyond the configured one")
	}
}
