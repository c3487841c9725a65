package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Soak is the soak scenario's outcome: the server sampled over time, and
// what the reconnect storms did.
type Soak struct {
	StormEveryS   float64 `json:"storm_every_s"`
	StormFraction float64 `json:"storm_fraction"`
	Storms        int     `json:"storms"`
	Reconnects    int64   `json:"reconnects"`
	// Resumed counts resubscriptions answered recovered:true.
	Resumed int64 `json:"resumed"`
	// WarmupS is left out of Memory: the first samples, while the
	// server's buffers and the channels' histories fill.
	WarmupS  float64  `json:"warmup_s"`
	Memory   *Memory  `json:"memory,omitempty"`
	Timeline []Sample `json:"timeline"`
}

// Sample is the server at one moment of the soak.
type Sample struct {
	AtS          float64 `json:"t_s"`
	RSSKiB       int64   `json:"rss_kib"`
	HeapAllocKiB int64   `json:"heap_alloc_kib"`
	HeapInuseKiB int64   `json:"heap_inuse_kib"`
	Goroutines   int64   `json:"goroutines"`
	Connections  int64   `json:"connections"`
	CPUCores     float64 `json:"cpu_cores"`
	RedisRSSKiB  int64   `json:"redis_rss_kib,omitempty"`
	Published    int64   `json:"published"`
	Received     int64   `json:"received"`
}

// Memory says whether the server's memory stayed flat after the warmup:
// the first, last and largest figures, and the least-squares slope.
type Memory struct {
	Samples         int     `json:"samples"`
	RSSFirstKiB     int64   `json:"rss_first_kib"`
	RSSLastKiB      int64   `json:"rss_last_kib"`
	RSSMaxKiB       int64   `json:"rss_max_kib"`
	RSSSlopeKiBh    float64 `json:"rss_slope_kib_per_hour"`
	HeapFirstKiB    int64   `json:"heap_inuse_first_kib"`
	HeapLastKiB     int64   `json:"heap_inuse_last_kib"`
	HeapMaxKiB      int64   `json:"heap_inuse_max_kib"`
	HeapSlopeKiBh   float64 `json:"heap_inuse_slope_kib_per_hour"`
	GoroutinesFirst int64   `json:"goroutines_first"`
	GoroutinesLast  int64   `json:"goroutines_last"`
}

// soakClient is one client of the soak: it stays subscribed to its user
// channel for the whole run, reconnecting and resuming with since
// whenever its connection ends.
type soakClient struct {
	i       int
	token   string
	c       client // channel, epoch and last survive reconnections
	started bool   // subscribed once: resume from c's position from now on

	mu     sync.Mutex
	conn   *websocket.Conn
	kicked bool
}

// kick closes the client's connection, as a storm does; the client
// reconnects at once.
func (sc *soakClient) kick() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.conn != nil {
		sc.kicked = true
		sc.conn.CloseNow()
	}
}

