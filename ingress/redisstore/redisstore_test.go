package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

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
	got, more, err := d.List(ctx, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Reason != "4" || got[2].Reason != "2" || more {
		t.Fatalf("%+v, more %v", got, more)
	}
	// Another node's store sees the same.
	if other, _, _ := redisstore.NewDeadLetters(c, 3).List(ctx, 1, 1<<20); other[0].Reason != "4" {
		t.Fatalf("%+v", other)
	}
	srv.Kill()
	if err := d.Add(ctx, ingress.DeadLetter{}); !errors.Is(err, channels.ErrUnavailable) {
		t.Fatalf("with Redis down: %v", err)
	}
}

// A listing is read in pages and stops at its byte bound, but always has
// the newest dead letter.
func TestDeadLetters_ListBoundedByBytes(t *testing.T) {
	c, _ := client(t)
	d := redisstore.NewDeadLetters(c, 1000)
	ctx := context.Background()
	body := strings.Repeat("b", 1000)
	one, _ := json.Marshal(ingress.DeadLetter{Provider: "p", Reason: "10", Body: body}) // as stored
	for i := range 100 {
		if err := d.Add(ctx, ingress.DeadLetter{Provider: "p", Reason: fmt.Sprint(i), Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		limit, maxBytes int
		want            int
		more            bool
	}{
		{100, 1 << 20, 100, false}, // across pages
		{70, 1 << 20, 70, false},
		{100, 39*len(one) + len(one)/2, 39, true},
		{100, 10, 1, true},
		{1, 10, 1, false},
	} {
		got, more, err := d.List(ctx, tc.limit, tc.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want || more != tc.more {
			t.Fatalf("List(%d, %d): %d, more %v; want %d, more %v", tc.limit, tc.maxBytes, len(got), more, tc.want, tc.more)
		}
		for i, dl := range got {
			if dl.Reason != fmt.Sprint(99-i) || dl.Body != body {
				t.Fatalf("List(%d, %d)[%d] = %q, want %d, newest first", tc.limit, tc.maxBytes, i, dl.Reason, 99-i)
			}
		}
	}
}

// A listing is one snapshot: dead letters added while it is read shift
// nothing under it, so none is listed twice or left out between pages.
func TestDeadLetters_ListIsASnapshot(t *testing.T) {
	c, _ := client(t)
	d := redisstore.NewDeadLetters(c, 10000)
	ctx := context.Background()
	add := func(i int) {
		if err := d.Add(ctx, ingress.DeadLetter{Provider: "p", Reason: fmt.Sprint(i)}); err != nil {
			t.Error(err)
		}
	}
	for i := range 200 {
		add(i)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 200; i < 2200; i++ {
			add(i)
		}
	}()
	listings := 0
	for adding := true; adding; listings++ {
		select {
		case <-done:
			adding = false
		default:
		}
		got, _, err := d.List(ctx, 1000, 1<<30)
		if err != nil {
			t.Error(err)
			break
		}
		for i := 1; i < len(got); i++ {
			prev, _ := strconv.Atoi(got[i-1].Reason)
			if cur, _ := strconv.Atoi(got[i].Reason); cur != prev-1 {
				t.Errorf("listing %d: %d after %d, want %d", listings, cur, prev, prev-1)
				break
			}
		}
	}
	<-done
	if listings < 10 {
		t.Errorf("only %d listings while adding", listings)
	}
}
