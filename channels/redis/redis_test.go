package redis_test

import (
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/channels/channelstest"
	"herald/channels/redis"
	"herald/internal/redistest"
)

func newBroker(t *testing.T, client goredis.UniversalClient, o channelstest.Options, h channels.Handler) channels.Broker {
	b, err := redis.New(redis.Options{Client: client, HistorySize: o.HistorySize, HistoryTTL: o.HistoryTTL, HealthInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(h); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	channelstest.Run(t, func(t *testing.T, o channelstest.Options, h channels.Handler) channels.Broker {
		if _, err := srv.Do("FLUSHALL"); err != nil {
			t.Fatal(err)
		}
		client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { client.Close() })
		return newBroker(t, client, o, h)
	})
}

func TestConformance_Cluster(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	channelstest.Run(t, func(t *testing.T, o channelstest.Options, h channels.Handler) channels.Broker {
		for _, n := range cluster.Nodes {
			if _, err := n.Do("FLUSHALL"); err != nil {
				t.Fatal(err)
			}
		}
		client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: cluster.Addrs()})
		t.Cleanup(func() { client.Close() })
		return newBroker(t, client, o, h)
	})
}
