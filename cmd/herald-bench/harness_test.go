package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"herald/internal/heraldtest"
	"herald/internal/redistest"
)

// These tests check that the harness runs end to end against a real
// herald process and accounts for every delivery. The loads are tiny and
// no figure is asserted: figures come from full runs (BENCHMARKS.md).

const (
	testJWTSecret      = "bench-test-jwt-secret-0123456789"
	testAPIKey         = "bench-test-api-key"
	testProviderSecret = "bench-test-provider-secret"
)

func TestHarness_EmbeddedBroker_LosesNothing(t *testing.T) {
	base, pid := startHerald(t, "")
	runAll(t, base, pid)
}

func TestHarness_Redis_LosesNothing(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	base, pid := startHerald(t, r.URL())
	runAll(t, base, pid)
}

// The soak scenario in miniature, on Redis: clients torn down by storms
// reconnect, resume with since and still get every event once, in order,
// while the server's memory is sampled.
func TestHarness_Soak_StormsResumeEverything(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	base, pid := startHerald(t, r.URL())
	res := runBench(t, base, pid, "-scenario", "soak", "-clients", "40", "-rate", "60", "-duration", "4s",
		"-storm-every", "700ms", "-storm-fraction", "0.5", "-sample-every", "500ms", "-warmup", "0s")
	s := res.Soak
	if s == nil {
		t.Fatalf("no soak figures: %+v", res)
	}
	t.Logf("storms %d, reconnects %d, resumed %d, deliveries %+v, memory %+v", s.Storms, s.Reconnects, s.Resumed, *res.Deliveries, *s.Memory)
	if s.Storms < 3 || s.Reconnects < int64(s.Storms)*20 || s.Resumed < s.Reconnects {
		t.Errorf("storms %d, reconnects %d, resumed %d: want every stormed client back and resumed", s.Storms, s.Reconnects, s.Resumed)
	}
	if len(s.Timeline) < 5 || s.Memory == nil {
		t.Fatalf("timeline %d samples, memory %+v", len(s.Timeline), s.Memory)
	}
	for _, smp := range s.Timeline {
		if smp.RSSKiB <= 0 || smp.HeapInuseKiB <= 0 || smp.Goroutines <= 0 {
			t.Errorf("sample without figures: %+v", smp)
		}
	}
	if last := s.Timeline[len(s.Timeline)-1]; last.Received != res.Deliveries.Expected {
		t.Errorf("last sample says %d received, want %d", last.Received, res.Deliveries.Expected)
	}
}

func TestHarness_Floor_LosesNothing(t *testing.T) {
	bin := build(t, "./cmd/herald-bench/floor")
	r := redistest.Start(t, redistest.Options{})
	for _, extra := range [][]string{nil, {"-redis", r.Addr()}} {
		t.Run(fmt.Sprintf("redis=%v", extra != nil), func(t *testing.T) {
			addr := freeAddr(t)
			start(t, exec.Command(bin, append([]string{"-addr", addr}, extra...)...), "http://"+addr+"/v1/publish")
			for _, args := range [][]string{
				{"-scenario", "fanout", "-clients", "10", "-rate", "20", "-duration", "500ms"},
				{"-scenario", "peruser", "-clients", "10", "-rate", "50", "-duration", "500ms"},
			} {
				runBench(t, "http://"+addr, 0, args...)
			}
			if extra != nil {
				// The offsets came from Redis: 25 publications to 10 users.
				if n, err := r.Do("GET", "user:"+user(0)); err != nil || n != "3" {
					t.Fatalf("offset of user:%s in Redis: %q %v", user(0), n, err)
				}
			}
		})
	}
}

