package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
)

// Result is the JSON document a run prints.
type Result struct {
	Scenario     string  `json:"scenario"`
	Label        string  `json:"label,omitempty"`
	URL          string  `json:"url"`
	Via          string  `json:"via,omitempty"`
	Clients      int     `json:"clients"`
	Connected    int     `json:"connected"`
	Sources      int     `json:"source_addresses"`
	Rate         float64 `json:"rate,omitempty"`
	DurationS    float64 `json:"duration_s,omitempty"`
	PayloadBytes int     `json:"payload_bytes,omitempty"`

	Publications *Publications `json:"publications,omitempty"`
	Deliveries   *Deliveries   `json:"deliveries,omitempty"`
	// Latency runs from the time a publication was scheduled (its publish
	// call started then, open loop) to its receipt by a client.
	Latency     *Latency `json:"latency_ms,omitempty"`
	PublishCall *Latency `json:"publish_call_ms,omitempty"`
	Resume      *Resume  `json:"resume,omitempty"`
	Soak        *Soak    `json:"soak,omitempty"`

	Server  *Proc `json:"server,omitempty"`
	Redis   *Proc `json:"redis,omitempty"`
	Harness *Proc `json:"harness,omitempty"`

	Errors       Errors   `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	Webhooks     []string `json:"webhook_samples,omitempty"`
	Skipped      []string `json:"webhook_samples_skipped,omitempty"`
}

// Publications counts publish calls (API publishes or webhooks).
type Publications struct {
	Attempted int64 `json:"attempted"`
	OK        int64 `json:"ok"`
	Failed    int64 `json:"failed"`
}

// Deliveries compares what clients received with what the successful
// publications owed them.
type Deliveries struct {
	Expected   int64 `json:"expected"`
	Received   int64 `json:"received"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	Gaps       int64 `json:"gaps"`
	Reordered  int64 `json:"out_of_order"`
	Misrouted  int64 `json:"misrouted"`
	LossFrames int64 `json:"loss_announcements"`
	Untimed    int64 `json:"untimed"`
}

// faults adds up what fails a run: deliveries lost, duplicated, skipped,
// out of order, or another client's.
func (d *Deliveries) faults() int64 {
	return d.Lost + d.Duplicates + d.Gaps + d.Reordered + d.Misrouted
}

// Resume is the resume scenario's outcome.
type Resume struct {
	Missed   int `json:"missed"`
	Repeats  int `json:"repeats"`
	Complete int `json:"complete"`
	// Subscribed and All run from the subscribe frame's send to the
	// subscribed answer and to the last missed publication's receipt.
	Subscribed Latency `json:"subscribed_ms"`
	All        Latency `json:"all_received_ms"`
}

// Proc is what /proc said of a process over the measured window.
type Proc struct {
	PID             int     `json:"pid"`
	RSSBeforeKiB    int64   `json:"rss_before_kib"`
	RSSAfterKiB     int64   `json:"rss_after_kib"`
	RSSPerClientKiB float64 `json:"rss_per_client_kib,omitempty"`
	WindowS         float64 `json:"window_s"`
	CPUMs           float64 `json:"cpu_ms"`
	CPUCores        float64 `json:"cpu_cores"`
	// Per1000 is CPU per 1,000 deliveries; PerPublication per publish call
	// (a webhook, with -via ingress); PerResume per resumed subscription.
	Per1000        float64 `json:"cpu_ms_per_1000_deliveries,omitempty"`
	PerPublication float64 `json:"cpu_ms_per_publication,omitempty"`
	PerResume      float64 `json:"cpu_ms_per_resume,omitempty"`
}

// Errors counts what went wrong, by stage.
type Errors struct {
	Dial      int64 `json:"dial"`
	Subscribe int64 `json:"subscribe"`
	Publish   int64 `json:"publish"`
	Read      int64 `json:"read"`
	Resume    int64 `json:"resume"`
	Total     int64 `json:"total"`
}

