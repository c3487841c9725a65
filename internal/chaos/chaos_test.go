package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"herald/internal/heraldtest"
	"herald/internal/redistest"
)

// scale sizes a run.
type scale struct {
	nodes, clients, slow, webhooks int
	rate                           float64 // webhooks per second
	nodeKills, redisRestarts       int
	redisPauses                    int
}

func chosenScale() scale {
	if os.Getenv("HERALD_CHAOS") == "large" {
		return scale{nodes: 3, clients: 500, slow: 25, webhooks: 10000, rate: 60, nodeKills: 6, redisRestarts: 2, redisPauses: 2}
	}
	return scale{nodes: 3, clients: 60, slow: 4, webhooks: 1200, rate: 40, nodeKills: 2, redisRestarts: 1, redisPauses: 1}
}

const (
	merchant = heraldtest.Merchant
	users    = 20
	firehose = "merchant:firehose"
)

// figures are what the run prints.
type figures struct {
	acknowledged, apiPublished, duplicatesSent, retries atomic.Int64
	deliveries                                          atomic.Int64
	resumes, recovered, gapsAnnounced, tooSlow          atomic.Int64
	nodeKills, redisRestarts, redisPauses               atomic.Int64
}

func TestChaos(t *testing.T) {
	sc := chosenScale()
	bin := buildHerald(t)
	redis := redistest.Start(t, redistest.Options{AOF: true})
	env := []string{
		"HERALD_REDIS_URL=" + redis.URL(),
		"HERALD_JWT_SECRET=" + heraldtest.Secret,
		"HERALD_API_KEY=" + heraldtest.APIKey,
		"HERALD_HISTORY_SIZE=100000",
		"HERALD_SEND_QUEUE_BYTES=131072",
		"HERALD_LOG_LEVEL=warn",
	}
	for _, slug := range heraldtest.Providers() {
		up := strings.ToUpper(slug)
		env = append(env, "HERALD_INGRESS_"+up+"_SECRET="+heraldtest.ProviderSecret, "HERALD_INGRESS_"+up+"_MERCHANT="+merchant)
	}
	procs := make([]*process, sc.nodes)
	for i := range procs {
		procs[i] = newProcess(t, bin, fmt.Sprintf("node-%d", i), env)
		procs[i].start()
	}
	randomNode := func() *heraldtest.Node { return procs[rand.IntN(len(procs))].node() }

	var fig figures
	makers := eventMakers(t)

	// Clients: most follow one user's channel, some the merchant's (which
	// carries every event), a few of those too slow to keep up.
	ctx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	var followers []*heraldtest.Follower
	var clientsDone sync.WaitGroup
	for i := 0; i < sc.clients; i++ {
		ch := fmt.Sprintf("user:%d", 1+i%users)
		if i%3 == 0 {
			ch = "merchant:" + merchant
		}
		// The slow clients, and as many fast ones, follow the firehose.
		slow := i < sc.slow
		if i < 2*sc.slow {
			ch = firehose
		}
		f := heraldtest.NewFollower(ch, mint(t, ch))
		f.Record = true
		if slow {
			f.ReadDelay = 50 * time.Millisecond
			f.HTTPClient = tinyBufferClient()
		}
		followers = append(followers, f)
		clientsDone.Add(1)
		go func() {
			defer clientsDone.Done()
			churn(ctx, f, randomNode, slow, &fig)
		}()
	}

	// The provider simulator.
	var acked sync.Map // event id → channels it was published to ([]string, possibly empty)
	webhooksDone := make(chan struct{})
	go func() {
		defer close(webhooksDone)
		simulate(t, sc, makers, randomNode, &acked, &fig)
	}()

	// A busy channel published through the server API, faster than the
	// slow clients read.
	firehoseDone := make(chan struct{})
	go func() {
		defer close(firehoseDone)
		pour(t, sc, randomNode, &acked, &fig)
	}()

	// The chaos.
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		runChaos(t, sc, procs, redis, &fig)
	}()

	<-webhooksDone
	<-firehoseDone
	<-chaosDone
	stopClients()
	clientsDone.Wait()

	// Every node and Redis are up again; let everyone catch up.
	for _, p := range procs {
		waitReady(t, p)
	}
	logs := readLogs(t, procs[0].node(), &acked, followers)
	var catchUp sync.WaitGroup
	for _, f := range followers {
		catchUp.Add(1)
		go func() {
			defer catchUp.Done()
			f.Drop()
			// What was kept is checked here, not how a tiny buffer fares:
			// with a receive buffer under the loopback MSS the kernel only
			// moves data on the sender's zero-window probes, which back
			// off to tens of seconds.
			f.ReadDelay, f.HTTPClient = 0, nil
			for attempt := 0; ; attempt++ {
				err := f.Connect(context.Background(), randomNode())
				if err == nil {
					break
				}
				if attempt > 50 {
					t.Errorf("%s: cannot reconnect: %v", f.Channel, err)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			top := uint64(len(logs[f.Channel]))
			if err := f.WaitFor(top, 60*time.Second); err != nil {
				t.Errorf("catching up: %v", err)
			}
			f.Drop()
		}()
	}
	catchUp.Wait()

	lost, dups := verify(t, logs, &acked, followers, &fig)
	t.Logf("chaos run: %d nodes, %d clients (%d slow), %d webhooks acknowledged (%d duplicate deliveries sent), %d API publications, %d retries, "+
		"%d deliveries, %d resumes (%d recovered), %d 4009 closes, %d gaps announced; survived %d node kills, %d Redis restarts, %d Redis pauses; "+
		"events lost: %d, duplicates: %d",
		sc.nodes, sc.clients, sc.slow, fig.acknowledged.Load(), fig.duplicatesSent.Load(), fig.apiPublished.Load(), fig.retries.Load(),
		fig.deliveries.Load(), fig.resumes.Load(), fig.recovered.Load(), fig.tooSlow.Load(), fig.gapsAnnounced.Load(),
		fig.nodeKills.Load(), fig.redisRestarts.Load(), fig.redisPauses.Load(), lost, dups)
	if lost != 0 || dups != 0 {
		t.Fatalf("events lost: %d, duplicates: %d", lost, dups)
	}
	if sc.slow > 0 && fig.tooSlow.Load() == 0 {
		t.Errorf("no slow client was closed with 4009: the run did not exercise slow consumers")
	}
	if fig.gapsAnnounced.Load() != 0 {
		t.Errorf("%d gaps announced with AOF on and retention not exceeded", fig.gapsAnnounced.Load())
	}
}

func mint(t *testing.T, ch string) string {
	ns, id, _ := strings.Cut(ch, ":")
	if ns == "merchant" {
		return heraldtest.Token(t, "ops", id)
	}
	return heraldtest.Token(t, id, "")
}

// tinyBufferClient dials with a 4 KiB receive buffer, so that a slow reader
// backs up into the server's send queue within seconds rather than after
// the kernel's megabytes.
func tinyBufferClient() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		_ = c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// churn keeps a client connected to random nodes: it drops and resumes at
// random (slow clients only when the server drops them), and reconnects
// whenever its node dies.
func churn(ctx context.Context, f *heraldtest.Follower, node func() *heraldtest.Node, slow bool, fig *figures) {
	for ctx.Err() == nil {
		if err := f.Connect(ctx, node()); err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(50+rand.IntN(300)) * time.Millisecond):
			}
			continue
		}
		stay := time.Duration(200+rand.IntN(2500)) * time.Millisecond
		if slow {
			stay = time.Hour
		}
		select {
		case <-ctx.Done():
		case <-f.Done():
			if f.LastClose() == 4009 {
				fig.tooSlow.Add(1)
			}
		case <-time.After(stay):
		}
		f.Drop()
	}
}

