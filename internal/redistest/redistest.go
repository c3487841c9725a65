// Package redistest runs real redis-server processes for tests: one on a
// free loopback port, or a Redis Cluster of several. A missing redis-server
// fails the test; nothing here is a mock.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configure a server.
type Options struct {
	// AOF turns on the append-only file with appendfsync always, so that
	// every acknowledged write survives a restart.
	AOF bool
	// Cluster starts the server with cluster-enabled yes.
	Cluster bool
	// Args are more redis-server arguments, after (and over) the rest.
	Args []string
}

// Server is a redis-server process owned by a test.
type Server struct {
	t    testing.TB
	opts Options
	dir  string
	port int

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Binary returns the path of redis-server, failing the test when it is
// not installed (scripts/deps.sh installs it).
func Binary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is required (apt-get install redis-server, or run scripts/deps.sh): %v", err)
	}
	return p
}

// Start runs a redis-server on a free port until the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	Binary(t)
	s := &Server{t: t, opts: opts, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	for try := 1; ; try++ {
		s.port = freePort(t)
		err := s.launch()
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || try == 3 {
			t.Fatal(err)
		}
	}
}

// errPortTaken: another process took the port between freePort and the
// server's start.
var errPortTaken = errors.New("the port was taken")

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is redis://host:port.
func (s *Server) URL() string { return "redis://" + s.Addr() }

func (s *Server) start() {
	s.t.Helper()
	if err := s.launch(); err != nil {
		s.t.Fatal(err)
	}
}

// launch starts the server and waits until it answers, checking that the
// answer comes from it and not from another process on its port.
func (s *Server) launch() error {
	args := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--protected-mode", "no", "--loglevel", "warning",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}
	if s.opts.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.opts.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "2000")
	}
	args = append(args, s.opts.Args...)
	cmd := exec.Command(Binary(s.t), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	ours := "process_id:" + strconv.Itoa(cmd.Process.Pid)
	failed := func(format string, args ...any) error {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // if it is not gone already
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf(format+"\n%s", append(args, log)...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return failed("%w: redis-server on %s exited:", errPortTaken, s.Addr())
		default:
		}
		if reply, err := s.Do("PING"); err == nil && reply == "PONG" {
			info, err := s.Do("INFO", "server")
			if err == nil && slices.Contains(strings.Split(info, "\r\n"), ours) {
				s.mu.Lock()
				s.cmd = cmd
				s.mu.Unlock()
				return nil
			}
			if err == nil { // ours is still starting, and fails to bind
				return failed("%w: another redis-server answers on %s", errPortTaken, s.Addr())
			}
		}
		if time.Now().After(deadline) {
			return failed("redis-server on %s did not answer PING:", s.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	s.waitGone()
}

// Restart kills the server and starts it again on the same port and data
// directory (so AOF data survives).
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// StartAgain starts a killed server again on the same port and data
// directory.
func (s *Server) StartAgain() {
	s.t.Helper()
	s.start()
}

// Pause freezes the server (SIGSTOP) until Resume: connections stay open
// but nothing is answered, as in a long GC pause or a network stall.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Stop ends the server for good.
func (s *Server) Stop() {
	s.Resume()
	s.Kill()
}

func (s *Server) waitGone() {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr(), 50*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// Do sends one command over a fresh connection and returns the reply as
// text (simple strings, errors, integers and bulk strings; arrays are
// joined with newlines). It needs no client library, so tests can poke
// Redis behind herald's back.
func (s *Server) Do(args ...string) (string, error) {
	return Do(s.Addr(), args...)
}

// Do sends one command to addr; see Server.Do.
func Do(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		parts := make([]string, 0, max(n, 0))
		for i := 0; i < n; i++ {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// freePort asks the kernel for a free loopback port. Redis Cluster also
// needs port+10000 (its bus), so both are checked.
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if port+10000 > 65535 {
			continue
		}
		if bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000)); err == nil {
			bus.Close()
			return port
		}
	}
	t.Fatal("no free port pair for redis-server")
	return 0
}

// Cluster is a Redis Cluster: masters, and replicas if asked for.
type Cluster struct {
	Nodes []*Server
}

// StartCluster creates a cluster of n masters with redis-cli --cluster
// create and waits until every node reports cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return startCluster(t, n, 0)
}

// StartReplicatedCluster creates a cluster of n masters with one replica
// each, and waits until every replica has synchronised with its master.
// A replica takes over by itself when its master has been unreachable for
// the cluster node timeout (2 s).
func StartReplicatedCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := startCluster(t, n, 1)
	c.await(t, "in sync", func(s *Server) (string, bool) {
		info, err := s.Do("INFO", "replication")
		return fmt.Sprint(info, err), err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up"))
	})
	return c
}

// await waits, at most 20 s, until ready holds for every node; ready
// also returns what to report if it never does.
func (c *Cluster) await(t testing.TB, what string, ready func(*Server) (string, bool)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Nodes {
		for {
			got, ok := ready(s)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not %s: %s", s.Addr(), what, got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func startCluster(t testing.TB, n, replicas int) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli is required for Redis Cluster tests: %v", err)
	}
	c := &Cluster{}
	args := []string{"--cluster", "create"}
	for i := 0; i < n*(1+replicas); i++ {
		s := Start(t, Options{Cluster: true})
		c.Nodes = append(c.Nodes, s)
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.await(t, "cluster_state:ok", func(s *Server) (string, bool) {
		info, err := s.Do("CLUSTER", "INFO")
		return fmt.Sprint(info, err), err == nil && strings.Contains(info, "cluster_state:ok")
	})
	return c
}

// Addrs returns the nodes' addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, s := range c.Nodes {
		out = append(out, s.Addr())
	}
	return out
}

// Server returns the cluster's server listening on addr.
func (c *Cluster) Server(addr string) *Server {
	for _, s := range c.Nodes {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// Node is one line of CLUSTER NODES.
type Node struct {
	ID, Addr string
	Master   bool
	MasterID string   // a replica's master
	Slots    [][2]int // inclusive ranges a master serves
}

// Topology returns the cluster as node addr sees it.
func Topology(addr string) ([]Node, error) {
	out, err := Do(addr, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var nodes []Node
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES line %q", line)
		}
		n := Node{ID: f[0], Addr: strings.SplitN(f[1], "@", 2)[0], MasterID: f[3]}
		flags := strings.Split(f[2], ",")
		n.Master = slices.Contains(flags, "master")
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being migrated
				continue
			}
			lo, hi, found := strings.Cut(r, "-")
			if !found {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("CLUSTER NODES slots %q", r)
			}
			n.Slots = append(n.Slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// Owner returns the master that serves slot, in nodes.
func Owner(nodes []Node, slot int) (Node, bool) {
	for _, n := range nodes {
		for _, r := range n.Slots {
			if n.Master && slot >= r[0] && slot <= r[1] {
				return n, true
			}
		}
	}
	return Node{}, false
}
