// Command peer is the open-source hub herald is compared with, run on the
// same machine and driven by the same load: a server built on
// github.com/centrifugal/centrifuge, the library Centrifugo is made of, set
// up as Centrifugo runs with its Redis engine and history and recovery on.
//
//   - Clients speak Centrifuge's own JSON protocol over its own websocket
//     transport, with the library's defaults: they connect with an HS256
//     JWT (verified with golang-jwt, as herald verifies its tokens) and
//     subscribe to channels with recovery and positioning on.
//   - POST /v1/publish takes herald's body ({"channel","data"}) with the
//     API key as a Bearer token, as Centrifugo's HTTP API takes its
//     publish command, and publishes with history (Redis streams, the
//     library's default) through Node.Publish, as that API does.
//
// It is its own module so that herald's module does not depend on
// Centrifuge. herald-bench talks to it with -protocol centrifuge.
//
//	peer -addr 127.0.0.1:8091 -redis 127.0.0.1:6379 -jwt-secret S -api-key K
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/centrifugal/centrifuge"
	"github.com/golang-jwt/jwt/v5"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8091", "listen address")
	redisAddr := flag.String("redis", "", "Redis address (required)")
	secret := flag.String("jwt-secret", "", "HS256 secret of client tokens (or PEER_JWT_SECRET)")
	apiKey := flag.String("api-key", "", "key of POST /v1/publish (or PEER_API_KEY)")
	historySize := flag.Int("history-size", 1000, "publications kept per channel")
	historyTTL := flag.Duration("history-ttl", 24*time.Hour, "how long a channel's history is kept")
	ping := flag.Duration("ping", 0, "server ping interval; the pong is due within 9/10 of it [the library's 25s and 8s]")
	flag.Parse()
	if *secret == "" {
		*secret = os.Getenv("PEER_JWT_SECRET")
	}
	if *apiKey == "" {
		*apiKey = os.Getenv("PEER_API_KEY")
	}
	if *redisAddr == "" || *secret == "" || *apiKey == "" {
		log.Fatal("peer: -redis, -jwt-secret and -api-key are required")
	}

	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelError,
		LogHandler: func(e centrifuge.LogEntry) { log.Printf("peer: %s %v", e.Message, e.Fields) }})
	if err != nil {
		log.Fatal(err)
	}
	shard, err := centrifuge.NewRedisShard(node, centrifuge.RedisShardConfig{Address: *redisAddr})
	if err != nil {
		log.Fatal(err)
	}
	broker, err := centrifuge.NewRedisBroker(node, centrifuge.RedisBrokerConfig{Shards: []*centrifuge.RedisShard{shard}})
	if err != nil {
		log.Fatal(err)
	}
	node.SetBroker(broker)

	node.OnConnecting(func(_ context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		c, err := verify(e.Token, []byte(*secret))
		if err != nil {
			return centrifuge.ConnectReply{}, centrifuge.DisconnectInvalidToken
		}
		info, _ := json.Marshal(map[string]string{"merchant": c.Merchant})
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{
			UserID: c.Subject, ExpireAt: c.ExpiresAt.Unix(), Info: info,
		}}, nil
	})
	node.OnConnect(func(client *centrifuge.Client) {
		client.OnSubscribe(func(e centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			// herald's grants: the user's own channel and the merchant's.
			var info struct{ Merchant string }
			_ = json.Unmarshal(client.Info(), &info)
			if e.Channel != "user:"+client.UserID() && (info.Merchant == "" || e.Channel != "merchant:"+info.Merchant) {
				cb(centrifuge.SubscribeReply{}, centrifuge.ErrorPermissionDenied)
				return
			}
			cb(centrifuge.SubscribeReply{Options: centrifuge.SubscribeOptions{
				EnableRecovery: true, EnablePositioning: true,
			}}, nil)
		})
	})
	if err := node.Run(); err != nil {
		log.Fatal(err)
	}

	wsConfig := centrifuge.WebsocketConfig{}
	if *ping > 0 {
		wsConfig.PingPongConfig = centrifuge.PingPongConfig{PingInterval: *ping, PongTimeout: *ping * 9 / 10}
	}
	http.Handle("GET /ws", centrifuge.NewWebsocketHandler(node, wsConfig))
	http.HandleFunc("POST /v1/publish", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+*apiKey {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		var req struct {
			Channel string          `json:"channel"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Channel == "" || len(req.Data) == 0 {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		res, err := node.Publish(req.Channel, req.Data, centrifuge.WithHistory(*historySize, *historyTTL))
		if err != nil {
			http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"channel":%q,"offset":%d,"epoch":%q}`, req.Channel, res.Offset, res.Epoch)
	})
	http.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	log.Fatal(http.ListenAndServe(*addr, nil))
}

type claims struct {
	Merchant string `json:"merchant,omitempty"`
	jwt.RegisteredClaims
}

func verify(token string, secret []byte) (*claims, error) {
	c := &claims{}
	_, err := jwt.ParseWithClaims(strings.TrimSpace(token), c, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		return nil, err
	}
	return c, nil
}