// soak connects every client to its own user channel, posts provider
// webhooks at a steady rate for the whole duration, and every storm
// interval closes a fraction of the clients at once, which reconnect and
// resume. It samples the server's RSS, heap and goroutines throughout,
// and checks at the end that every client got each of its events once, in
// order.
func (b *bench) soak(ctx context.Context) error {
	o := b.o
	b.r.Via = "ingress"
	b.r.Rate, b.r.DurationS = o.rate, o.duration.Seconds()
	s := &Soak{StormEveryS: o.stormEvery.Seconds(), StormFraction: o.stormFraction, WarmupS: o.warmup.Seconds()}

	users := make([]string, o.clients)
	for i := range users {
		users[i] = user(i)
	}
	samples, skipped, err := loadSamples(o.testdata, o.providers)
	b.r.Skipped = skipped
	if err != nil {
		return err
	}
	// Check the samples once; the webhooks themselves are made as they
	// are posted, a run of hours would not fit in memory made up front.
	usable, skipped, err := usableSamples(samples, users, o.salt)
	b.r.Skipped = append(b.r.Skipped, skipped...)
	if err != nil {
		return err
	}
	for _, u := range usable {
		b.r.Webhooks = append(b.r.Webhooks, u.name)
	}
	times := &eventTimes{m: map[string]int64{}}
	hookOf := func(i int) (webhook, error) {
		return usable[i%len(usable)].variant(users[i%len(users)], i, o.salt)
	}
	pub := lazyIngressPublisher(o.url, o.providerSecret, hookOf, times)

	// Connect everyone first, as the other scenarios do.
	clients := make([]*soakClient, o.clients)
	for i := range clients {
		tok, err := b.token(users[i], "")
		if err != nil {
			return err
		}
		clients[i] = &soakClient{i: i, token: tok, c: client{channel: "user:" + users[i]}}
	}
	var stopped atomic.Bool
	var reconnects, resumed atomic.Int64
	var wg sync.WaitGroup
	ready := make(chan struct{}, o.clients)
	sem := make(chan struct{}, o.dialers)
	for _, sc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.soakLoop(ctx, sc, &stopped, sem, ready, times, &reconnects, &resumed)
		}()
	}
	start := time.Now()
	for range clients {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.r.Connected = o.clients
	b.logf("%d clients connected and subscribed in %v", o.clients, time.Since(start).Round(time.Millisecond))
	defer func() {
		stopped.Store(true)
		for _, sc := range clients {
			sc.kick()
		}
		wg.Wait()
	}()

	// Sample the server, and storm, while the webhooks flow.
	var ps pubStats
	runStart := time.Now()
	tick := time.NewTicker(o.sampleEvery)
	defer tick.Stop()
	storm := time.NewTicker(o.stormEvery)
	defer storm.Stop()
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		openLoop(ctx, b.clock, o.rate, o.duration, pub, &ps)
	}()
	prev, err := b.sample()
	if err != nil {
		return err
	}
	record := func() error {
		now, err := b.sample()
		if err != nil {
			return err
		}
		smp, err := b.soakSample(now, prev, runStart)
		if err != nil {
			return err
		}
		smp.Published, smp.Received = ps.ok.Load(), b.t.received.Load()
		s.Timeline = append(s.Timeline, smp)
		prev = now
		b.logf("t=%4.0fs rss=%d KiB heap=%d KiB goroutines=%d connections=%d cpu=%.2f published=%d received=%d reconnects=%d",
			smp.AtS, smp.RSSKiB, smp.HeapInuseKiB, smp.Goroutines, smp.Connections, smp.CPUCores, smp.Published, smp.Received, reconnects.Load())
		return nil
	}
	if err := record(); err != nil {
		return err
	}
	before := prev
loop:
	for {
		select {
		case <-pubDone:
			break loop
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := record(); err != nil {
				return err
			}
		case <-storm.C:
			s.Storms++
			n := int(math.Round(float64(len(clients)) * o.stormFraction))
			for _, k := range rand.Perm(len(clients))[:n] {
				clients[k].kick()
			}
			b.logf("storm %d: %d clients disconnected", s.Storms, n)
		}
	}

	want := int64(0)
	for _, sc := range clients {
		want += ps.okFor(sc.c.channel)
	}
	deadline := time.Now().Add(o.drain)
	for b.t.received.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if err := record(); err != nil {
		return err
	}
	err = b.account(&ps, want, before, prev)
	s.Reconnects, s.Resumed = reconnects.Load(), resumed.Load()
	s.Memory = memoryTrend(s.Timeline, o.warmup.Seconds())
	b.r.Soak = s
	return err
}

