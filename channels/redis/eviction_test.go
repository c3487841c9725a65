package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/channels/channelstest"
	"herald/channels/redis"
	"herald/internal/redistest"
)

// A Redis that may evict herald's keys is named; one that may not (no
// memory limit, or noeviction) is not.
func TestEvicting(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { c.Close() })
	for _, tc := range []struct {
		limit, policy string
		evicting      bool
	}{
		{"0", "volatile-lru", false}, // no limit: nothing is evicted
		{"100mb", "noeviction", false},
		{"100mb", "volatile-lru", true}, // every key herald writes expires
		{"100mb", "allkeys-lru", true},
	} {
		if _, err := srv.Do("CONFIG", "SET", "maxmemory", tc.limit, "maxmemory-policy", tc.policy); err != nil {
			t.Fatal(err)
		}
		got, err := redis.Evicting(context.Background(), c)
		if err != nil || (len(got) == 1) != tc.evicting || tc.evicting && !strings.Contains(got[0], tc.policy) {
			t.Errorf("maxmemory %s, %s: %v, %v", tc.limit, tc.policy, got, err)
		}
	}
}

// A full Redis under noeviction refuses writes until memory is freed: a
// publication is then unavailable (the caller retries: 503), not a fault
// of herald's (500).
func TestFullRedisIsUnavailable(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { c.Close() })
	b := newBroker(t, c, channelstest.Options{}, newGatedHandler())
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	publish := func() error {
		_, err := b.Publish(ctx, "user:1", json.RawMessage(`{"n":1}`), channels.PublishOptions{})
		return err
	}
	if err := publish(); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Do("CONFIG", "SET", "maxmemory", "1", "maxmemory-policy", "noeviction"); err != nil {
		t.Fatal(err)
	}
	if err := publish(); !errors.Is(err, channels.ErrUnavailable) || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("publishing to a full Redis: %v, want unavailable (OOM)", err)
	}
	if _, err := srv.Do("CONFIG", "SET", "maxmemory", "0"); err != nil {
		t.Fatal(err)
	}
	if err := publish(); err != nil {
		t.Fatalf("publishing once memory is freed: %v", err)
	}
}