// simulate posts webhooks like providers do: each until it gets a 200,
// some a second time after their 200.
func simulate(t *testing.T, sc scale, makers []maker, node func() *heraldtest.Node, acked *sync.Map, fig *figures) {
	var wg sync.WaitGroup
	jobs := make(chan int)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range jobs {
				m := makers[seq%len(makers)]
				provider, body := m(seq)
				id, chans := deliver(t, provider, body, node, fig)
				if id == "" {
					continue
				}
				prev, _ := acked.LoadOrStore(id, chans)
				if len(chans) > 0 && len(prev.([]string)) == 0 {
					acked.Store(id, chans)
				}
				fig.acknowledged.Add(1)
				if rand.IntN(10) == 0 {
					fig.duplicatesSent.Add(1)
					if again, _ := deliver(t, provider, body, node, fig); again != id {
						t.Errorf("a repeated delivery became %q, want %q", again, id)
					}
				}
			}
		}()
	}
	interval := time.Duration(float64(time.Second) / sc.rate)
	start := time.Now()
	for seq := 0; seq < sc.webhooks; seq++ {
		// Open loop: the schedule does not wait for slow answers.
		if d := time.Until(start.Add(time.Duration(seq) * interval)); d > 0 {
			time.Sleep(d)
		}
		jobs <- seq
	}
	close(jobs)
	wg.Wait()
}

