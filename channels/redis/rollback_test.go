package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"herald/channels"
	"herald/internal/heraldtest"
	"herald/internal/redistest"
)

// Redis that comes back from an older state (here a snapshot taken at
// offset 5, after 10 were published) keeps the log's epoch but not its
// offsets 6 to 10, which the next publications would use again. The node
// that had handed those on notices when it re-reads the log, and the log
// takes a new epoch: its subscribers get a gap into it, then what it
// holds and what follows; a client resuming from 10 is told of the gap
// too. Before, the re-read was ignored and the new 6 to 10 were dropped
// as already delivered.
func TestRedisBackFromAnOlderState_IsANewEpoch(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := heraldtest.Start(t, backend{single: srv}.config())
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "1", ""))
	epoch := c.Subscribe("user:1").String("epoch")
	for i := 1; i <= 10; i++ {
		publishRetrying(t, n, i)
		if i == 5 {
			if _, err := srv.Do("SAVE"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 1; i <= 10; i++ {
		if f := c.Expect("pub"); f.Offset() != uint64(i) {
			t.Fatalf("pub %v", f)
		}
	}

	srv.Kill()
	srv.StartAgain() // loads the snapshot: offset 5, same epoch
	gap, err := c.ReadTimeout(15 * time.Second)
	if err != nil || gap.Type() != "subscribed" || gap["recovered"] != false || gap.String("reason") != "epoch_mismatch" || gap.String("epoch") == epoch {
		t.Fatalf("after the restore: %v %v", gap, err)
	}
	newEpoch := gap.String("epoch")
	data := func(f heraldtest.Frame) float64 { n, _ := f["data"].(map[string]any)["n"].(float64); return n }
	for i := 1; i <= 5; i++ { // what the new epoch holds
		if f := c.Expect("pub"); f.Offset() != uint64(i) || f.String("epoch") != newEpoch || data(f) != float64(i) {
			t.Fatalf("held %d: %v", i, f)
		}
	}
	for i := 106; i <= 111; i++ {
		publishRetrying(t, n, i)
	}
	for i := 106; i <= 111; i++ {
		if f := c.Expect("pub"); f.Offset() != uint64(i-100) || data(f) != float64(i) {
			t.Fatalf("new %d: %v", i, f)
		}
	}

	r := heraldtest.Connect(t, n, heraldtest.Token(t, "1", ""))
	r.Send(map[string]any{"type": "subscribe", "channel": "user:1", "since": map[string]any{"offset": 10, "epoch": epoch}})
	if f := r.Expect("subscribed"); f["recovered"] != false || f.String("epoch") != newEpoch || f.Offset() != 11 {
		t.Fatalf("resume from 10: %v", f)
	}
}

// As above, but another node publishes more than Redis lost before this
// node's feed re-reads the log: the new publications take the lost
// offsets, so the log's newest offset is past the feed's again. The feed
// compares the data it handed on at its last offset with what the log
// holds there now, and the log still takes a new epoch: no subscriber
// keeps the lost publications under offsets that now name others.
func TestRedisBackFromAnOlderState_OvertakenIsStillANewEpoch(t *testing.T) {
	// n reaches Redis through a proxy that keeps it away until the other
	// node has overtaken the lost offsets.
	n, other, proxy, srv := partitionable(t, redistest.Options{}, nil)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "1", ""))
	epoch := c.Subscribe("user:1").String("epoch")
	publishSaving(t, n, srv)
	for i := 1; i <= 10; i++ {
		if f := c.Expect("pub"); f.Offset() != uint64(i) {
			t.Fatalf("pub %v", f)
		}
	}
	overtake(t, c, epoch, other, proxy, srv)
}

// The same when the node learned its position by a client's resume, not
// by handing on a publication itself: it must still know what the log
// held at its last offset.
func TestRedisBackFromAnOlderState_OvertakenAfterAResumeIsStillANewEpoch(t *testing.T) {
	n, other, proxy, srv := partitionable(t, redistest.Options{}, nil)
	publishSaving(t, other, srv) // n has no feed of user:1 meanwhile
	top, err := other.Server.Broker().History(context.Background(), "user:1", channels.HistoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "1", ""))
	c.Send(map[string]any{"type": "subscribe", "channel": "user:1", "since": map[string]any{"offset": 5, "epoch": top.Epoch}})
	if f := c.Expect("subscribed"); f["recovered"] != true {
		t.Fatalf("resume from 5: %v", f)
	}
	for i := 6; i <= 10; i++ {
		if f := c.Expect("pub"); f.Offset() != uint64(i) {
			t.Fatalf("pub %v", f)
		}
	}
	overtake(t, c, top.Epoch, other, proxy, srv)
}

// publishSaving publishes 1 to 10 to user:1 through n, Redis saving a
// snapshot after 8.
func publishSaving(t *testing.T, n *heraldtest.Node, srv *redistest.Server) {
	t.Helper()
	for i := 1; i <= 10; i++ {
		publishRetrying(t, n, i)
		if i == 8 {
			if _, err := srv.Do("SAVE"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// overtake keeps c's node away while Redis comes back from the snapshot at
// 8 and other publishes 109 to 115 as offsets 9 to 15; then c must be told
// of a new epoch and get all 15 of it, and a resume from the lost 10 must
// be told of the gap too.
func overtake(t *testing.T, c *heraldtest.Client, epoch string, other *heraldtest.Node, proxy *redistest.Proxy, srv *redistest.Server) {
	t.Helper()
	proxy.Cut()
	srv.Kill()
	srv.StartAgain()              // offset 8, same epoch: 9 and 10 lost
	for i := 109; i <= 115; i++ { // as offsets 9 to 15
		publishRetrying(t, other, i)
	}
	proxy.Restore()
	gap, err := c.ReadTimeout(15 * time.Second)
	if err != nil || gap.Type() != "subscribed" || gap["recovered"] != false || gap.String("reason") != "epoch_mismatch" || gap.String("epoch") == epoch {
		t.Fatalf("after the restore: %v %v", gap, err)
	}
	newEpoch := gap.String("epoch")
	data := func(f heraldtest.Frame) float64 { n, _ := f["data"].(map[string]any)["n"].(float64); return n }
	for i := 1; i <= 15; i++ {
		want := float64(i)
		if i > 8 {
			want += 100
		}
		if f := c.Expect("pub"); f.Offset() != uint64(i) || f.String("epoch") != newEpoch || data(f) != want {
			t.Fatalf("offset %d: %v", i, f)
		}
	}
	r := heraldtest.Connect(t, other, heraldtest.Token(t, "1", ""))
	r.Send(map[string]any{"type": "subscribe", "channel": "user:1", "since": map[string]any{"offset": 10, "epoch": epoch}})
	if f := r.Expect("subscribed"); f["recovered"] != false || f.String("epoch") != newEpoch {
		t.Fatalf("resume from the lost 10: %v", f)
	}
}

// publishRetrying publishes {"n":i} to user:1 through n's broker, retrying
// for 5 s while Redis comes back.
func publishRetrying(t *testing.T, n *heraldtest.Node, i int) {
	t.Helper()
	var err error
	for try := 0; try < 500; try++ {
		if _, err = n.Server.Broker().Publish(context.Background(), "user:1", json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), channels.PublishOptions{}); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("publish %d: %v", i, err)
}