// bench is one run in progress.
type bench struct {
	o     *options
	r     *Result
	log   io.Writer
	d     *dialer
	clock time.Time
	t     tally

	mu      sync.Mutex
	samples []string
}

func runScenario(ctx context.Context, o *options, log io.Writer) (*Result, error) {
	b := &bench{
		o:     o,
		log:   log,
		d:     newDialer(o.wsURL, o.sources, o.perSource, o.protocol == "centrifuge"),
		clock: time.Now(),
		r: &Result{
			Scenario: o.scenario, Label: o.label, URL: o.url, Clients: o.clients,
			Sources: len(o.sources),
		},
	}
	var err error
	switch o.scenario {
	case "idle":
		err = b.idle(ctx)
	case "fanout":
		err = b.fanout(ctx)
	case "peruser":
		err = b.peruser(ctx)
	case "resume":
		err = b.resume(ctx)
	case "soak":
		err = b.soak(ctx)
	}
	e := &b.r.Errors
	e.Read = b.t.readErrors.Load()
	e.Total = e.Dial + e.Subscribe + e.Publish + e.Read + e.Resume
	b.r.ErrorSamples = b.samples
	if err == nil && e.Total > 0 {
		err = fmt.Errorf("%d errors", e.Total)
	}
	return b.r, err
}

func (b *bench) errorSample(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.samples) < 10 {
		b.samples = append(b.samples, err.Error())
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "herald-bench: "+format+"\n", args...)
}

func (b *bench) token(sub, merchant string) (string, error) {
	ttl := b.o.duration + b.o.settle + b.o.drain + time.Hour
	return auth.Mint([]byte(b.o.jwtSecret), auth.NewClaims(sub, merchant, nil, ttl, time.Now()))
}

// user is the i-th client's user id: digits, so that it fits a provider
// payload wherever the sample had a numeric or a string id.
func user(i int) string { return strconv.Itoa(900_000_000 + i) }

