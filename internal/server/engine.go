package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/channels/memory"
	"herald/channels/redis"
	"herald/ingress"
	"herald/ingress/redisstore"
)

// engine is what a node keeps its shared state in: the channel logs, and
// the ingress's dead letters.
type engine struct {
	broker      channels.Broker
	deadLetters ingress.DeadLetterStore
	// appender appends and ranks a webhook's event on Redis; nil on the
	// embedded broker, where the ingress ranks in memory and publishes to
	// each channel.
	appender channels.Appender
	client   goredis.UniversalClient // nil for the embedded broker
}

// Redis client timeouts: a paused or unreachable Redis turns into a 503 or
// an "unavailable" answer within this, never a hung request.
const (
	redisDialTimeout = 2 * time.Second
	redisIOTimeout   = 2 * time.Second
)

// redisClientSettings gives the Redis client herald's timeouts where the
// URL set none (dial_timeout, read_timeout, write_timeout), and no
// retries: a publish whose reply was lost may have been applied, so the
// caller (a provider, an API client) retries with its idempotency key
// instead. A URL asking for retries is refused rather than overruled.
func redisClientSettings(dial, read, write *time.Duration, retries *int) error {
	if *retries > 0 {
		return fmt.Errorf("max_retries=%d: herald never retries a Redis call blindly (a publish whose reply was lost may have been applied)", *retries)
	}
	*retries = -1
	for _, d := range []struct {
		name string
		set  *time.Duration
		def  time.Duration
	}{{"dial_timeout", dial, redisDialTimeout}, {"read_timeout", read, redisIOTimeout}, {"write_timeout", write, redisIOTimeout}} {
		switch {
		case *d.set < 0:
			// go-redis reads 0 or less in a URL as "no timeout": a paused
			// Redis would then hang requests for good.
			return fmt.Errorf("%s: want a positive duration", d.name)
		case *d.set == 0:
			*d.set = d.def
		}
	}
	return nil
}

func newEngine(cfg Config) (*engine, error) {
	if cfg.Broker != nil {
		return &engine{broker: cfg.Broker, deadLetters: ingress.NewMemoryDeadLetters(1000)}, nil
	}
	var client goredis.UniversalClient
	switch {
	case cfg.RedisURL != "" && len(cfg.RedisCluster) > 0:
		return nil, errors.New("set a Redis URL or Redis Cluster addresses, not both")
	case cfg.RedisURL != "":
		opts, err := goredis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("HERALD_REDIS_URL: %w", withoutURL(err))
		}
		if err := redisClientSettings(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.MaxRetries); err != nil {
			return nil, fmt.Errorf("HERALD_REDIS_URL: %w", err)
		}
		client = goredis.NewClient(opts)
	case len(cfg.RedisCluster) > 0:
		opts := &goredis.ClusterOptions{Addrs: cfg.RedisCluster}
		if len(cfg.RedisCluster) == 1 && strings.Contains(cfg.RedisCluster[0], "://") {
			// redis[s]://user:password@seed?addr=seed2&addr=seed3: a
			// cluster that wants a password or TLS.
			var err error
			if opts, err = goredis.ParseClusterURL(cfg.RedisCluster[0]); err != nil {
				return nil, fmt.Errorf("HERALD_REDIS_CLUSTER: %w", withoutURL(err))
			}
		}
		if err := redisClientSettings(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.MaxRetries); err != nil {
			return nil, fmt.Errorf("HERALD_REDIS_CLUSTER: %w", err)
		}
		client = goredis.NewClusterClient(opts)
	default:
		return &engine{
			broker: memory.New(memory.Options{
				HistorySize:    cfg.HistorySize,
				HistoryTTL:     cfg.HistoryTTL,
				IdempotencyTTL: cfg.DedupWindow,
			}),
			deadLetters: ingress.NewMemoryDeadLetters(1000),
		}, nil
	}
	broker, err := redis.New(redis.Options{
		Client:         client,
		HistorySize:    cfg.HistorySize,
		HistoryTTL:     cfg.HistoryTTL,
		IdempotencyTTL: cfg.DedupWindow,
		Logger:         cfg.Logger,
	})
	if err != nil {
		client.Close()
		return nil, err
	}
	go warnEviction(cfg.Logger, client)
	return &engine{
		broker:      broker,
		deadLetters: redisstore.NewDeadLetters(client, 1000),
		appender:    broker.Appender(),
		client:      client,
	}, nil
}

// close releases an engine that never started serving.
func (e *engine) close() {
	_ = e.broker.Close()
	_ = e.closeClient()
}

func (e *engine) closeClient() error {
	if e.client == nil {
		return nil
	}
	return e.client.Close()
}

// withoutURL drops the URL a parse error quotes: it may hold a password,
// and the error is printed.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// warnEviction says once, as soon as Redis answers (it is tried for a
// minute), if Redis may evict herald's keys: then a provider's retry can
// be published twice and a channel's log lost. Managed Redis often forbids
// CONFIG, so this warns rather than refuses.
func warnEviction(log *slog.Logger, client goredis.UniversalClient) {
	for try := 0; try < 12; try++ {
		if try > 0 {
			time.Sleep(5 * time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		evicting, err := redis.Evicting(ctx, client)
		cancel()
		if errors.Is(err, goredis.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if len(evicting) > 0 {
			log.Warn("Redis may evict herald's keys under memory pressure (a memory limit and a policy other than noeviction): a provider's retry can then be published twice, and a channel's history lost; set maxmemory-policy noeviction",
				"servers", strings.Join(evicting, ", "))
		}
		return
	}
}
