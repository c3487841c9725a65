package web_test

// The JavaScript side is tested by Node's test runner, run from here so that
// `go test ./...` covers it: unit tests of herald.js, herald.js from Node
// against real herald processes, and the dashboard in headless Chromium.
// Node, npm and Chromium are required: a machine without them fails these
// tests rather than skipping them (scripts/deps.sh installs them).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// chromium is the browser the dashboard tests drive; never a downloaded one.
const chromium = "/usr/bin/chromium"

// jsTimeout bounds one node --test run; the whole web suite takes well
// under it.
const jsTimeout = 3 * time.Minute

var (
	setupOnce sync.Once
	setupErr  error
	heraldBin string // built once per package run, removed by TestMain
	tmpDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tmpDir != "" {
		os.RemoveAll(tmpDir)
	}
	os.Exit(code)
}

func TestClientUnit(t *testing.T) { runNodeTest(t, "client.unit.test.js") }

func TestClientFromNodeAgainstHerald(t *testing.T) { runNodeTest(t, "client.node.test.js") }

func TestDashboardInChromium(t *testing.T) { runNodeTest(t, "dashboard.browser.test.js") }

// TestClientTypes checks herald.js against herald.d.ts, and the documented
// examples against both.
func TestClientTypes(t *testing.T) {
	prepare(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := command(ctx, testDir(t), "node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.json").CombinedOutput()
	if err != nil {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
}

// runNodeTest runs one test file with node --test and fails with its
// report when any test fails.
func runNodeTest(t *testing.T, file string) {
	prepare(t)
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), jsTimeout)
	defer cancel()
	cmd := command(ctx, testDir(t), "node", "--test", "--test-reporter=spec", file)
	cmd.Env = append(os.Environ(),
		"HERALD_BIN="+heraldBin,
		"HERALD_ROOT="+root,
		"HERALD_ARTIFACTS="+filepath.Join(root, "test-artifacts"),
		"HERALD_CHROMIUM="+chromium,
		"NO_COLOR=1",
	)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("node --test %s (%s):\n%s", file, time.Since(start).Round(time.Millisecond), out)
	if ctx.Err() != nil {
		t.Fatalf("node --test %s did not finish within %s", file, jsTimeout)
	}
	if err != nil {
		t.Fatalf("node --test %s: %v", file, err)
	}
	if m := regexp.MustCompile(`(?m)^ℹ skipped (\d+)`).FindSubmatch(out); m != nil {
		if n, _ := strconv.Atoi(string(m[1])); n > 0 {
			t.Logf("%d JavaScript test(s) skipped; the reasons are in the report above", n)
		}
	}
}

// command runs in its own process group, so that a timeout also ends the
// herald and Chromium processes the tests started.
func command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// prepare checks the tools, installs web/test's npm packages when they are
// missing or stale, and builds the herald binary, once per run.
func prepare(t *testing.T) {
	t.Helper()
	setupOnce.Do(func() { setupErr = setup(repoRoot(t)) })
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

func setup(root string) error {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is required for the web tests (scripts/deps.sh installs it): %w", tool, err)
		}
	}
	if _, err := os.Stat(chromium); err != nil {
		return fmt.Errorf("Chromium is required at %s for the dashboard tests (scripts/deps.sh installs it): %w", chromium, err)
	}
	out, err := exec.Command("node", "--version").Output()
	if err != nil {
		return fmt.Errorf("node --version: %w", err)
	}
	var major int
	if _, err := fmt.Sscanf(string(out), "v%d", &major); err != nil || major < 20 {
		return fmt.Errorf("Node.js 20 or later is required, found %s", bytes.TrimSpace(out))
	}
	if err := npmInstall(filepath.Join(root, "web", "test")); err != nil {
		return err
	}
	tmpDir, err = os.MkdirTemp("", "herald-web-test-")
	if err != nil {
		return err
	}
	heraldBin = filepath.Join(tmpDir, "herald")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", heraldBin, "./cmd/herald")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building herald: %v\n%s", err, out)
	}
	return nil
}

// npmInstall runs npm ci when node_modules does not match
// package-lock.json, remembered by the lock file's hash. A file lock keeps
// two test runs from installing at once.
func npmInstall(dir string) error {
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".herald-lock-sha256")

	f, err := os.OpenFile(filepath.Join(os.TempDir(), "herald-web-npm.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)

	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in web/test: %v\n%s", err, out)
	}
	return os.WriteFile(stamp, []byte(want+"\n"), 0o644)
}

func testDir(t *testing.T) string { return filepath.Join(repoRoot(t), "web", "test") }

func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(wd) // tests run in web/
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(errors.New("web tests must run from the web package directory"))
	}
	return root
}
