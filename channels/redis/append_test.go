package redis_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/channels/channelstest"
	"herald/channels/redis"
	"herald/internal/redistest"
)

func newAppender(t *testing.T) (*redis.Broker, channels.Appender, countingHandler, goredis.UniversalClient) {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	b, h := startBroker(t, srv)
	a := b.Appender()
	if a == nil {
		t.Fatal("no appender on a single Redis")
	}
	// For looking at the keys.
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	return b, a, h, client
}

// event is an event's data as the ingress encodes it, and its sequence.
func event(id, status string, rank int) (json.RawMessage, *channels.Sequence) {
	data := []byte(`{"id":"` + id + `","status":"` + status + `","received_at":"now","amounts":{},"raw":{"note":"a \",\"amounts\": in a string"}}`)
	return data, &channels.Sequence{
		Key: "kriptomat:deposit:77", Label: status, Rank: rank, TTL: time.Hour,
		At: bytes.Index(data, []byte(`,"amounts":`)) + 1, Before: `"stale":true,"current_status":`, After: ",",
	}
}

func history(t *testing.T, b *redis.Broker, ch string) []channels.Publication {
	t.Helper()
	h, err := b.History(context.Background(), ch, channels.HistoryOptions{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return h.Publications // oldest first
}

func TestAppender_AllChannelsInOrderWithIdempotency(t *testing.T) {
	b, a, rec, _ := newAppender(t)
	ctx := context.Background()
	for _, ch := range []string{"user:5", "merchant:acme"} {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	// merchant:acme has a publication already: offsets differ per channel.
	if _, err := b.Publish(ctx, "merchant:acme", json.RawMessage(`{"n":0}`), channels.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	<-rec.pubs
	chans := []string{"user:5", "merchant:acme"}
	data, seq := event("e1", "succeeded", 2)
	opts := channels.PublishOptions{IdempotencyKey: "e1"}
	res, err := a.Append(ctx, chans, data, opts, seq)
	if err != nil {
		t.Fatal(err)
	}
	if res.Late || res.Current != "succeeded" || len(res.Results) != 2 ||
		res.Results[0].Offset != 1 || res.Results[1].Offset != 2 || res.Results[0].Duplicate || res.Results[1].Duplicate {
		t.Fatalf("first append: %+v", res)
	}
	for range chans {
		if p := <-rec.pubs; !bytes.Equal(p.Data, data) {
			t.Fatalf("live publication %s, want %s", p.Data, data)
		}
	}

	// A retry appends nothing and reports where the first one went.
	again, err := a.Append(ctx, chans, data, opts, seq)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range again.Results {
		if !r.Duplicate || r.Position != res.Results[i].Position {
			t.Fatalf("retry on %s: %+v, first %+v", chans[i], r, res.Results[i])
		}
	}
	if n := len(history(t, b, "user:5")); n != 1 {
		t.Fatalf("user:5 has %d publications after a retry", n)
	}

	// A key seen on one channel only (a retry after a partial failure of
	// the one-publish-per-channel way) completes the other.
	if _, err := b.Publish(ctx, "user:5", json.RawMessage(`{"n":1}`), channels.PublishOptions{IdempotencyKey: "e2"}); err != nil {
		t.Fatal(err)
	}
	data2, _ := event("e2", "info", 0)
	part, err := a.Append(ctx, chans, data2, channels.PublishOptions{IdempotencyKey: "e2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !part.Results[0].Duplicate || part.Results[1].Duplicate || part.Results[1].Offset != 3 || part.Current != "" {
		t.Fatalf("partial retry: %+v", part)
	}
}

func TestAppender_LatePublicationIsMarkedAsSequenceMarkDoes(t *testing.T) {
	b, a, _, client := newAppender(t)
	ctx := context.Background()
	chans := []string{"user:5"}
	succeeded, seqS := event("e-succeeded", "succeeded", 2)
	if _, err := a.Append(ctx, chans, succeeded, channels.PublishOptions{IdempotencyKey: "e-succeeded"}, seqS); err != nil {
		t.Fatal(err)
	}
	pending, seqP := event("e-pending", "pending", 1)
	res, err := a.Append(ctx, chans, pending, channels.PublishOptions{IdempotencyKey: "e-pending"}, seqP)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Late || res.Current != "succeeded" {
		t.Fatalf("pending after succeeded: %+v", res)
	}
	// A retry of the late one is a duplicate and leaves the sequence as it was.
	if res, err := a.Append(ctx, chans, pending, channels.PublishOptions{IdempotencyKey: "e-pending"}, seqP); err != nil || !res.Results[0].Duplicate {
		t.Fatalf("retry: %+v %v", res, err)
	}
	// Equal and higher ranks are not late and become current.
	failed, seqF := event("e-failed", "failed", 2)
	if res, err := a.Append(ctx, chans, failed, channels.PublishOptions{IdempotencyKey: "e-failed"}, seqF); err != nil || res.Late || res.Current != "failed" {
		t.Fatalf("equal rank: %+v %v", res, err)
	}

	pubs := history(t, b, "user:5")
	if len(pubs) != 3 {
		t.Fatalf("%d publications", len(pubs))
	}
	want := seqP.Mark(pending, "succeeded")
	if !bytes.Equal(pubs[1].Data, want) {
		t.Fatalf("late publication\n got %s\nwant %s", pubs[1].Data, want)
	}
	var ev struct {
		Stale         bool   `json:"stale"`
		CurrentStatus string `json:"current_status"`
		Raw           struct{ Note string }
	}
	if err := json.Unmarshal(pubs[1].Data, &ev); err != nil || !ev.Stale || ev.CurrentStatus != "succeeded" || ev.Raw.Note != `a ","amounts": in a string` {
		t.Fatalf("late publication %s: %+v %v", pubs[1].Data, ev, err)
	}
	if !bytes.Equal(pubs[0].Data, succeeded) || !bytes.Equal(pubs[2].Data, failed) {
		t.Fatalf("publications in time were changed: %s, %s", pubs[0].Data, pubs[2].Data)
	}

	// The record outlives its last change by its TTL.
	rec, err := client.HGetAll(ctx, redis.SequenceKey("kriptomat:deposit:77")).Result()
	if err != nil || rec["status"] != "failed" || rec["rank"] != "2" {
		t.Fatalf("sequence record %v %v", rec, err)
	}
	if ttl := client.PTTL(ctx, redis.SequenceKey("kriptomat:deposit:77")).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("sequence record TTL %v", ttl)
	}

	bad := &channels.Sequence{Key: "other", Label: "x", Rank: 1, TTL: time.Hour, At: 99}
	if res, err := a.Append(ctx, []string{"user:6"}, json.RawMessage(`{}`), channels.PublishOptions{}, bad); err == nil {
		t.Fatalf("splice offset beyond the data: %+v", res)
	}
}

// On a Redis Cluster the user's and the merchant's channels live on
// different masters: each is appended and ranked in one script of its own,
// in a copy of the sequence in its slot, so that each channel's stale
// marks follow its own order; a retry appends nothing and ranks nothing.
func TestAppender_OnAClusterEachChannelRanksItself(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: cluster.Addrs()})
	t.Cleanup(func() { client.Close() })
	b := newBroker(t, client, channelstest.Options{}, countingHandler{pubs: make(chan channels.Publication, 64)}).(*redis.Broker)
	t.Cleanup(func() { b.Close() })
	a := b.Appender()
	ctx := context.Background()
	chans := []string{"user:5", "merchant:acme"}
	if s1, s2 := client.ClusterKeySlot(ctx, "{user:5}").Val(), client.ClusterKeySlot(ctx, "{merchant:acme}").Val(); s1 == s2 {
		t.Fatalf("both channels in slot %d", s1)
	}
	succeeded, seqS := event("e-succeeded", "succeeded", 2)
	pending, seqP := event("e-pending", "pending", 1)
	if _, err := a.Append(ctx, chans, succeeded, channels.PublishOptions{IdempotencyKey: "e-succeeded"}, seqS); err != nil {
		t.Fatal(err)
	}
	res, err := a.Append(ctx, chans, pending, channels.PublishOptions{IdempotencyKey: "e-pending"}, seqP)
	if err != nil || !res.Late || res.Current != "succeeded" || len(res.Results) != 2 || res.Results[1].Offset != 2 {
		t.Fatalf("pending after succeeded: %+v %v", res, err)
	}
	if res, err := a.Append(ctx, chans, pending, channels.PublishOptions{IdempotencyKey: "e-pending"}, seqP); err != nil ||
		!res.Results[0].Duplicate || !res.Results[1].Duplicate || res.Late {
		t.Fatalf("retry: %+v %v", res, err)
	}
	for _, ch := range chans {
		pubs := history(t, b, ch)
		if len(pubs) != 2 || !bytes.Equal(pubs[0].Data, succeeded) || !bytes.Equal(pubs[1].Data, seqP.Mark(pending, "succeeded")) {
			t.Fatalf("%s: %d publications: %+v", ch, len(pubs), pubs)
		}
		rec, err := client.HGetAll(ctx, redis.ChannelSequenceKey(ch, seqS.Key)).Result()
		if err != nil || rec["status"] != "succeeded" || rec["rank"] != "2" {
			t.Fatalf("%s: sequence record %v %v", ch, rec, err)
		}
	}
}
