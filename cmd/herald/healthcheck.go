package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

const healthcheckAbout = `
Asks the node at HERALD_ADDR (on this host) whether it is ready — GET
/readyz: broker reachable and not draining — and exits 0 if it is, 1 if
not, and 1 when called wrongly too (a container health check must not
exit 2, which Docker reserves). It is the container health check: the
image has no shell or curl.`

func runHealthcheck(ctx context.Context, args []string, env lookupFunc, stdout, stderr io.Writer) int {
	fs := newFlags("healthcheck", stderr, healthcheckAbout)
	// Called wrongly is unhealthy too: 1, not usageError's 2 (but --help
	// is 0).
	wrong := func(err error) int {
		if usageError(stderr, "healthcheck", err) == 0 {
			return 0
		}
		return 1
	}
	addr := envString(fs, env, "addr", "HERALD_ADDR", ":8080", "the node's listen address")
	url := fs.String("url", "", "URL to check instead [http://<addr>/readyz]")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if _, err := parseArgs(fs, args, 0); err != nil {
		return wrong(err)
	}
	target := *url
	if target == "" {
		host, err := localHost(*addr)
		if err != nil {
			return wrong(fmt.Errorf("HERALD_ADDR: %w", err))
		}
		target = "http://" + host + "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return wrong(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return failed(stderr, "healthcheck", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	fmt.Fprintf(stdout, "%s %s", resp.Status, body)
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// localHost turns a listen address into one this host can dial: a
// wildcard or empty host becomes the loopback address.
func localHost(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}
