package redis

import (
	"context"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Evicting names the Redis servers (masters, on a Cluster) that may evict
// herald's keys under memory pressure, each with its policy: those with a
// memory limit and a policy other than noeviction. Every key herald writes
// expires, so a volatile-* policy evicts them as readily as allkeys-*; an
// evicted dedup key makes a provider's retry a second publication, and an
// evicted log or meta hash starts a new epoch.
func Evicting(ctx context.Context, c goredis.UniversalClient) ([]string, error) {
	var mu sync.Mutex
	var out []string
	check := func(ctx context.Context, n *goredis.Client) error {
		info, err := n.Info(ctx, "memory").Result()
		if err != nil {
			return err
		}
		limit, policy := infoField(info, "maxmemory"), infoField(info, "maxmemory_policy")
		if limit != "" && limit != "0" && policy != "noeviction" {
			mu.Lock()
			out = append(out, n.Options().Addr+" ("+policy+")")
			mu.Unlock()
		}
		return nil
	}
	switch c := c.(type) {
	case *goredis.ClusterClient:
		err := c.ForEachMaster(ctx, check)
		return out, err
	case *goredis.Client:
		return out, check(ctx, c)
	}
	return nil, nil
}

// infoField reads one "name:value" line of an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