// The open-source peer, driven in Centrifuge's protocol: its pings, every
// second here (so each scenario's clients see at least one), must be
// answered within 0.9 s or it drops the clients.
func TestHarness_Peer_LosesNothing(t *testing.T) {
	bin := buildModule(t, "cmd/herald-bench/peer")
	r := redistest.Start(t, redistest.Options{})
	addr := freeAddr(t)
	cmd := exec.Command(bin, "-addr", addr, "-redis", r.Addr(), "-ping", "1s")
	cmd.Env = append(os.Environ(), "PEER_JWT_SECRET="+testJWTSecret, "PEER_API_KEY="+testAPIKey)
	start(t, cmd, "http://"+addr+"/healthz")
	for _, args := range [][]string{
		{"-scenario", "idle", "-clients", "20", "-settle", "1500ms"},
		{"-scenario", "fanout", "-clients", "20", "-rate", "20", "-duration", "1500ms"},
		{"-scenario", "peruser", "-via", "api", "-clients", "20", "-rate", "50", "-duration", "1500ms"},
		{"-scenario", "resume", "-missed", "50", "-repeat", "2"},
	} {
		t.Run(args[1], func(t *testing.T) {
			res := runBench(t, "http://"+addr, cmd.Process.Pid, append([]string{"-protocol", "centrifuge"}, args...)...)
			if res.Server == nil || res.Server.RSSAfterKiB <= 0 {
				t.Errorf("server figures missing: %+v", res.Server)
			}
			if args[1] != "resume" && res.Connected != 20 {
				t.Errorf("connected %d, want 20", res.Connected)
			}
		})
	}
	// The publications went through the peer's Redis history.
	if n, err := r.Do("EXISTS", "centrifuge.stream.merchant:"+benchMerchant); err != nil || n != "1" {
		t.Errorf("the peer kept no history of merchant:%s in Redis: %q %v", benchMerchant, n, err)
	}
}

// runAll runs every scenario briefly and checks that nothing was lost.
func runAll(t *testing.T, base string, pid int) {
	for _, args := range [][]string{
		{"-scenario", "idle", "-clients", "20", "-settle", "0s"},
		{"-scenario", "fanout", "-clients", "20", "-rate", "20", "-duration", "1s"},
		{"-scenario", "peruser", "-via", "api", "-clients", "20", "-rate", "50", "-duration", "1s"},
		{"-scenario", "peruser", "-via", "ingress", "-clients", "20", "-rate", "50", "-duration", "1s"},
		{"-scenario", "resume", "-missed", "50", "-repeat", "2"},
	} {
		t.Run(args[1]+"_"+strings.Join(args[2:4], ""), func(t *testing.T) {
			res := runBench(t, base, pid, args...)
			if res.Server == nil || res.Server.CPUMs < 0 || res.Server.RSSAfterKiB <= 0 {
				t.Errorf("server figures missing: %+v", res.Server)
			}
		})
	}
}