// pour publishes 3 KiB publications to the firehose through the server
// API at 100 per second for as long as the webhooks run, each until it is
// answered 200 (with an idempotency key, so a retry never appends twice).
func pour(t *testing.T, sc scale, node func() *heraldtest.Node, acked *sync.Map, fig *figures) {
	pad := strings.Repeat("f", 3<<10)
	runFor := time.Duration(float64(sc.webhooks) / sc.rate * float64(time.Second))
	start := time.Now()
	for seq := 0; time.Since(start) < runFor; seq++ {
		if d := time.Until(start.Add(time.Duration(seq) * 10 * time.Millisecond)); d > 0 {
			time.Sleep(d)
		}
		id := fmt.Sprintf("firehose:%d", seq)
		body, _ := json.Marshal(map[string]any{"channel": firehose, "idempotency_key": id, "data": map[string]string{"id": id, "pad": pad}})
		for attempt := 0; ; attempt++ {
			if attempt > 600 {
				t.Errorf("%s never acknowledged", id)
				return
			}
			if attempt > 0 {
				fig.retries.Add(1)
				time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond)
			}
			req, _ := http.NewRequest(http.MethodPost, node().URL+"/v1/publish", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+heraldtest.APIKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				acked.Store(id, []string{firehose})
				fig.apiPublished.Add(1)
				break
			}
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("publish answered %d", resp.StatusCode)
				return
			}
		}
	}
}

// deliver posts one webhook until it is answered 200, and returns the event
// id and, when it was published by this attempt, its channels.
func deliver(t *testing.T, provider string, body []byte, node func() *heraldtest.Node, fig *figures) (string, []string) {
	for attempt := 0; attempt < 600; attempt++ {
		if attempt > 0 {
			fig.retries.Add(1)
			time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond)
		}
		req, _ := http.NewRequest(http.MethodPost, node().URL+"/ingress/"+provider, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+heraldtest.ProviderSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var res struct {
			Status       string
			Event        string
			Publications []struct{ Channel string }
		}
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("%s webhook answered %d (%s)", provider, resp.StatusCode, res.Status)
				return "", nil
			}
			continue
		}
		var chans []string
		for _, p := range res.Publications {
			chans = append(chans, p.Channel)
		}
		return res.Event, chans
	}
	t.Errorf("%s webhook never acknowledged", provider)
	return "", nil
}

// runChaos kills and restarts nodes, restarts Redis and pauses it, spread
// over the run.
func runChaos(t *testing.T, sc scale, procs []*process, redis *redistest.Server, fig *figures) {
	runFor := time.Duration(float64(sc.webhooks)/sc.rate*float64(time.Second)) * 8 / 10
	actions := sc.nodeKills + sc.redisRestarts + sc.redisPauses
	step := runFor / time.Duration(actions+1)
	var plan []string
	for i := 0; i < sc.nodeKills; i++ {
		plan = append(plan, "kill")
	}
	for i := 0; i < sc.redisRestarts; i++ {
		plan = append(plan, "restart-redis")
	}
	for i := 0; i < sc.redisPauses; i++ {
		plan = append(plan, "pause-redis")
	}
	rand.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	for _, action := range plan {
		time.Sleep(step)
		switch action {
		case "kill":
			p := procs[rand.IntN(len(procs))]
			p.kill()
			fig.nodeKills.Add(1)
			time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
			p.start()
		case "restart-redis":
			redis.Kill()
			time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
			redis.StartAgain()
			fig.redisRestarts.Add(1)
		case "pause-redis":
			redis.Pause()
			time.Sleep(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
			redis.Resume()
			fig.redisPauses.Add(1)
		}
	}
}

func waitReady(t *testing.T, p *process) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready", p.name)
}

// readLogs reads the whole log of every channel an event was published to
// or a client followed: event id by offset, offsets 1…top.
func readLogs(t *testing.T, n *heraldtest.Node, acked *sync.Map, followers []*heraldtest.Follower) map[string][]string {
	names := map[string]bool{}
	acked.Range(func(_, v any) bool {
		for _, ch := range v.([]string) {
			names[ch] = true
		}
		return true
	})
	for _, f := range followers {
		names[f.Channel] = true
	}
	logs := map[string][]string{}
	for ch := range names {
		var ids []string
		since, epoch := uint64(0), ""
		for {
			q := fmt.Sprintf("/v1/history?channel=%s&limit=1000", ch)
			if epoch != "" {
				q += fmt.Sprintf("&since=%d&epoch=%s", since, epoch)
			} else {
				q += "&since=0&epoch=" + currentEpoch(t, n, ch)
			}
			status, res := history(t, n, q)
			if status != 200 {
				t.Fatalf("history of %s: %d %v", ch, status, res)
			}
			epoch = res["epoch"].(string)
			pubs := res["publications"].([]any)
			for _, p := range pubs {
				p := p.(map[string]any)
				if uint64(p["offset"].(float64)) != since+1 {
					t.Fatalf("%s: the log skips from %d to %v", ch, since, p["offset"])
				}
				since++
				id, _ := p["data"].(map[string]any)["id"].(string)
				ids = append(ids, id)
			}
			if len(pubs) == 0 || since >= uint64(res["offset"].(float64)) {
				break
			}
		}
		logs[ch] = ids
	}
	return logs
}

