// Command herald-bench is herald's load harness. It starts nothing: it is
// given a running hub's URL and keys, opens websocket clients against it,
// drives publications at a fixed open-loop rate for a fixed time, and
// prints one JSON result — deliveries expected and received, end-to-end
// latency, and the server's memory and CPU read from /proc of the pid it
// is given.
//
//	herald-bench -url http://127.0.0.1:8080 -pid $(pidof herald) \
//	    -jwt-secret S -api-key K -scenario fanout -clients 2000 -rate 20 -duration 30s
//
// Scenarios: idle (connect and subscribe, measure memory), fanout (one
// shared channel), peruser (each client its own channel, through the
// server API or the ingress with real provider payloads), resume (a
// client misses publications, then resumes with since), soak (hours of
// steady webhooks to per-user clients with periodic reconnect storms,
// sampling the server's RSS, heap and goroutines). It refuses any
// URL that is not loopback, and every run is bounded in clients and time.
//
//	herald-bench summarize DIR…
//
// prints the medians of the results saved in DIRs as Markdown tables, and
//
//	herald-bench provider-env
//
// the environment that enables every registered provider in herald with
// $HERALD_BENCH_PROVIDER_SECRET. suite.sh runs every scenario with them. BENCHMARKS.md has the method and
// the figures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Limits that keep every run bounded.
const (
	maxClients  = 30000
	maxDuration = 10 * time.Minute
	// maxSoak bounds the soak scenario's duration instead.
	maxSoak = 2 * time.Hour
	maxRate = 50000
	// maxWebhooks bounds the webhooks a per-user run through the ingress
	// builds before it starts (a few KiB each).
	maxWebhooks = 1_000_000
	maxMissed   = 10000
	maxRepeat   = 1000
)

// options are the command line.
type options struct {
	url            string
	wsURL          string
	scenario       string
	label          string
	protocol       string
	clients        int
	rate           float64
	duration       time.Duration
	via            string
	providers      []string
	testdata       string
	size           int
	missed         int
	repeat         int
	settle         time.Duration
	drain          time.Duration
	pid            int
	redisPID       int
	jwtSecret      string
	apiKey         string
	providerSecret string
	sources        []net.IP
	perSource      int
	dialers        int
	salt           int
	stormEvery     time.Duration
	stormFraction  float64
	sampleEvery    time.Duration
	warmup         time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "summarize" {
		if err := summarize(args[1:], stdout); err != nil {
			fmt.Fprintln(stderr, "herald-bench summarize:", err)
			return 1
		}
		return 0
	}
	if len(args) > 0 && args[0] == "provider-env" {
		for _, kv := range providerEnv(os.Getenv("HERALD_BENCH_PROVIDER_SECRET")) {
			fmt.Fprintln(stdout, kv)
		}
		return 0
	}
	opts, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "herald-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// However the server behaves, the run ends: connecting, the schedule,
	// the drain and the teardown all fit in this.
	ctx, cancel := context.WithTimeout(ctx, opts.duration+opts.settle+opts.drain+5*time.Minute)
	defer cancel()

	res, err := runScenario(ctx, opts, stderr)
	if res != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	}
	if err != nil {
		fmt.Fprintln(stderr, "herald-bench:", err)
		return 1
	}
	return 0
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("herald-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	var sources, provs string
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080", "the hub's base URL (loopback only)")
	fs.StringVar(&o.scenario, "scenario", "fanout", "idle, fanout, peruser, resume or soak")
	fs.StringVar(&o.protocol, "protocol", "herald", "the clients' protocol: herald, or centrifuge for the peer in ./peer (idle, fanout, peruser via api, resume)")
	fs.StringVar(&o.label, "label", "", "free text copied into the result (say which server and broker)")
	fs.IntVar(&o.clients, "clients", 100, "websocket clients to open")
	fs.Float64Var(&o.rate, "rate", 20, "publications (or webhooks) per second, open loop")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to publish")
	fs.StringVar(&o.via, "via", "api", "peruser: publish through the server API (api) or post provider webhooks (ingress)")
	fs.StringVar(&provs, "providers", "", "ingress: comma list of provider slugs whose testdata payloads to post [every registered one with user payloads]")
	fs.StringVar(&o.testdata, "testdata", "testdata", "ingress: the directory of provider payloads")
	fs.IntVar(&o.size, "size", 1000, "api: bytes of data per publication")
	fs.IntVar(&o.missed, "missed", 1000, "resume: publications the client misses")
	fs.IntVar(&o.repeat, "repeat", 10, "resume: how many times to miss and resume")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "idle: wait after connecting before reading the server's memory")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "after the last publication, the longest wait for deliveries")
	fs.IntVar(&o.pid, "pid", 0, "the server's pid, to read its memory and CPU from /proc (0: not measured)")
	fs.IntVar(&o.redisPID, "redis-pid", 0, "redis-server's pid, to report its CPU too (0: not measured)")
	// Secrets default to the environment after the definitions: -help
	// shows no default, never the environment's value.
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "HS256 secret to mint client tokens [$HERALD_JWT_SECRET]")
	fs.StringVar(&o.apiKey, "api-key", "", "server API key [$HERALD_API_KEY]")
	fs.StringVar(&o.providerSecret, "provider-secret", "", "ingress: the providers' secret [$HERALD_BENCH_PROVIDER_SECRET]")
	o.jwtSecret, o.apiKey, o.providerSecret = os.Getenv("HERALD_JWT_SECRET"), os.Getenv("HERALD_API_KEY"), os.Getenv("HERALD_BENCH_PROVIDER_SECRET")
	fs.StringVar(&sources, "sources", "", "comma list of 127.x.y.z source addresses for the clients [enough consecutive 127.0.0.x, picked at random]")
	fs.IntVar(&o.perSource, "per-source", 1000, "clients per source address (herald accepts 1000 connections per client address by default)")
	fs.IntVar(&o.dialers, "dial-concurrency", 64, "clients connecting at once")
	fs.IntVar(&o.salt, "salt", rand.IntN(1000), "ingress: 0-999, makes this run's event ids differ from earlier runs' [random]")
	fs.DurationVar(&o.stormEvery, "storm-every", 2*time.Minute, "soak: how often a reconnect storm disconnects clients")
	fs.Float64Var(&o.stormFraction, "storm-fraction", 0.25, "soak: the fraction of clients a storm disconnects at once")
	fs.DurationVar(&o.sampleEvery, "sample-every", 30*time.Second, "soak: how often to sample the server's memory")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Minute, "soak: samples before this are left out of the memory trend")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if provs != "" {
		o.providers = strings.Split(provs, ",")
	}
	return o, o.check(sources)
}