// runBench runs the harness in this process and returns its result, failing
// the test on any error or lost delivery.
func runBench(t *testing.T, base string, pid int, args ...string) Result {
	t.Helper()
	args = append([]string{
		"-url", base, "-pid", strconv.Itoa(pid), "-drain", "5s",
		"-jwt-secret", testJWTSecret, "-api-key", testAPIKey, "-provider-secret", testProviderSecret,
		"-testdata", filepath.Join(heraldtest.Root(t), "testdata"),
	}, args...)
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("herald-bench %s: exit %d, output %q: %v\n%s", strings.Join(args, " "), code, stdout.String(), err, stderr.String())
	}
	if code != 0 || res.Errors.Total != 0 {
		t.Fatalf("herald-bench %s: exit %d\n%s\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	// The scenarios that deliver must account for it: one that reports
	// nothing has checked nothing.
	var scenario string
	for i, a := range args[:len(args)-1] {
		if a == "-scenario" {
			scenario = args[i+1]
		}
	}
	switch scenario {
	case "fanout", "peruser", "soak":
		d := res.Deliveries
		if d == nil {
			t.Fatalf("herald-bench %s reported no deliveries:\n%s", strings.Join(args, " "), stdout.String())
		}
		if d.Expected == 0 || d.Received != d.Expected || d.Lost != 0 || d.Duplicates != 0 || d.Gaps != 0 || d.Reordered != 0 || d.Misrouted != 0 {
			t.Fatalf("deliveries %+v", *d)
		}
	case "resume":
		r := res.Resume
		if r == nil {
			t.Fatalf("herald-bench %s reported no resumes:\n%s", strings.Join(args, " "), stdout.String())
		}
		if r.Repeats == 0 || r.Complete != r.Repeats {
			t.Fatalf("resume %+v", *r)
		}
	}
	return res
}

// startHerald builds and starts herald on a free port, on Redis when
// redisURL is set, with every provider enabled, and returns its URL and
// pid.
func startHerald(t *testing.T, redisURL string) (string, int) {
	t.Helper()
	bin := build(t, "./cmd/herald")
	addr := freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"HERALD_ADDR="+addr, "HERALD_JWT_SECRET="+testJWTSecret, "HERALD_API_KEY="+testAPIKey,
		"HERALD_REDIS_URL="+redisURL, "HERALD_LOG_LEVEL=warn",
	)
	cmd.Env = append(cmd.Env, providerEnv(testProviderSecret)...)
	start(t, cmd, "http://"+addr+"/readyz")
	return "http://" + addr, cmd.Process.Pid
}

// start runs cmd until the test ends and waits until probe answers.
func start(t *testing.T, cmd *exec.Cmd, probe string) {
	t.Helper()
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), logs.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(probe)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("%s exited:\n%s", cmd.Path, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not answering %s: %v", cmd.Path, probe, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// build compiles the command at pkg, relative to the repository's root
// and in the module there, into the test's directory.
func build(t *testing.T, pkg string) string { return buildIn(t, ".", pkg) }

// buildModule compiles the command in dir, a module of its own inside this
// repository, into the test's directory.
func buildModule(t *testing.T, dir string) string { return buildIn(t, dir, ".") }

func buildIn(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(filepath.Join(dir, pkg)))
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, pkg)
	cmd.Dir = filepath.Join(heraldtest.Root(t), dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s in %s: %v\n%s", pkg, dir, err, b)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr())
}

// Runs at different rates are summarized apart: a per-webhook figure means
// something only at its rate.
func TestSummarize_GroupsByRate(t *testing.T) {
	dir := t.TempDir()
	for i, rate := range []float64{1000, 2000, 1000} {
		r := Result{Scenario: "peruser", Via: "ingress", Label: "herald-redis", Rate: rate,
			Server: &Proc{PerPublication: rate / 4000}}
		b, _ := json.Marshal(r)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("run-%d.json", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := summarize([]string{dir}, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"peruser via ingress at 1000/s", "peruser via ingress at 2000/s", "| herald-redis | 2 | 0.25 |", "| herald-redis | 1 | 0.50 |"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}

// -help lists the flags without the environment's secrets as defaults.
func TestOptions_HelpShowsNoSecrets(t *testing.T) {
	t.Setenv("HERALD_JWT_SECRET", "jwt-from-env")
	t.Setenv("HERALD_API_KEY", "key-from-env")
	t.Setenv("HERALD_BENCH_PROVIDER_SECRET", "provider-from-env")
	var help bytes.Buffer
	if _, err := parseOptions([]string{"-help"}, &help); err == nil {
		t.Fatal("-help parsed as options")
	}
	for _, secret := range []string{"jwt-from-env", "key-from-env", "provider-from-env"} {
		if strings.Contains(help.String(), secret) {
			t.Errorf("-help shows %q:\n%s", secret, help.String())
		}
	}
	o, err := parseOptions([]string{"-url", "http://127.0.0.1:1"}, io.Discard)
	if err != nil || o.jwtSecret != "jwt-from-env" || o.apiKey != "key-from-env" || o.providerSecret != "provider-from-env" {
		t.Fatalf("the environment no longer applies: %+v %v", o, err)
	}
}
