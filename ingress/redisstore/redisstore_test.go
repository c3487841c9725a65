package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/ingress"
	"herald/ingress/redisstore"
	"herald/internal/redistest"
)

func client(t *testing.T) (*goredis.Client, *redistest.Server) {
	srv := redistest.Start(t, redistest.Options{})
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c, srv
}

func TestDeadLetters_NewestFirstAndCapped(t *testing.T) {
	c, srv := client(t)
	d := redisstore.NewDeadLetters(c, 3)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if err := d.Add(ctx, ingress.DeadLetter{Provider: "p", Reason: fmt.Sprint(i), Status: 400}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := d.List(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Reason != "4" || got[2].Reason != "2" {
		t.Fatalf("%+v", got)
	}
	// Another node's store sees the same.
	if other, _ := redisstore.NewDeadLetters(c, 3).List(ctx, 1); other[0].Reason != "4" {
		t.Fatalf("%+v", other)
	}
	srv.Kill()
	if err := d.Add(ctx, ingress.DeadLetter{}); !errors.Is(err, channels.ErrUnavailable) {
		t.Fatalf("with Redis down: %v", err)
	}
}

func TestStatuses_OrderAndExpiry(t *testing.T) {
	c, _ := client(t)
	s := redisstore.NewStatuses(c)
	ctx := context.Background()
	steps := []struct {
		status  string
		rank    int
		current string
		stale   bool
	}{
		{"pending", 1, "pending", false},
		{"succeeded", 2, "succeeded", false},
		{"pending", 1, "succeeded", true},
		{"failed", 2, "failed", false},
	}
	for i, st := range steps {
		cur, stale, err := s.Advance(ctx, "t1", st.status, st.rank, time.Hour)
		if err != nil || cur != st.current || stale != st.stale {
			t.Fatalf("step %d: %q %v %v", i, cur, stale, err)
		}
	}
	if _, stale, _ := s.Advance(ctx, "t2", "succeeded", 2, 100*time.Millisecond); stale {
		t.Fatal("fresh transaction stale")
	}
	time.Sleep(300 * time.Millisecond)
	if cur, stale, _ := s.Advance(ctx, "t2", "pending", 1, time.Hour); stale || cur != "pending" {
		t.Fatalf("after expiry: %q %v", cur, stale)
	}
}
