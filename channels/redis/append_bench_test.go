package redis_test

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/channels/redis"
	"herald/internal/redistest"
)

// BenchmarkPublish appends 1,000-byte publications to a redis-server
// started for the benchmark: plain, with an idempotency key as the
// ingress appends, and with this node subscribed so that each append also
// comes back over pub/sub before the next (the whole way of a live
// publication through Redis). ns/op is mostly round trips, not CPU.
func BenchmarkPublish(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	data := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 988)...), `"}`...)
	ctx := context.Background()

	b.Run("plain", func(b *testing.B) {
		broker, _ := startBroker(b, srv)
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := broker.Publish(ctx, "user:"+strconv.Itoa(i%1000), data, channels.PublishOptions{}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("idempotency-key", func(b *testing.B) {
		broker, _ := startBroker(b, srv)
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			opts := channels.PublishOptions{IdempotencyKey: "bench:" + strconv.Itoa(i)}
			if _, err := broker.Publish(ctx, "user:"+strconv.Itoa(i%1000), data, opts); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("subscribed", func(b *testing.B) {
		broker, h := startBroker(b, srv)
		if err := broker.Subscribe(ctx, "user:bench"); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := broker.Publish(ctx, "user:bench", data, channels.PublishOptions{}); err != nil {
				b.Fatal(err)
			}
			<-h.pubs
		}
	})
}

// BenchmarkAppendEvent is a webhook's Redis work: an event to the user's
// and the merchant's channel with its status ranked, in one script
// (Appender, a single Redis), and in one script per channel, each ranking
// in its own copy of the sequence (as on a Redis Cluster).
func BenchmarkAppendEvent(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	b.Run("one-script", func(b *testing.B) {
		broker, _ := startBroker(b, srv)
		a := broker.Appender()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			id := strconv.Itoa(i)
			data, seq := event(id, "succeeded", 2)
			seq.Key = "txn:" + id
			if _, err := a.Append(ctx, []string{"user:" + strconv.Itoa(i%1000), "merchant:acme"}, data,
				channels.PublishOptions{IdempotencyKey: id}, seq); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("per-channel", func(b *testing.B) {
		broker, _ := startBroker(b, srv)
		a := redis.PerChannelAppender(broker)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			id := strconv.Itoa(i)
			data, seq := event(id, "succeeded", 2)
			seq.Key = "txn:" + id
			if _, err := a.Append(ctx, []string{"user:" + strconv.Itoa(i%1000), "merchant:acme"}, data,
				channels.PublishOptions{IdempotencyKey: id}, seq); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkHistory reads the 1,000 publications a resuming client missed.
func BenchmarkHistory(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	broker, _ := startBroker(b, srv)
	ctx := context.Background()
	data := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 988)...), `"}`...)
	var first channels.PublishResult
	for i := range 1001 {
		res, err := broker.Publish(ctx, "user:resume", data, channels.PublishOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			first = res
		}
	}
	since := first.Position
	b.SetBytes(1000 * int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := broker.History(ctx, "user:resume", channels.HistoryOptions{Since: &since})
		if err != nil || len(res.Publications) != 1000 {
			b.Fatalf("%d publications, %v", len(res.Publications), err)
		}
	}
}

// countingHandler passes live publications on to the benchmark or test.
type countingHandler struct{ pubs chan channels.Publication }

func (h countingHandler) HandlePublication(_ string, p channels.Publication) { h.pubs <- p }
func (h countingHandler) HandleReset(string, channels.Position, string)      {}

func startBroker(b testing.TB, srv *redistest.Server) (*redis.Broker, countingHandler) {
	b.Helper()
	if _, err := srv.Do("FLUSHALL"); err != nil {
		b.Fatal(err)
	}
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	b.Cleanup(func() { client.Close() })
	broker, err := redis.New(redis.Options{Client: client})
	if err != nil {
		b.Fatal(err)
	}
	h := countingHandler{pubs: make(chan channels.Publication, 16)}
	if err := broker.Start(h); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { broker.Close() })
	return broker, h
}
