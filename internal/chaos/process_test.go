package chaos

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"herald/internal/heraldtest"
)

// buildHerald compiles cmd/herald once per test binary.
func buildHerald(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herald")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/herald")
	cmd.Dir = heraldtest.Root(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building herald: %v\n%s", err, out)
	}
	return bin
}

// process is a herald node run as its own process, so it can be killed.
type process struct {
	t    *testing.T
	bin  string
	env  []string
	port int
	name string
	log  *os.File

	mu  sync.Mutex
	cmd *exec.Cmd
}

func newProcess(t *testing.T, bin, name string, env []string) *process {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, bin: bin, env: env, port: port, name: name, log: logf}
	t.Cleanup(p.kill)
	return p
}

func (p *process) url() string { return "http://127.0.0.1:" + strconv.Itoa(p.port) }

// node is the process as heraldtest sees it (URL only; no in-process server).
func (p *process) node() *heraldtest.Node { return &heraldtest.Node{URL: p.url()} }

// start runs the node and waits until it answers, as itself: the port was
// free when picked, but another process may have taken it since.
func (p *process) start() {
	p.t.Helper()
	cmd := exec.Command(p.bin)
	cmd.Env = append(os.Environ(), append(p.env, "HERALD_ADDR=127.0.0.1:"+strconv.Itoa(p.port), "HERALD_NODE_ID="+p.name)...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() { _ = cmd.Wait() }()
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	itself := fmt.Sprintf("herald_node_info{node=%q} 1", p.name)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.url() + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), itself) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("%s did not come up on port %d", p.name, p.port)
}

// kill ends the node with SIGKILL: no drain, no goodbye.
func (p *process) kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	for i := 0; i < 250; i++ {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), 20*time.Millisecond); err != nil {
			return
		} else {
			c.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
}