// history asks n for path, retrying a 503 as a client is told to: Redis,
// just restarted or resumed, may still fail a first call.
func history(t *testing.T, n *heraldtest.Node, path string) (int, map[string]any) {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		status, res := n.Get(t, path)
		if status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return status, res
		}
	}
}

func currentEpoch(t *testing.T, n *heraldtest.Node, ch string) string {
	status, res := history(t, n, "/v1/history?limit=1&channel="+ch)
	if status != 200 {
		t.Fatalf("history of %s: %d", ch, status)
	}
	return res["epoch"].(string)
}

// verify checks the logs against what was acknowledged and every client's
// record against the logs; it returns events lost and duplicates.
func verify(t *testing.T, logs map[string][]string, acked *sync.Map, followers []*heraldtest.Follower, fig *figures) (lost, dups int) {
	where := map[string]map[string]int{} // event id → channel → times in its log
	for ch, ids := range logs {
		for _, id := range ids {
			if where[id] == nil {
				where[id] = map[string]int{}
			}
			where[id][ch]++
			if where[id][ch] == 2 {
				t.Errorf("%s appears twice in %s", id, ch)
				dups++
			}
		}
	}
	acked.Range(func(k, v any) bool {
		id := k.(string)
		if len(where[id]) == 0 {
			t.Errorf("acknowledged %s is in no log", id)
			lost++
		}
		for _, ch := range v.([]string) {
			if where[id][ch] == 0 {
				t.Errorf("acknowledged %s is missing from %s", id, ch)
				lost++
			}
		}
		return true
	})
	for _, f := range followers {
		if err := f.Err(); err != nil {
			t.Errorf("client of %s saw a protocol violation: %v", f.Channel, err)
			dups++
		}
		s := f.Stats()
		fig.deliveries.Add(int64(s.Delivered))
		fig.resumes.Add(int64(s.Resumes))
		fig.recovered.Add(int64(s.Recovered))
		fig.gapsAnnounced.Add(int64(len(s.Gaps)))
		first, got := f.Received()
		log := logs[f.Channel]
		for off := first + 1; off <= uint64(len(log)); off++ {
			id, ok := got[off]
			switch {
			case !ok && len(s.Gaps) == 0:
				t.Errorf("client of %s never received offset %d (%s)", f.Channel, off, log[off-1])
				lost++
			case ok && id != log[off-1]:
				t.Errorf("client of %s received %s at offset %d, the log has %s", f.Channel, id, off, log[off-1])
				lost++
			}
		}
	}
	return lost, dups
}

// maker returns the provider and body of the seq-th webhook: a fixture
// made into a new event.
type maker func(seq int) (string, []byte)

// eventMakers turns every fixture that publishes (per its golden file) into
// a generator of new events: a fresh id, and for Kriptomat a user among
// users, so that user channels see traffic too.
func eventMakers(t *testing.T) []maker {
	var out []maker
	for _, slug := range heraldtest.Providers() {
		fixtures := heraldtest.Fixtures(t, slug)
		names := make([]string, 0, len(fixtures))
		for name := range fixtures {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			golden, err := os.ReadFile(filepath.Join(heraldtest.Root(t), "testdata", slug, name+".golden.json"))
			if err != nil || !bytes.Contains(golden, []byte(`"status": "published"`)) {
				continue
			}
			var doc map[string]any
			dec := json.NewDecoder(bytes.NewReader(fixtures[name]))
			dec.UseNumber()
			if err := dec.Decode(&doc); err != nil {
				continue
			}
			out = append(out, func(seq int) (string, []byte) {
				d := cloneJSON(doc)
				unique := fmt.Sprintf("%d%06d", 9, seq)
				switch d["id"].(type) {
				case json.Number:
					d["id"] = json.Number(unique)
				case string:
					d["id"] = "chaos-" + unique
				default:
					d["chaos_seq"] = seq
				}
				if slug == "kriptomat" {
					if _, ok := d["user_id"]; ok {
						d["user_id"] = json.Number(fmt.Sprint(1 + seq%users))
					}
				}
				b, _ := json.Marshal(d)
				return slug, b
			})
		}
	}
	if len(out) == 0 {
		t.Fatal("no publishable fixtures")
	}
	return out
}

func cloneJSON(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	_ = dec.Decode(&out)
	return out
}
