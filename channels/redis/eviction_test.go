package redis_test

import (
	"context"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

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