// connectAll opens n clients, the i-th as sub(i) subscribed to
// channel(i), dial-concurrency at a time. Failed clients are nil.
func (b *bench) connectAll(ctx context.Context, n int, sub func(int) string, merchant string, channel func(int) string) []*client {
	clients := make([]*client, n)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(b.o.dialers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				tok, err := b.token(sub(i), merchant)
				if err != nil {
					b.fail(&b.r.Errors.Dial, err)
					continue
				}
				c, err := connect(ctx, b.d, i, tok, channel(i))
				switch {
				case err == nil:
					clients[i] = c
				case strings.HasPrefix(err.Error(), "dial"):
					b.fail(&b.r.Errors.Dial, fmt.Errorf("client %d: %w", i, err))
				default:
					b.fail(&b.r.Errors.Subscribe, fmt.Errorf("client %d: %w", i, err))
				}
				if d := done.Add(1); d%2000 == 0 {
					b.logf("%d/%d clients connected and subscribed (%v)", d, n, time.Since(start).Round(time.Millisecond))
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range clients {
		if c != nil {
			b.r.Connected++
		}
	}
	b.logf("%d/%d clients connected and subscribed in %v", b.r.Connected, n, time.Since(start).Round(time.Millisecond))
	return clients
}

func (b *bench) fail(counter *int64, err error) {
	atomic.AddInt64(counter, 1)
	b.errorSample(err)
}

// readAll starts every client's read loop; the returned function stops
// them by closing the connections.
func (b *bench) readAll(clients []*client, times sendTimes) func() {
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for _, c := range clients {
		if c != nil {
			wg.Add(1)
			go c.readLoop(&stopped, b.clock, times, &b.t, wg.Done)
		}
	}
	return func() {
		stopped.Store(true)
		closeAll(clients)
		wg.Wait()
	}
}

func closeAll(clients []*client) {
	for _, c := range clients {
		if c != nil {
			c.conn.CloseNow()
		}
	}
}

// window measures the server, redis-server and the harness itself
// between its start and end.
type window struct {
	server, redis, self procSample
}

func (b *bench) sample() (window, error) {
	var w window
	var err error
	if w.server, err = readProc(b.o.pid); err != nil {
		return w, fmt.Errorf("reading the server's /proc: %w", err)
	}
	if w.redis, err = readProc(b.o.redisPID); err != nil {
		return w, fmt.Errorf("reading redis-server's /proc: %w", err)
	}
	w.self, err = readProc(os.Getpid())
	return w, err
}

// report fills the Proc figures from two samples; deliveries,
// publications and resumes divide the CPU time when not zero.
func (b *bench) report(before, after window, clients int, deliveries, publications, resumes int64) {
	b.r.Server = procReport(b.o.pid, before.server, after.server, clients, deliveries, publications, resumes)
	b.r.Redis = procReport(b.o.redisPID, before.redis, after.redis, 0, deliveries, publications, resumes)
	b.r.Harness = procReport(os.Getpid(), before.self, after.self, 0, 0, 0, 0)
}

func procReport(pid int, before, after procSample, clients int, deliveries, publications, resumes int64) *Proc {
	if !before.valid || !after.valid {
		return nil
	}
	p := &Proc{
		PID:          pid,
		RSSBeforeKiB: before.rss >> 10,
		RSSAfterKiB:  after.rss >> 10,
		WindowS:      round3(after.at.Sub(before.at).Seconds()),
		CPUMs:        round3(float64(after.cpu-before.cpu) / float64(time.Millisecond)),
	}
	if p.WindowS > 0 {
		p.CPUCores = round3(p.CPUMs / 1000 / p.WindowS)
	}
	if clients > 0 {
		p.RSSPerClientKiB = round3(float64(after.rss-before.rss) / 1024 / float64(clients))
	}
	per := func(n int64, unit float64) float64 {
		if n == 0 {
			return 0
		}
		return round3(p.CPUMs / float64(n) * unit)
	}
	p.Per1000 = per(deliveries, 1000)
	p.PerPublication = per(publications, 1)
	p.PerResume = per(resumes, 1)
	return p
}

// idle connects and subscribes every client, each to its own user
// channel, waits for the server to settle and reports its memory.
func (b *bench) idle(ctx context.Context) error {
	before, err := b.sample()
	if err != nil {
		return err
	}
	clients := b.connectAll(ctx, b.o.clients, user, "", func(i int) string { return "user:" + user(i) })
	stop := b.readAll(clients, nil)
	defer stop()
	select {
	case <-time.After(b.o.settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := b.sample()
	if err != nil {
		return err
	}
	b.report(before, after, b.r.Connected, 0, 0, 0)
	return nil
}

// fanout subscribes every client to one channel and publishes to it
// through the server API.
func (b *bench) fanout(ctx context.Context) error {
	const channel = "merchant:" + benchMerchant
	clients := b.connectAll(ctx, b.o.clients, user, benchMerchant, func(int) string { return channel })
	stop := b.readAll(clients, stampTimes{})
	defer stop()
	pub := apiPublisher(b.o.url, b.o.apiKey, b.o.size, func(int) string { return channel })
	b.r.PayloadBytes = b.o.size
	return b.drive(ctx, pub, func(s *pubStats) int64 { return s.okFor(channel) * int64(b.r.Connected) })
}

// peruser subscribes client i to user:<i> and publishes to the users in
// turn, through the server API or as provider webhooks.
func (b *bench) peruser(ctx context.Context) error {
	b.r.Via = b.o.via
	users := make([]string, b.o.clients)
	for i := range users {
		users[i] = user(i)
	}
	var pub publisher
	var times sendTimes = stampTimes{}
	if b.o.via == "api" {
		b.r.PayloadBytes = b.o.size
		pub = apiPublisher(b.o.url, b.o.apiKey, b.o.size, func(i int) string { return "user:" + users[i%len(users)] })
	} else {
		samples, skipped, err := loadSamples(b.o.testdata, b.o.providers)
		b.r.Skipped = skipped
		if err != nil {
			return err
		}
		n := calls(b.o.rate, b.o.duration)
		hooks, skipped, err := buildWebhooks(samples, users, n, b.o.salt)
		b.r.Skipped = append(b.r.Skipped, skipped...)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, w := range hooks {
			if s := w.provider.Slug; !seen[s] {
				seen[s] = true
				b.r.Webhooks = append(b.r.Webhooks, s)
			}
		}
		et := &eventTimes{m: make(map[string]int64, n)}
		times = et
		pub = ingressPublisher(b.o.url, b.o.providerSecret, hooks, et)
	}
	clients := b.connectAll(ctx, b.o.clients, func(i int) string { return users[i] }, "", func(i int) string { return "user:" + users[i] })
	stop := b.readAll(clients, times)
	defer stop()
	return b.drive(ctx, pub, func(s *pubStats) int64 {
		var n int64
		for i, c := range clients {
			if c != nil {
				n += s.okFor("user:" + users[i])
			}
		}
		return n
	})
}

// drive publishes open loop, waits for the deliveries owed (expected,
// computed once every call answered) or the drain timeout, and reports.
func (b *bench) drive(ctx context.Context, pub publisher, expected func(*pubStats) int64) error {
	b.r.Rate, b.r.DurationS = b.o.rate, b.o.duration.Seconds()
	before, err := b.sample()
	if err != nil {
		return err
	}
	var s pubStats
	b.logf("publishing %g/s for %v", b.o.rate, b.o.duration)
	openLoop(ctx, b.clock, b.o.rate, b.o.duration, pub, &s)
	want := expected(&s)
	deadline := time.Now().Add(b.o.drain)
	for b.t.received.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	after, err := b.sample()
	if err != nil {
		return err
	}
	return b.account(&s, want, before, after)
}

// account reports the publications, the deliveries owed (want) and made,
// the latencies and the server's costs over the window, and fails when a
// delivery was lost, duplicated or skipped.
func (b *bench) account(s *pubStats, want int64, before, after window) error {
	got := b.t.received.Load()
	b.r.Publications = &Publications{Attempted: s.attempted.Load(), OK: s.ok.Load(), Failed: s.failed.Load()}
	b.r.Deliveries = &Deliveries{
		Expected: want, Received: got, Lost: max(want-got, 0),
		Duplicates: b.t.duplicates.Load(), Gaps: b.t.gaps.Load(),
		Reordered: b.t.reordered.Load(), Misrouted: b.t.misrouted.Load(),
		LossFrames: b.t.lossFrames.Load(), Untimed: b.t.unknown.Load(),
	}
	lat, call := b.t.latency.summary(), s.call.summary()
	b.r.Latency, b.r.PublishCall = &lat, &call
	b.r.Errors.Publish = s.failed.Load()
	for _, e := range s.errSamples {
		b.errorSample(errors.New(e))
	}
	b.report(before, after, 0, got, s.ok.Load(), 0)
	if d := b.r.Deliveries; d.faults() > 0 {
		return fmt.Errorf("deliveries: %d lost, %d duplicated, %d gaps, %d out of order, %d misrouted", d.Lost, d.Duplicates, d.Gaps, d.Reordered, d.Misrouted)
	}
	return nil
}

// resume has one client miss -missed publications of its user channel,
// then reconnect and subscribe with since, -repeat times, timing how
// long the missed publications take to arrive.
func (b *bench) resume(ctx context.Context) error {
	b.r.PayloadBytes = b.o.size
	sub := fmt.Sprintf("resume-%d", b.o.salt)
	channel := "user:" + sub
	tok, err := b.token(sub, "")
	if err != nil {
		return err
	}
	c, err := connect(ctx, b.d, 0, tok, channel)
	if err != nil {
		b.fail(&b.r.Errors.Subscribe, err)
		return err
	}
	pos := position{Offset: c.last, Epoch: c.epoch}
	c.conn.CloseNow()
	b.r.Connected = 1
	pub := apiPublisher(b.o.url, b.o.apiKey, b.o.size, func(int) string { return channel })

	var subscribed, all histogram
	res := &Resume{Missed: b.o.missed, Repeats: b.o.repeat}
	b.r.Resume = res
	var cpu window
	var first window
	for rep := range b.o.repeat {
		if err := publishN(ctx, pub, b.o.missed); err != nil {
			b.fail(&b.r.Errors.Publish, err)
			return err
		}
		before, err := b.sample()
		if err != nil {
			return err
		}
		if rep == 0 {
			first = before
		}
		n, err := b.resumeOnce(ctx, tok, channel, pos, &subscribed, &all)
		after, serr := b.sample()
		if serr != nil {
			return serr
		}
		cpu.server.cpu += after.server.cpu - before.server.cpu
		cpu.redis.cpu += after.redis.cpu - before.redis.cpu
		cpu.self.cpu += after.self.cpu - before.self.cpu
		if err != nil {
			b.fail(&b.r.Errors.Resume, err)
			continue
		}
		res.Complete++
		pos.Offset += uint64(n)
	}
	res.Subscribed, res.All = subscribed.summary(), all.summary()
	// CPU is the sum over the resumes alone, not the publishing between.
	end := first
	end.server.cpu += cpu.server.cpu
	end.redis.cpu += cpu.redis.cpu
	end.self.cpu += cpu.self.cpu
	last, err := b.sample()
	if err != nil {
		return err
	}
	end.server.rss, end.redis.rss, end.self.rss = last.server.rss, last.redis.rss, last.self.rss
	end.server.at, end.redis.at, end.self.at = last.server.at, last.redis.at, last.self.at
	b.report(first, end, 0, 0, 0, int64(res.Complete))
	return nil
}

// publishN makes n publish calls, a few at a time, all of which must
// succeed.
func publishN(ctx context.Context, pub publisher, n int) error {
	var next atomic.Int64
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if _, err := pub(ctx, i, 0); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// resumeOnce reconnects, subscribes with since pos, and reads until every
// publication after pos up to the one the subscribed answer names has
// arrived, in order. It returns how many arrived.
func (b *bench) resumeOnce(ctx context.Context, tok, channel string, pos position, subscribed, all *histogram) (int, error) {
	if b.d.centrifuge {
		return b.cfResumeOnce(ctx, tok, channel, pos, subscribed, all)
	}
	conn, err := b.d.dial(ctx, 0, tok)
	if err != nil {
		return 0, err
	}
	defer conn.CloseNow()
	if _, err := readControl(ctx, conn, "connected"); err != nil {
		return 0, err
	}
	c := &client{conn: conn, channel: channel}
	start := time.Now()
	if err := c.subscribeAsync(ctx, &pos); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var top uint64
	want := pos.Offset + 1
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return int(want - pos.Offset - 1), fmt.Errorf("resume read after %d: %w", want-pos.Offset-1, err)
		}
		if top == 0 {
			f, err := parseControl(data)
			if err != nil || f.Type != "subscribed" || !f.Recovered {
				return 0, fmt.Errorf("resume answered %.200s", data)
			}
			subscribed.record(time.Since(start))
			top = f.Offset
			if top < want {
				all.record(time.Since(start))
				return 0, nil
			}
			continue
		}
		off, ok := intAfter(data, `"offset":`)
		if !ok || uint64(off) != want {
			return int(want - pos.Offset - 1), fmt.Errorf("resume: got offset %d, want %d", off, want)
		}
		if want == top {
			all.record(time.Since(start))
			return int(top - pos.Offset), nil
		}
		want++
	}
}

// subscribeAsync sends a subscribe frame without waiting for the answer.
func (c *client) subscribeAsync(ctx context.Context, since *position) error {
	f := `{"id":1,"type":"subscribe","channel":` + strconv.Quote(c.channel)
	if since != nil {
		f += `,"since":{"offset":` + strconv.FormatUint(since.Offset, 10) + `,"epoch":` + strconv.Quote(since.Epoch) + `}`
	}
	return c.conn.Write(ctx, websocket.MessageText, []byte(f+"}"))
}