// soakLoop keeps one client connected and subscribed until stopped:
// after a storm, a server close or a failed dial it reconnects and
// resumes from the last offset it counted. ready is told once, at the
// first subscription.
func (b *bench) soakLoop(ctx context.Context, sc *soakClient, stopped *atomic.Bool, sem chan struct{},
	ready chan<- struct{}, times sendTimes, reconnects, resumed *atomic.Int64) {
	backoff := 100 * time.Millisecond
	for !stopped.Load() && ctx.Err() == nil {
		sem <- struct{}{}
		err := b.soakConnect(ctx, sc, resumed)
		<-sem
		if err != nil {
			if stopped.Load() {
				return
			}
			b.fail(&b.r.Errors.Subscribe, fmt.Errorf("client %d: %w", sc.i, err))
			time.Sleep(backoff + rand.N(backoff))
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if !sc.started {
			sc.started = true
			ready <- struct{}{}
		}
		sc.c.read(b.clock, times, &b.t)
		sc.mu.Lock()
		kicked := sc.kicked
		sc.kicked, sc.conn = false, nil
		sc.mu.Unlock()
		sc.c.conn.CloseNow()
		if stopped.Load() {
			return
		}
		reconnects.Add(1)
		if !kicked {
			b.t.readErrors.Add(1)
		}
	}
}

// soakConnect opens a connection for the client, resuming from its
// position from the second time on; the connection is the client's once
// it returns.
func (b *bench) soakConnect(ctx context.Context, sc *soakClient, resumed *atomic.Int64) error {
	var since *position
	if sc.started {
		since = &position{Offset: sc.c.last, Epoch: sc.c.epoch}
	}
	reply, err := sc.c.open(ctx, b.d, sc.i, sc.token, since)
	if err != nil {
		return err
	}
	switch {
	case since == nil:
	case reply.Recovered:
		resumed.Add(1)
	default:
		// The server says what was lost; the client goes on from there.
		b.t.lossFrames.Add(1)
	}
	sc.mu.Lock()
	sc.conn = sc.c.conn
	sc.mu.Unlock()
	return nil
}

// soakSample reads the server's Go runtime figures from /metrics and its
// memory and CPU from /proc.
func (b *bench) soakSample(now, prev window, runStart time.Time) (Sample, error) {
	s := Sample{AtS: round3(now.server.at.Sub(runStart).Seconds())}
	s.RSSKiB = now.server.rss >> 10
	if now.redis.valid {
		s.RedisRSSKiB = now.redis.rss >> 10
	}
	if dt := now.server.at.Sub(prev.server.at).Seconds(); dt > 0 {
		s.CPUCores = round3((now.server.cpu - prev.server.cpu).Seconds() / dt)
	}
	m, err := scrape(b.o.url + "/metrics")
	if err != nil {
		return s, err
	}
	s.HeapAllocKiB = int64(m["go_memstats_heap_alloc_bytes"]) >> 10
	s.HeapInuseKiB = int64(m["go_memstats_heap_inuse_bytes"]) >> 10
	s.Goroutines = int64(m["go_goroutines"])
	s.Connections = int64(m["herald_connections"])
	return s, nil
}

// scrape reads a Prometheus exposition with Prometheus's own parser and
// returns each metric's samples summed, by name.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			out[name] += m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
		}
	}
	return out, nil
}

// memoryTrend summarizes the samples after the warmup.
func memoryTrend(tl []Sample, warmup float64) *Memory {
	var after []Sample
	for _, s := range tl {
		if s.AtS >= warmup {
			after = append(after, s)
		}
	}
	if len(after) < 2 {
		return nil
	}
	first, last := after[0], after[len(after)-1]
	m := &Memory{
		Samples:     len(after),
		RSSFirstKiB: first.RSSKiB, RSSLastKiB: last.RSSKiB,
		HeapFirstKiB: first.HeapInuseKiB, HeapLastKiB: last.HeapInuseKiB,
		GoroutinesFirst: first.Goroutines, GoroutinesLast: last.Goroutines,
	}
	for _, s := range after {
		m.RSSMaxKiB = max(m.RSSMaxKiB, s.RSSKiB)
		m.HeapMaxKiB = max(m.HeapMaxKiB, s.HeapInuseKiB)
	}
	m.RSSSlopeKiBh = round3(slope(after, func(s Sample) float64 { return float64(s.RSSKiB) }) * 3600)
	m.HeapSlopeKiBh = round3(slope(after, func(s Sample) float64 { return float64(s.HeapInuseKiB) }) * 3600)
	return m
}

// slope is the least-squares slope of y over the samples' times, per second.
func slope(ss []Sample, y func(Sample) float64) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, s := range ss {
		x, v := s.AtS, y(s)
		n++
		sx += x
		sy += v
		sxx += x * x
		sxy += x * v
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
