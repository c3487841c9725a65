package server

import (
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// A Redis URL's own timeouts are kept, herald's fill in the rest, and
// retries are refused: they could apply a publish twice.
func TestEngine_RedisURLSettings(t *testing.T) {
	e, err := newEngine(Config{RedisURL: "redis://127.0.0.1:1/0?read_timeout=7s"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	o := e.client.(*goredis.Client).Options() // where go-redis turned "none" (-1) into 0
	if o.ReadTimeout != 7*time.Second || o.WriteTimeout != redisIOTimeout || o.DialTimeout != redisDialTimeout || o.MaxRetries != 0 {
		t.Errorf("read %v, write %v, dial %v, retries %d", o.ReadTimeout, o.WriteTimeout, o.DialTimeout, o.MaxRetries)
	}
	for _, cfg := range []Config{
		{RedisURL: "redis://127.0.0.1:1/0?max_retries=3"},
		{RedisCluster: []string{"redis://127.0.0.1:1?addr=127.0.0.1:2&max_retries=2"}},
	} {
		if _, err := newEngine(cfg); err == nil || !strings.Contains(err.Error(), "max_retries") {
			t.Errorf("%+v: %v, want max_retries refused", cfg, err)
		}
	}
}