// check validates the options and fills what derives from them.
func (o *options) check(sources string) error {
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "ws") || u.Host == "" {
		return fmt.Errorf("-url %q: want http://127.0.0.1:<port>", o.url)
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	if host == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-url %q: the harness only loads loopback addresses", o.url)
	}
	u.Scheme = "http"
	u.Host = net.JoinHostPort(ip.String(), u.Port())
	u.Path = strings.TrimSuffix(u.Path, "/")
	o.url = u.String()
	o.wsURL = "ws" + strings.TrimPrefix(o.url, "http") + "/ws"

	switch o.scenario {
	case "idle", "fanout", "peruser", "resume", "soak":
	default:
		return fmt.Errorf("-scenario %q: want idle, fanout, peruser, resume or soak", o.scenario)
	}
	switch {
	case o.protocol != "herald" && o.protocol != "centrifuge":
		return fmt.Errorf("-protocol %q: want herald or centrifuge", o.protocol)
	case o.protocol == "centrifuge" && (o.scenario == "soak" || o.via != "api"):
		return errors.New("-protocol centrifuge: only idle, fanout, peruser -via api and resume")
	}
	longest := maxDuration
	if o.scenario == "soak" {
		longest = maxSoak
	}
	if o.via != "api" && o.via != "ingress" {
		return fmt.Errorf("-via %q: want api or ingress", o.via)
	}
	switch {
	case o.clients < 1 || o.clients > maxClients:
		return fmt.Errorf("-clients must be 1…%d", maxClients)
	case o.duration <= 0 || o.duration > longest:
		return fmt.Errorf("-duration must be above 0 and at most %v", longest)
	case o.rate <= 0 || o.rate > maxRate:
		return fmt.Errorf("-rate must be above 0 and at most %d", maxRate)
	case o.missed < 1 || o.missed > maxMissed:
		return fmt.Errorf("-missed must be 1…%d", maxMissed)
	case o.repeat < 1 || o.repeat > maxRepeat:
		return fmt.Errorf("-repeat must be 1…%d", maxRepeat)
	case o.perSource < 1 || o.dialers < 1:
		return errors.New("-per-source and -dial-concurrency must be positive")
	case o.salt < 0 || o.salt > 999:
		return errors.New("-salt must be 0…999")
	case o.settle < 0 || o.drain < 0 || o.settle > maxDuration || o.drain > maxDuration:
		return fmt.Errorf("-settle and -drain must be 0…%v", maxDuration)
	case o.stormEvery <= 0 || o.sampleEvery <= 0 || o.warmup < 0:
		return errors.New("-storm-every and -sample-every must be positive, -warmup not negative")
	case o.stormFraction < 0 || o.stormFraction > 1:
		return errors.New("-storm-fraction must be 0…1")
	case o.scenario != "idle" && o.scenario != "resume" && calls(o.rate, o.duration) < 1:
		return errors.New("-rate × -duration makes no publication")
	case o.scenario == "peruser" && o.via == "ingress" && calls(o.rate, o.duration) > maxWebhooks:
		return fmt.Errorf("-rate × -duration through the ingress is at most %d webhooks", maxWebhooks)
	case o.jwtSecret == "":
		return errors.New("-jwt-secret (or HERALD_JWT_SECRET) is required to mint client tokens")
	}
	needsAPI := o.scenario == "fanout" || o.scenario == "resume" || (o.scenario == "peruser" && o.via == "api")
	if needsAPI && o.apiKey == "" {
		return errors.New("-api-key (or HERALD_API_KEY) is required for this scenario")
	}
	if (o.scenario == "soak" || o.scenario == "peruser" && o.via == "ingress") && o.providerSecret == "" {
		return errors.New("-provider-secret (or HERALD_BENCH_PROVIDER_SECRET) is required with -via ingress and for soak")
	}
	return o.pickSources(sources, ip)
}

// pickSources parses -sources, or picks enough consecutive 127.0.0.x
// addresses at random, so that back-to-back runs rarely reuse the ports
// the previous one left in TIME_WAIT.
func (o *options) pickSources(list string, target net.IP) error {
	if list != "" {
		for _, s := range strings.Split(list, ",") {
			ip := net.ParseIP(strings.TrimSpace(s))
			if ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("-sources: %q is not a loopback address", s)
			}
			o.sources = append(o.sources, ip)
		}
		return nil
	}
	if target.To4() == nil {
		// IPv6 has one loopback address.
		o.sources = []net.IP{target}
		o.perSource = o.clients
		return nil
	}
	n := (o.clients + o.perSource - 1) / o.perSource
	if n > 200 {
		return errors.New("-per-source too small for -clients")
	}
	first := 2 + rand.IntN(253-n)
	for i := range n {
		o.sources = append(o.sources, net.IPv4(127, 0, 0, byte(first+i)))
	}
	return nil
}
