package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/channels/redis"
	"herald/internal/heraldtest"
	"herald/internal/redistest"
)

// The tests here change a Redis Cluster under live subscribers: a slot
// moves to another master, a replica takes over from its master by hand,
// and a master is killed. Each time a publisher keeps going through
// another node, and every follower must get every acknowledged
// publication, in order, once, or be told of a gap.

// publisher publishes to each of its channels, one goroutine each, through
// a node until stopped, and remembers what Redis acknowledged.
type publisher struct {
	mu      sync.Mutex
	last    map[string]channels.Position // last acknowledged, by channel
	errs    map[string]int               // refused publications, by channel
	first   map[string]error             // the first refusal, by channel
	lastErr map[string]error             // the last refusal, by channel
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startPublisher(n *heraldtest.Node, chans []string) *publisher {
	p := &publisher{last: map[string]channels.Position{}, errs: map[string]int{}, first: map[string]error{},
		lastErr: map[string]error{}, stop: make(chan struct{})}
	for _, ch := range chans {
		p.wg.Add(1)
		go p.run(n.Server.Broker(), ch)
	}
	return p
}

func (p *publisher) run(broker channels.Broker, ch string) {
	defer p.wg.Done()
	for i := 1; ; i++ {
		select {
		case <-p.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := broker.Publish(ctx, ch, json.RawMessage(`{"n":`+strconv.Itoa(i)+`}`), channels.PublishOptions{})
		cancel()
		p.mu.Lock()
		if err != nil {
			if p.errs[ch]++; p.first[ch] == nil {
				p.first[ch] = err
			}
			p.lastErr[ch] = err
		} else {
			p.last[ch] = r.Position
		}
		p.mu.Unlock()
	}
}

// stopAtEnd stops p when the test ends, if the test did not.
func stopAtEnd(t *testing.T, p *publisher) {
	t.Cleanup(func() {
		select {
		case <-p.stop:
		default:
			p.finish()
		}
	})
}

// finish stops the publisher and returns what it saw.
func (p *publisher) finish() (last map[string]channels.Position, errs map[string]int, first map[string]error) {
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.errs, p.first
}

// acknowledged returns how many publications of ch were acknowledged so far.
func (p *publisher) acknowledged(ch string) channels.Position {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last[ch]
}

// clusterChannels are channels spread over the masters; the first is the
// one the tests move or fail over.
func clusterChannels() []string {
	var out []string
	for i := 1; i <= 8; i++ {
		out = append(out, fmt.Sprintf("user:%d", i))
	}
	return out
}

func slotOf(t *testing.T, addr, ch string) int {
	t.Helper()
	reply, err := redistest.Do(addr, "CLUSTER", "KEYSLOT", "herald:{"+ch+"}")
	if err != nil {
		t.Fatal(err)
	}
	slot, err := strconv.Atoi(reply)
	if err != nil {
		t.Fatal(err)
	}
	return slot
}

func owner(t *testing.T, addr string, slot int) (redistest.Node, []redistest.Node) {
	t.Helper()
	nodes, err := redistest.Topology(addr)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := redistest.Owner(nodes, slot)
	if !ok {
		t.Fatalf("no master serves slot %d: %+v", slot, nodes)
	}
	return o, nodes
}

// settle lets the publisher go on for a while, so that publications cross
// whatever the test just did.
func settle(t *testing.T, p *publisher, ch string, d time.Duration) {
	t.Helper()
	before := p.acknowledged(ch).Offset
	time.Sleep(d)
	deadline := time.Now().Add(15 * time.Second)
	for p.acknowledged(ch).Offset < before+20 {
		if time.Now().After(deadline) {
			p.mu.Lock()
			err := p.lastErr[ch]
			p.mu.Unlock()
			t.Fatalf("%s: publications stopped at %d; the last refusal: %v", ch, p.acknowledged(ch).Offset, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// check waits until every follower has its channel's last acknowledged
// publication, and fails on anything lost, repeated or out of order.
// gapsAllowed says whether an announced gap (a new epoch) is acceptable.
func check(t *testing.T, followers map[string]*heraldtest.Follower, last map[string]channels.Position, gapsAllowed bool) {
	t.Helper()
	for ch, f := range followers {
		want := last[ch]
		if want.Offset == 0 {
			t.Fatalf("%s: nothing acknowledged", ch)
		}
		if err := f.WaitForPosition(want.Offset, want.Epoch, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := f.Err(); err != nil {
			t.Fatal(err)
		}
		if s := f.Stats(); len(s.Gaps) != 0 && !gapsAllowed {
			t.Fatalf("%s: gaps announced: %v", ch, s.Gaps)
		}
	}
}

func TestCluster_SlotMovesUnderLiveSubscribers(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	b := backend{cluster: c}
	ns := nodes(t, b, 2)
	chans := clusterChannels()
	followers := map[string]*heraldtest.Follower{}
	for _, ch := range chans {
		followers[ch] = follow(t, ns[0], ch)
	}
	p := startPublisher(ns[1], chans)
	stopAtEnd(t, p)
	settle(t, p, chans[0], 200*time.Millisecond)

	moved := chans[0]
	slot := slotOf(t, c.Nodes[0].Addr(), moved)
	from, all := owner(t, c.Nodes[0].Addr(), slot)
	var to redistest.Node
	for _, n := range all {
		if n.Master && n.ID != from.ID {
			to = n
			break
		}
	}
	host, port, _ := strings.Cut(to.Addr, ":")
	do := func(addr string, args ...string) string {
		t.Helper()
		reply, err := redistest.Do(addr, args...)
		if err != nil {
			t.Fatalf("%s %v: %v", addr, args, err)
		}
		return reply
	}
	// The steps of redis-cli --cluster reshard, for one slot.
	do(to.Addr, "CLUSTER", "SETSLOT", strconv.Itoa(slot), "IMPORTING", from.ID)
	do(from.Addr, "CLUSTER", "SETSLOT", strconv.Itoa(slot), "MIGRATING", to.ID)
	for moves := 0; ; moves++ {
		// Ten keys at a time, as redis-cli does, with the publisher going
		// on, so that publications find the channel's keys on both masters.
		keys := do(from.Addr, "CLUSTER", "GETKEYSINSLOT", strconv.Itoa(slot), "10")
		if keys == "" {
			break
		}
		do(from.Addr, append([]string{"MIGRATE", host, port, "", "0", "5000", "KEYS"}, strings.Split(keys, "\n")...)...)
		time.Sleep(20 * time.Millisecond)
		if moves > 1000 {
			t.Fatal("the slot's keys do not run out")
		}
	}
	// The new owner first, then the old, then the rest, as redis-cli
	// does: the other way round, each would send a client to the other.
	do(to.Addr, "CLUSTER", "SETSLOT", strconv.Itoa(slot), "NODE", to.ID)
	do(from.Addr, "CLUSTER", "SETSLOT", strconv.Itoa(slot), "NODE", to.ID)
	for _, n := range all {
		if n.Master && n.ID != to.ID && n.ID != from.ID {
			do(n.Addr, "CLUSTER", "SETSLOT", strconv.Itoa(slot), "NODE", to.ID)
		}
	}
	settle(t, p, moved, 500*time.Millisecond)
	last, errs, first := p.finish()
	if now, _ := owner(t, c.Nodes[0].Addr(), slot); now.ID != to.ID {
		t.Fatalf("slot %d is on %s, not %s", slot, now.Addr, to.Addr)
	}
	check(t, followers, last, false)
	for ch, n := range errs {
		t.Errorf("%s: %d publications refused while its slot moved, the first: %v", ch, n, first[ch])
	}
	t.Logf("moved slot %d of %s from %s to %s; %s reached offset %d", slot, moved, from.Addr, to.Addr, moved, last[moved].Offset)
}

// failover starts a cluster with replicas, two herald nodes, followers of
// every channel on the first and a publisher on the second, and returns
// the master of the first channel's slot with its replica.
func failoverSetup(t *testing.T) (c *redistest.Cluster, ns []*heraldtest.Node, followers map[string]*heraldtest.Follower, p *publisher, slot int, master, replica redistest.Node) {
	c = redistest.StartReplicatedCluster(t, 3)
	ns = nodes(t, backend{cluster: c}, 2)
	chans := clusterChannels()
	followers = map[string]*heraldtest.Follower{}
	for _, ch := range chans {
		followers[ch] = follow(t, ns[0], ch)
	}
	p = startPublisher(ns[1], chans)
	stopAtEnd(t, p)
	settle(t, p, chans[0], 200*time.Millisecond)
	slot = slotOf(t, c.Nodes[0].Addr(), chans[0])
	master, all := owner(t, c.Nodes[0].Addr(), slot)
	for _, n := range all {
		if !n.Master && n.MasterID == master.ID {
			replica = n
		}
	}
	if replica.ID == "" {
		t.Fatalf("master %s has no replica: %+v", master.Addr, all)
	}
	return
}

// promoted waits until the cluster, as seen from addr, serves slot from
// the node with id.
func promoted(t *testing.T, addr string, slot int, id string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		nodes, err := redistest.Topology(addr)
		if err == nil {
			if o, ok := redistest.Owner(nodes, slot); ok && o.ID == id {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %d not served by %s within 20 s: %v %+v", slot, id, err, nodes)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready waits until n's /readyz answers 200.
func ready(t *testing.T, n *heraldtest.Node) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, res := n.Get(t, "/readyz")
		if status == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz still %d: %v", status, res)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCluster_ManualFailoverLosesNothing has a replica take over from its
// master by hand (CLUSTER FAILOVER, which waits until the replica has
// everything): nothing is lost, nothing is announced as a gap.
func TestCluster_ManualFailoverLosesNothing(t *testing.T) {
	c, ns, followers, p, slot, master, replica := failoverSetup(t)
	if _, err := redistest.Do(replica.Addr, "CLUSTER", "FAILOVER"); err != nil {
		t.Fatal(err)
	}
	promoted(t, c.Nodes[0].Addr(), slot, replica.ID)
	promoted(t, master.Addr, slot, replica.ID)
	moved := clusterChannels()[0]
	settle(t, p, moved, 500*time.Millisecond)
	last, errs, first := p.finish()
	check(t, followers, last, false)
	for ch, n := range errs {
		t.Errorf("%s: %d publications refused during the failover, the first: %v", ch, n, first[ch])
	}
	for _, n := range ns {
		ready(t, n)
	}
	// A replica takes sharded subscriptions but may pass them nothing: no
	// channel may stay subscribed on the old master, now a replica.
	deadline := time.Now().Add(3 * topologyPeriod)
	for {
		left := shardChannels(t, master.Addr)
		if left == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still subscribed on %s, now a replica: %q", master.Addr, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s took over slot %d from %s; %s reached offset %d", replica.Addr, slot, master.Addr, moved, last[moved].Offset)
}

// topologyPeriod is how often a node checks where its subscriptions are
// (the broker's health interval, 1 s, times topologyInterval).
const topologyPeriod = 5 * time.Second

// TestCluster_KilledMasterFailsOver kills the master of a channel's slot
// while publications flow. Until its replica takes over (the cluster node
// timeout, 2 s, and an election) publications to its slots are refused;
// once the cluster marks the master failed, so are all others (Redis's
// cluster-require-full-coverage). Then the node that publishes, which has
// no subscription on the dead master to tell it, must find the new one
// within seconds, not go-redis's minute; everything acknowledged reaches
// the followers; and what the replica had not received when its master
// died is lost, which must be announced as a gap, never skipped silently.
func TestCluster_KilledMasterFailsOver(t *testing.T) {
	c, ns, followers, p, slot, master, replica := failoverSetup(t)
	moved := clusterChannels()[0]
	killed, before := time.Now(), p.acknowledged(moved).Offset
	c.Server(master.Addr).Kill()
	promoted(t, replica.Addr, slot, replica.ID)
	tookOver := time.Since(killed)
	for p.acknowledged(moved).Offset <= before+1 && time.Since(killed) < 30*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the replica took over %v after the kill; %s was published again after %v", tookOver.Round(10*time.Millisecond), moved, time.Since(killed).Round(10*time.Millisecond))
	settle(t, p, moved, 500*time.Millisecond)
	last, errs, first := p.finish()
	check(t, followers, last, true)
	if errs[moved] == 0 {
		t.Errorf("%s: no publication refused while its master was dead", moved)
	}
	for ch, n := range errs {
		t.Logf("%s: %d publications refused during the failover, the first: %v", ch, n, first[ch])
	}
	for ch, f := range followers {
		if s := f.Stats(); len(s.Gaps) > 0 {
			t.Logf("%s: gaps announced: %v", ch, s.Gaps)
		}
	}
	for _, n := range ns {
		ready(t, n)
	}
	t.Logf("%s took over slot %d from %s; %s reached offset %d", replica.Addr, slot, master.Addr, moved, last[moved].Offset)
}

// TestCluster_ResentPublishAppliesOnce pauses the master of a channel while
// a publication without an idempotency key is on its way. go-redis's
// cluster client sends a call again when the reply does not come in time;
// the paused master has every copy in its sockets and runs them all when
// it resumes. The channel must still get the publication once.
func TestCluster_ResentPublishAppliesOnce(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	n := nodes(t, backend{cluster: c}, 1)[0]
	const ch = "user:1"
	before := publish(t, n, ch, 0)
	master, _ := owner(t, c.Nodes[0].Addr(), slotOf(t, c.Nodes[0].Addr(), ch))
	paused := c.Server(master.Addr)
	calls := scriptCalls(t, paused)
	paused.Pause()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := n.Server.Broker().Publish(ctx, ch, json.RawMessage(`{"n":1}`), channels.PublishOptions{})
		done <- err
	}()
	time.Sleep(5 * time.Second) // past two read timeouts of 2 s: sent at least twice
	paused.Resume()
	err := <-done
	if sent := scriptCalls(t, paused) - calls; sent < 2 {
		t.Fatalf("the publication's script ran %d times on the master: it was not re-sent, and this test shows nothing", sent)
	}
	res, herr := n.Server.Broker().History(ctx(t), ch, channels.HistoryOptions{Since: &before.Position})
	if herr != nil {
		t.Fatal(herr)
	}
	if len(res.Publications) > 1 {
		t.Fatalf("one publication appended %d times (the call answered %v)", len(res.Publications), err)
	}
	if err == nil && len(res.Publications) != 1 {
		t.Fatalf("the publication was acknowledged but is not in the log")
	}
	t.Logf("answered %v; appended %d", err, len(res.Publications))
}

// recordingBroker starts a broker on client whose handler records what it
// is handed, and subscribes it to ch.
func recordingBroker(t *testing.T, client goredis.UniversalClient, opts redis.Options, ch string) (*redis.Broker, *recorder) {
	t.Helper()
	t.Cleanup(func() { client.Close() })
	rec := &recorder{pubs: map[string][]uint64{}}
	opts.Client = client
	b, err := redis.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	return b, rec
}

// recorder is a broker's handler that keeps what it is handed.
type recorder struct {
	mu     sync.Mutex
	pubs   map[string][]uint64
	resets int
}

func (r *recorder) HandlePublication(ch string, p channels.Publication) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pubs[ch] = append(r.pubs[ch], p.Offset)
}

func (r *recorder) HandleReset(string, channels.Position, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets++
}

func (r *recorder) resetCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resets
}

// await waits until ch's publication last was handed on, and returns the
// offsets handed on then.
func (r *recorder) await(t *testing.T, ch string, last uint64, timeout time.Duration) []uint64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := r.offsets(ch)
		if len(got) > 0 && got[len(got)-1] >= last {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("offset %d of %s not handed on within %v; got %v", last, ch, timeout, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shardChannels lists herald's sharded pub/sub channels subscribed on addr.
func shardChannels(t *testing.T, addr string) string {
	t.Helper()
	out, err := redistest.Do(addr, "PUBSUB", "SHARDCHANNELS", "herald:*")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (r *recorder) offsets(ch string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.pubs[ch]...)
}

// TestCluster_MisplacedFeedIsMovedBack puts a channel's feed on a replica,
// as a move made on a stale map of the cluster does, and on a master that
// does not serve it. The broker's periodic check moves the feed back to
// its master, unsubscribes it where it was, closes the connections left
// without channels, and re-reads the log: the handler gets every
// publication made meanwhile, once, in order.
func TestCluster_MisplacedFeedIsMovedBack(t *testing.T) {
	c := redistest.StartReplicatedCluster(t, 3)
	const ch = "user:1"
	// The default health interval: the placement check runs every 5 s.
	b, rec := recordingBroker(t, goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs()}), redis.Options{}, ch)
	slot := slotOf(t, c.Nodes[0].Addr(), ch)
	master, all := owner(t, c.Nodes[0].Addr(), slot)
	var replica, other redistest.Node
	for _, n := range all {
		switch {
		case !n.Master && n.MasterID == master.ID:
			replica = n
		case n.Master && n.ID != master.ID:
			other = n
		}
	}
	publishN := func(n int) uint64 {
		var last uint64
		for i := 0; i < n; i++ {
			r, err := b.Publish(ctx(t), ch, json.RawMessage(`{}`), channels.PublishOptions{})
			if err != nil {
				t.Fatal(err)
			}
			last = r.Offset
		}
		return last
	}
	waitFor := func(last uint64) {
		t.Helper()
		for i, o := range rec.await(t, ch, last, 15*time.Second) {
			if o != uint64(i+1) {
				t.Fatalf("handed on %v", rec.offsets(ch))
			}
		}
	}
	subscribedOn := func(addr string) bool { return shardChannels(t, addr) != "" }
	waitFor(publishN(3))
	for _, wrong := range []redistest.Node{replica, other} {
		if err := redis.Misplace(b, ch, wrong.Addr); err != nil && !wrong.Master {
			t.Fatal(err)
		}
		// A replica takes the subscription: Misplace returned once it
		// confirmed it. (A master that does not serve the slot refuses it,
		// and the broker moves the feed back at once, as it does for any
		// connection that fails.) Whether Redis still shows it there now
		// is not looked at: the broker's periodic check may already have
		// moved it back.
		publishN(5) // may not come through where the feed is now
		deadline := time.Now().Add(25 * time.Second)
		for subscribedOn(wrong.Addr) || !subscribedOn(master.Addr) {
			if time.Now().After(deadline) {
				t.Fatalf("not moved back within 25 s: subscribed on %s %v, on its master %v", wrong.Addr, subscribedOn(wrong.Addr), subscribedOn(master.Addr))
			}
			time.Sleep(50 * time.Millisecond)
		}
		waitFor(publishN(5))
		deadline = time.Now().Add(25 * time.Second)
		for pubsubClients(t, wrong.Addr) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the connection to %s, left without channels, is still open", wrong.Addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if n := rec.resetCount(); n != 0 {
		t.Fatalf("%d resets", n)
	}
}

// pubsubClients counts the connections in pub/sub mode on addr.
func pubsubClients(t *testing.T, addr string) int {
	t.Helper()
	out, err := redistest.Do(addr, "CLIENT", "LIST", "TYPE", "pubsub")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(out, "id=")
}

// TestCluster_OrphanedFeedIsPlacedAgain takes a channel's feed off its
// pub/sub connection, as a move that gave up after ten tries leaves it:
// the periodic check places it again, and the log is re-read.
func TestCluster_OrphanedFeedIsPlacedAgain(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	const ch = "user:1"
	b, rec := recordingBroker(t, goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs()}), redis.Options{HealthInterval: 200 * time.Millisecond}, ch)
	redis.Orphan(b, ch)
	var last uint64
	for i := 0; i < 3; i++ {
		r, err := b.Publish(ctx(t), ch, json.RawMessage(`{}`), channels.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Offset
	}
	if got := rec.await(t, ch, last, 15*time.Second); len(got) != int(last) {
		t.Fatalf("handed on %v", got)
	}
}
