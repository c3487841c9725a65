package server

import (
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// A Redis URL's own timeouts are kept, herald's fill in the rest, and
// retries are refused: they could apply a publish twice. So is no timeout,
// which would let a paused Redis hang requests.
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
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{RedisURL: "redis://127.0.0.1:1/0?max_retries=3"}, "max_retries"},
		{Config{RedisCluster: []string{"redis://127.0.0.1:1?addr=127.0.0.1:2&max_retries=2"}}, "max_retries"},
		{Config{RedisURL: "redis://127.0.0.1:1/0?read_timeout=0"}, "read_timeout: want a positive duration"},
		{Config{RedisURL: "redis://127.0.0.1:1/0?dial_timeout=-1s"}, "dial_timeout"},
	} {
		if _, err := newEngine(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
