package redis_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"herald/channels"
	"herald/internal/heraldtest"
	"herald/internal/redistest"
	"herald/internal/server"
)

// backend is a Redis deployment the multi-node tests run on.
type backend struct {
	single  *redistest.Server
	cluster *redistest.Cluster
}

func (b backend) config() server.Config {
	cfg := heraldtest.Config()
	if b.single != nil {
		cfg.RedisURL = b.single.URL()
	} else {
		cfg.RedisCluster = b.cluster.Addrs()
	}
	return cfg
}

func (b backend) servers() []*redistest.Server {
	if b.single != nil {
		return []*redistest.Server{b.single}
	}
	return b.cluster.Nodes
}

// each runs test on a single Redis (with AOF) and on a 3-master cluster.
func each(t *testing.T, test func(t *testing.T, b backend)) {
	t.Run("Redis", func(t *testing.T) { test(t, backend{single: redistest.Start(t, redistest.Options{AOF: true})}) })
	t.Run("Cluster", func(t *testing.T) { test(t, backend{cluster: redistest.StartCluster(t, 3)}) })
}

func nodes(t *testing.T, b backend, n int) []*heraldtest.Node {
	out := make([]*heraldtest.Node, n)
	for i := range out {
		cfg := b.config()
		cfg.Node = fmt.Sprintf("node-%d", i)
		out[i] = heraldtest.Start(t, cfg)
	}
	return out
}

func publish(t *testing.T, n *heraldtest.Node, ch string, i int) channels.PublishResult {
	t.Helper()
	r, err := n.Server.Broker().Publish(context.Background(), ch, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), channels.PublishOptions{})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return r
}

