package redis_test

import (
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"herald/internal/heraldtest"
	"herald/internal/redistest"
	"herald/internal/server"
)

// A channel of large publications, read through a node on Redis: a
// history request, GET /v1/history and a resume each read no more of the
// log than their reply or page can carry. Before, a request for 1,000
// publications loaded all of them into the node and then sent a few:
// with publications near the limit, gigabytes for one request.
func TestHistory_LargePublicationsAreReadOnlyAsFarAsTheyFit(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := backend{single: srv}.config()
	cfg.Hub.SendQueueBytes = 256 << 10 // replies and replay pages of 128 KiB
	n := heraldtest.Start(t, cfg)

	const count, size = 300, 100 << 10 // 30 MB in the log
	pad := strings.Repeat("x", size)
	var epoch string
	for i := 1; i <= count; i++ {
		epoch = n.PublishDirect(t, "user:big", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)).Epoch
	}
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "big", ""))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c.Send(map[string]any{"type": "history", "channel": "user:big", "limit": 1000})
	f := c.Expect("history")
	runtime.ReadMemStats(&after)
	if got := f.Offsets(); f["truncated"] != true || len(got) != 1 || got[0] != count {
		t.Fatalf("history frame: truncated %v, offsets %v", f["truncated"], got)
	}
	// The test's client and node share the process: everything either
	// allocated for the request. The log holds 30 MB.
	alloc := after.TotalAlloc - before.TotalAlloc
	if alloc > 8<<20 {
		t.Fatalf("one history request allocated %d MB", alloc>>20)
	}
	t.Logf("one history request allocated %d KB", alloc>>10)

	// GET /v1/history: the newest that fit in its 16 MiB, ending at the top.
	code, body := n.Get(t, "/v1/history?channel=user:big&limit=1000")
	got := heraldtest.Frame(body).Offsets()
	if code != 200 || body["truncated"] != true || len(got) == 0 || len(got)*size > 16<<20 || got[len(got)-1] != count {
		t.Fatalf("GET /v1/history: %d, truncated %v, %d publications", code, body["truncated"], len(got))
	}
	code, body = n.Get(t, fmt.Sprintf("/v1/history?channel=user:big&since=%d&epoch=%s&limit=5", count-3, epoch))
	if got = heraldtest.Frame(body).Offsets(); code != 200 || body["truncated"] != nil || len(got) != 3 || got[0] != count-2 {
		t.Fatalf("GET /v1/history since: %d, truncated %v, offsets %v", code, body["truncated"], got)
	}

	// A resume from the start: every publication, in order, a page of at
	// most 128 KiB at a time.
	c.Send(map[string]any{"type": "subscribe", "channel": "user:big", "since": map[string]any{"offset": 0, "epoch": epoch}})
	if f := c.Expect("subscribed"); f["recovered"] != true {
		t.Fatalf("resume: %v", f)
	}
	for i := uint64(1); i <= count; i++ {
		f := c.Expect("pub")
		if o := f.Offset(); o != i {
			t.Fatalf("resume delivered offset %d, want %d", o, i)
		}
	}
	c.Send(map[string]any{"type": "ping"})
	c.Expect("pong")
}

// A node cut off from Redis while 12 MB of publications went by re-reads
// them in pages of at most 4 MiB when it is back, and its client gets
// every one, in order, without a gap.
func TestNodes_PartitionedNodeBackfillsLargePublicationsInPages(t *testing.T) {
	// The client's queue takes the whole backfill at once.
	a, b, proxy, srv := partitionable(t, redistest.Options{}, func(c *server.Config) { c.Hub.SendQueueBytes = 64 << 20 })

	f := follow(t, a, "user:9")
	publish(t, b, "user:9", 1)
	wait(t, f, 1)
	proxy.Cut()
	pad := strings.Repeat("x", 200<<10)
	for i := 2; i <= 61; i++ {
		b.PublishDirect(t, "user:9", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	before := scriptCalls(t, srv)
	proxy.Restore()
	wait(t, f, 61)
	if s := f.Stats(); s.Delivered != 61 || len(s.Gaps) != 0 || s.Resumes != 0 {
		t.Fatalf("%+v", s)
	}
	// Nothing else runs a script meanwhile: each call is a page.
	if pages := scriptCalls(t, srv) - before; pages < 3 {
		t.Fatalf("12 MB re-read in %d reads, want pages of at most 4 MiB", pages)
	}
}

// scriptCalls is how many scripts the server has run (EVALSHA and EVAL).
func scriptCalls(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	info, err := srv.Do("INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range regexp.MustCompile(`cmdstat_(?:evalsha|eval):calls=(\d+)`).FindAllStringSubmatch(info, -1) {
		c, _ := strconv.Atoi(m[1])
		n += c
	}
	return n
}