func follow(t *testing.T, n *heraldtest.Node, ch string) *heraldtest.Follower {
	t.Helper()
	sub := strings.SplitN(ch, ":", 2)[1]
	f := heraldtest.NewFollower(ch, heraldtest.Token(t, sub, sub))
	if err := f.Connect(ctx(t), n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Drop)
	return f
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func wait(t *testing.T, f *heraldtest.Follower, offset uint64) {
	t.Helper()
	if err := f.WaitFor(offset, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestNodes_IngestOnOneNodeDeliversOnOthers(t *testing.T) {
	each(t, func(t *testing.T, b backend) {
		ns := nodes(t, b, 3)
		onB := follow(t, ns[1], "merchant:acme")
		onC := follow(t, ns[2], "merchant:acme")
		user := follow(t, ns[2], "user:84624")
		withdrawal := heraldtest.Fixtures(t, "kriptomat")["withdrawal"]
		if status, res := ns[0].Ingress(t, "kriptomat", withdrawal); status != 200 || res["status"] != "published" {
			t.Fatalf("%d %v", status, res)
		}
		// A retry landing on another node is still a duplicate.
		if status, res := ns[2].Ingress(t, "kriptomat", withdrawal); status != 200 || res["status"] != "duplicate" {
			t.Fatalf("retry on another node: %d %v", status, res)
		}
		ns[1].Publish(t, "merchant:acme", map[string]string{"via": "api on B"})
		for _, f := range []*heraldtest.Follower{onB, onC} {
			wait(t, f, 2)
		}
		wait(t, user, 1)
		if s := onB.Stats(); s.Delivered != 2 || len(s.Gaps) != 0 {
			t.Fatalf("%+v", s)
		}
		// Dead letters are shared too.
		ns[0].Ingress(t, "kriptomat", []byte(`{"id":1,"type":"AIRDROP","state":"SUCCESS"}`))
		if _, res := ns[1].Get(t, "/v1/deadletters"); len(res["deadletters"].([]any)) != 1 {
			t.Fatalf("dead letters seen from another node: %v", res)
		}
	})
}

// TestNodes_StatusesRankAsOnTheEmbeddedBroker sends a status, a late
// lower one, and retries of both; then a final status of equal rank, a
// retry of the first (which must not bring it back) and another late one.
// It finds the same answers and the same bytes in the logs as on the
// embedded broker: on a single Redis each event goes to all its channels,
// ranked, in one script (append); on a cluster in one script per channel,
// each ranking in the channel's own copy of the status record.
func TestNodes_StatusesRankAsOnTheEmbeddedBroker(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	success := []byte(`{"user_id":5,"id":77,"type":"FIAT_DEPOSIT","amount":10.00,"state":"SUCCESS"}`)
	pending := bytes.Replace(success, []byte("SUCCESS"), []byte("PENDING"), 1)
	failed := bytes.Replace(success, []byte("SUCCESS"), []byte("ERROR"), 1)
	processing := bytes.Replace(success, []byte("SUCCESS"), []byte("PROCESSING"), 1)
	steps := [][]byte{success, pending, pending, success, failed, success, processing}
	type outcome struct {
		answers []string
		logs    map[string][]string
	}
	run := func(t *testing.T, cfg server.Config) outcome {
		cfg.Now = func() time.Time { return now }
		n := heraldtest.Start(t, cfg)
		var o outcome
		for _, body := range steps {
			code, res := n.Ingress(t, "kriptomat", body)
			o.answers = append(o.answers, fmt.Sprintf("%d %v %v", code, res["status"], res["publications"]))
		}
		o.logs = map[string][]string{}
		for _, ch := range []string{"user:5", "merchant:" + heraldtest.Merchant} {
			h, err := n.Server.Broker().History(context.Background(), ch, channels.HistoryOptions{Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range h.Publications {
				o.logs[ch] = append(o.logs[ch], string(p.Data))
			}
		}
		m := n.Metrics(t)
		for _, ns := range []string{"user", "merchant"} {
			if pubs, dups := m.Get("herald_publications_total", "namespace", ns), m.Get("herald_dedup_hits_total", "namespace", ns); pubs != 4 || dups != 3 {
				t.Errorf("%s: %v publications and %v dedup hits counted, want 4 and 3", ns, pubs, dups)
			}
		}
		if cfg.RedisURL != "" {
			if got := m.Get("herald_broker_operation_duration_seconds_count", "operation", "append"); got != float64(len(steps)) {
				t.Errorf("%v appends counted, want %d", got, len(steps))
			}
		}
		return o
	}
	want := run(t, heraldtest.Config())
	if l := want.logs["user:5"]; len(l) != 4 || strings.Contains(l[0], "stale") || !strings.Contains(l[1], `"stale":true,"current_status":"succeeded"`) ||
		strings.Contains(l[2], "stale") || !strings.Contains(l[3], `"stale":true,"current_status":"failed"`) {
		t.Fatalf("embedded broker: %q", l)
	}
	each(t, func(t *testing.T, b backend) {
		got := run(t, b.config())
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("\n got %v\nwant %v", got, want)
		}
	})
}

// Two statuses of one transaction reaching two nodes at once: in every
// channel a lower status that follows a higher one is marked stale,
// whichever node appended first, on a single Redis and on a Cluster.
func TestNodes_SimultaneousStatusesAreMarkedInEveryChannel(t *testing.T) {
	each(t, func(t *testing.T, b backend) {
		ns := nodes(t, b, 2)
		const n = 150
		for i := range n {
			success := fmt.Appendf(nil, `{"user_id":%d,"id":%d,"type":"FIAT_DEPOSIT","amount":10.00,"state":"SUCCESS"}`, 1000+i, i)
			pending := bytes.Replace(success, []byte("SUCCESS"), []byte("PENDING"), 1)
			var wg sync.WaitGroup
			for j, body := range [][]byte{pending, success} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if code, res := ns[j].Ingress(t, "kriptomat", body); code != 200 {
						t.Errorf("deposit %d: %d %v", i, code, res)
					}
				}()
			}
			wg.Wait()
		}
		unmarked := func(ch string) int {
			bad, succeeded := 0, map[string]bool{}
			for _, ev := range ns[0].Events(t, ch) {
				txn := strings.TrimSuffix(strings.TrimSuffix(ev.ID, ":SUCCESS"), ":PENDING")
				switch {
				case ev.Status == "succeeded":
					succeeded[txn] = true
				case succeeded[txn] && !ev.Stale:
					bad++
				}
			}
			return bad
		}
		bad := unmarked("merchant:" + heraldtest.Merchant)
		for i := range n {
			bad += unmarked(fmt.Sprintf("user:%d", 1000+i))
		}
		if bad > 0 {
			t.Errorf("%d pending statuses appended after their success without the stale mark", bad)
		}
	})
}

// TestNodes_KilledNodeClientsResumeOnSurvivor stops a node while a
// publisher keeps going through another; the first node's clients resume
// on a survivor and miss nothing.
func TestNodes_KilledNodeClientsResumeOnSurvivor(t *testing.T) {
	each(t, func(t *testing.T, b backend) {
		ns := nodes(t, b, 3)
		var followers []*heraldtest.Follower
		for i := 0; i < 6; i++ {
			followers = append(followers, follow(t, ns[0], fmt.Sprintf("user:%d", i)))
		}
		var published [6]atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				for c := range published {
					r, err := ns[1].Server.Broker().Publish(context.Background(), fmt.Sprintf("user:%d", c), json.RawMessage(`{}`), channels.PublishOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					published[c].Store(r.Offset)
				}
				time.Sleep(time.Millisecond)
			}
		}()
		time.Sleep(200 * time.Millisecond)
		ns[0].Stop()
		for _, f := range followers {
			<-f.Done()
		}
		time.Sleep(100 * time.Millisecond) // publications the clients miss while away
		for i, f := range followers {
			if err := f.Connect(ctx(t), ns[1+i%2]); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		close(stop)
		wg.Wait()
		for i, f := range followers {
			wait(t, f, published[i].Load())
			s := f.Stats()
			if len(s.Gaps) != 0 || s.Resumes != 1 || s.Recovered != 1 {
				t.Fatalf("follower %d: %+v", i, s)
			}
		}
	})
}

func TestNodes_ResumeHammerAcrossNodes(t *testing.T) {
	each(t, func(t *testing.T, b backend) {
		ns := nodes(t, b, 3)
		const ch, total = "merchant:acme", 3000
		var published atomic.Uint64
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 1; i <= total; i++ {
				r, err := ns[rand.IntN(3)].Server.Broker().Publish(context.Background(), ch, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), channels.PublishOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				published.Store(r.Offset)
			}
		}()
		var wg sync.WaitGroup
		var resumes atomic.Int64
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f := heraldtest.NewFollower(ch, heraldtest.Token(t, "x", "acme"))
				defer f.Drop()
				for hop := 0; ; hop++ {
					if err := f.Connect(context.Background(), ns[rand.IntN(3)]); err != nil {
						t.Error(err)
						return
					}
					time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
					select {
					case <-done:
						if err := f.WaitFor(total, 20*time.Second); err != nil {
							t.Error(err)
						}
						if s := f.Stats(); len(s.Gaps) != 0 {
							t.Errorf("gaps announced: %v", s.Gaps)
						}
						resumes.Add(int64(f.Stats().Resumes))
						return
					default:
					}
					f.Drop()
					if err := f.Err(); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		t.Logf("%d resumes across 3 nodes while %d publications were appended", resumes.Load(), published.Load())
	})
}

// TestNodes_InterruptedFeedBackfills kills the nodes' pub/sub connections
// behind their back while publications continue: the node must notice,
// re-read the log, and deliver what its feed missed, with no gap.
func TestNodes_InterruptedFeedBackfills(t *testing.T) {
	each(t, func(t *testing.T, b backend) {
		ns := nodes(t, b, 2)
		var fs []*heraldtest.Follower
		for i := 0; i < 4; i++ {
			fs = append(fs, follow(t, ns[0], fmt.Sprintf("user:%d", i)))
		}
		stop := make(chan struct{})
		var last [4]atomic.Uint64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := range last {
					r, err := ns[1].Server.Broker().Publish(context.Background(), fmt.Sprintf("user:%d", i), json.RawMessage(`{}`), channels.PublishOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					last[i].Store(r.Offset)
				}
			}
		}()
		for round := 0; round < 3; round++ {
			time.Sleep(150 * time.Millisecond)
			for _, s := range b.servers() {
				if _, err := s.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(150 * time.Millisecond)
		close(stop)
		wg.Wait()
		for i, f := range fs {
			wait(t, f, last[i].Load())
			if s := f.Stats(); len(s.Gaps) != 0 || s.Resumes != 0 {
				t.Fatalf("follower %d: %+v", i, s)
			}
		}
	})
}

func TestRedis_FlushChangesTheEpoch(t *testing.T) {
	each(t, func(t *testing.T, b backend) {
		ns := nodes(t, b, 2)
		live := follow(t, ns[0], "user:1")
		for i := 1; i <= 3; i++ {
			publish(t, ns[1], "user:1", i)
		}
		wait(t, live, 3)
		_, oldEpoch := live.Position()
		for _, s := range b.servers() {
			if _, err := s.Do("FLUSHALL"); err != nil {
				t.Fatal(err)
			}
		}
		r := publish(t, ns[1], "user:1", 4)
		if r.Offset != 1 || r.Epoch == oldEpoch {
			t.Fatalf("after FLUSHALL: %+v (old epoch %s)", r, oldEpoch)
		}
		// The live client is told, then continues in the new epoch.
		if err := live.WaitForPosition(1, r.Epoch, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		if s := live.Stats(); len(s.Gaps) != 1 || s.Gaps[0] != channels.ReasonEpochMismatch {
			t.Fatalf("live follower: %+v", s)
		}
		// A client resuming from the old epoch is told too.
		c := heraldtest.Connect(t, ns[1], heraldtest.Token(t, "1", ""))
		c.Send(map[string]any{"type": "subscribe", "channel": "user:1", "since": map[string]any{"offset": 3, "epoch": oldEpoch}})
		f := c.Expect("subscribed")
		if f["recovered"] != false || f.String("reason") != channels.ReasonEpochMismatch || f.String("epoch") != r.Epoch || f.Offset() != 1 {
			t.Fatalf("resume across a flush: %v", f)
		}
	})
}

func TestRedis_RestartWithAOFLosesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	b := backend{single: srv}
	ns := nodes(t, b, 2)
	live := follow(t, ns[0], "user:7")
	away := follow(t, ns[0], "user:7")
	for i := 1; i <= 5; i++ {
		publish(t, ns[1], "user:7", i)
	}
	wait(t, live, 5)
	wait(t, away, 5)
	away.Drop()

	srv.Restart()
	// Posting right after the restart may meet stale pooled connections:
	// retry as a provider would; what is acknowledged must be delivered.
	acked := 5
	for i := 6; i <= 10; i++ {
		for attempt := 0; ; attempt++ {
			status, _ := ns[1].Post(t, "/v1/publish", []byte(fmt.Sprintf(`{"channel":"user:7","data":{"n":%d},"idempotency_key":"k%d"}`, i, i)),
				http.Header{"Authorization": {"Bearer " + heraldtest.APIKey}})
			if status == 200 {
				acked++
				break
			}
			if status != 503 || attempt > 50 {
				t.Fatalf("publish after restart: %d", status)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	wait(t, live, uint64(acked))
	if err := away.Connect(ctx(t), ns[1]); err != nil {
		t.Fatal(err)
	}
	wait(t, away, uint64(acked))
	for _, f := range []*heraldtest.Follower{live, away} {
		if s := f.Stats(); len(s.Gaps) != 0 {
			t.Fatalf("gap after an AOF restart: %+v", s)
		}
	}
	if s := away.Stats(); s.Recovered != 1 {
		t.Fatalf("resume after the restart was not recovered: %+v", s)
	}
}

func TestRedis_DownMeans503AndUnavailableThenRecovers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	ns := nodes(t, backend{single: srv}, 1)
	n := ns[0]
	live := follow(t, n, "user:84624")
	fixtures := heraldtest.Fixtures(t, "kriptomat")
	if status, _ := n.Ingress(t, "kriptomat", fixtures["deposit"]); status != 200 {
		t.Fatalf("before: %d", status)
	}
	wait(t, live, 1)

	srv.Kill()
	if status, res := n.Ingress(t, "kriptomat", fixtures["withdrawal"]); status != http.StatusServiceUnavailable {
		t.Fatalf("ingress with Redis down: %d %v", status, res)
	}
	if status, _ := n.Get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("readyz with Redis down: %d", status)
	}
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "2", ""))
	c.Send(map[string]any{"type": "subscribe", "channel": "user:2"})
	if f := c.Expect("error"); f.String("code") != "unavailable" {
		t.Fatalf("subscribe with Redis down: %v", f)
	}

	srv.StartAgain()
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, _ := n.Ingress(t, "kriptomat", fixtures["withdrawal"])
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingress did not recover: %d", status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wait(t, live, 2)
	if s := live.Stats(); s.Delivered != 2 || len(s.Gaps) != 0 {
		t.Fatalf("%+v", s)
	}
	for time.Now().Before(deadline) {
		if status, _ := n.Get(t, "/readyz"); status == 200 {
			c.Send(map[string]any{"type": "subscribe", "channel": "user:2"})
			c.Expect("subscribed")
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("readyz did not recover")
}

// partitionable starts two nodes on one Redis, srv: a reaches it through
// a proxy that can cut it off, b directly. mod, if not nil, changes both
// configurations.
func partitionable(t *testing.T, opts redistest.Options, mod func(*server.Config)) (a, b *heraldtest.Node, proxy *redistest.Proxy, srv *redistest.Server) {
	srv = redistest.Start(t, opts)
	proxy = redistest.NewProxy(t, srv.Addr())
	cfgA, cfgB := heraldtest.Config(), heraldtest.Config()
	cfgA.RedisURL, cfgB.RedisURL = proxy.URL(), srv.URL()
	if mod != nil {
		mod(&cfgA)
		mod(&cfgB)
	}
	return heraldtest.Start(t, cfgA), heraldtest.Start(t, cfgB), proxy, srv
}

// TestNodes_PartitionedNodeBackfillsWhatItMissed cuts one node off Redis
// while another keeps publishing: its feed is down for the whole time, so
// everything published meanwhile can only reach its clients through the
// backfill when the partition heals.
func TestNodes_PartitionedNodeBackfillsWhatItMissed(t *testing.T) {
	a, b, proxy, _ := partitionable(t, redistest.Options{AOF: true}, nil)

	f := follow(t, a, "user:9")
	publish(t, b, "user:9", 1)
	wait(t, f, 1)

	proxy.Cut()
	for i := 2; i <= 101; i++ {
		publish(t, b, "user:9", i)
	}
	time.Sleep(500 * time.Millisecond)
	if last, _ := f.Position(); last != 1 {
		t.Fatalf("a partitioned node delivered %d", last)
	}
	if status, _ := a.Get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("readyz of a partitioned node: %d", status)
	}
	proxy.Restore()
	wait(t, f, 101)
	if s := f.Stats(); s.Delivered != 101 || len(s.Gaps) != 0 || s.Resumes != 0 {
		t.Fatalf("%+v", s)
	}
}

// TestNodes_PartitionLongerThanRetentionIsAnnounced: what the log trimmed
// while the node was cut off is announced as offset_expired, then delivery
// continues from what is retained.
func TestNodes_PartitionLongerThanRetentionIsAnnounced(t *testing.T) {
	a, b, proxy, _ := partitionable(t, redistest.Options{}, func(c *server.Config) { c.HistorySize = 10 })

	f := follow(t, a, "user:9")
	publish(t, b, "user:9", 1)
	wait(t, f, 1)
	proxy.Cut()
	for i := 2; i <= 50; i++ {
		publish(t, b, "user:9", i)
	}
	proxy.Restore()
	wait(t, f, 50)
	if s := f.Stats(); len(s.Gaps) != 1 || s.Gaps[0] != channels.ReasonOffsetExpired || s.Delivered != 11 {
		t.Fatalf("%+v", s)
	}
}

// TestRedis_PausedMeans503NotAHang: a Redis that accepts connections but
// answers nothing (SIGSTOP) turns into 503s within the client timeouts.
func TestRedis_PausedMeans503NotAHang(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	n := nodes(t, backend{single: srv}, 1)[0]
	f := follow(t, n, "user:84624")
	deposit := heraldtest.Fixtures(t, "kriptomat")["deposit"]
	srv.Pause()
	start := time.Now()
	status, _ := n.Ingress(t, "kriptomat", deposit)
	if took := time.Since(start); status != http.StatusServiceUnavailable || took > 6*time.Second {
		t.Fatalf("ingress against a paused Redis: %d after %v", status, took)
	}
	srv.Resume()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if status, _ := n.Ingress(t, "kriptomat", deposit); status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ingress did not recover after the pause")
		}
		time.Sleep(100 * time.Millisecond)
	}
	wait(t, f, 1)
	if s := f.Stats(); s.Delivered != 1 || len(s.Gaps) != 0 {
		t.Fatalf("%+v", s)
	}
}

// A Redis Cluster that wants a password is reached through one URL in
// HERALD_REDIS_CLUSTER: its seeds as addr parameters, the password in the
// URL. The bare address list is refused by such a cluster.
func TestCluster_WithAPasswordThroughAURL(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	for _, s := range c.Nodes {
		if _, err := s.Do("CONFIG", "SET", "requirepass", "cluster-s3cret"); err != nil {
			t.Fatal(err)
		}
	}
	addrs := c.Addrs()
	cfg := heraldtest.Config()
	cfg.RedisCluster = []string{"redis://:cluster-s3cret@" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]}
	n := heraldtest.Start(t, cfg)
	for i := 1; i <= 3; i++ {
		ch := fmt.Sprintf("user:%d", i) // channels in different slots
		if off := n.Publish(t, ch, map[string]int{"n": i}); off != 1 {
			t.Fatalf("%s: offset %d", ch, off)
		}
		if code, body := n.Get(t, "/v1/history?channel="+ch+"&limit=5"); code != http.StatusOK || len(body["publications"].([]any)) != 1 {
			t.Fatalf("%s history: %d %v", ch, code, body)
		}
	}
	if code, _ := n.Get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz %d", code)
	}

	cfg.RedisCluster = addrs
	bare := heraldtest.Start(t, cfg)
	status, _ := bare.Post(t, "/v1/publish", []byte(`{"channel":"user:1","data":{}}`), http.Header{"Authorization": {"Bearer " + heraldtest.APIKey}})
	if status != http.StatusInternalServerError && status != http.StatusServiceUnavailable {
		t.Fatalf("a publish without the password answered %d", status)
	}
}
