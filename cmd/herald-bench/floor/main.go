// Command floor is the bare hub herald is measured against: it accepts
// coder/websocket connections and writes each publication, encoded once,
// straight to every subscriber's socket in turn. No authentication, no
// history, no queues, no per-client goroutine but the reader — whatever
// herald spends beyond this is the price of its features.
//
// It speaks just enough of herald's protocol for herald-bench: a
// connected frame, subscribe answered with subscribed, pub frames of the
// same shape, and POST /v1/publish.
//
// With -redis it is the floor of a hub on Redis: a publication's offset
// comes from one script (INCR and SPUBLISH, one round trip), and
// subscribers get it from the sharded pub/sub message, as on a node that
// shares its channels with others. No history, no idempotency.
//
//	floor -addr 127.0.0.1:8090 [-redis 127.0.0.1:6379]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"
	goredis "github.com/redis/go-redis/v9"
)

type hub struct {
	// order is held from numbering a publication to its last write, so
	// that every subscriber gets a channel's publications in order.
	order   sync.Mutex
	mu      sync.Mutex
	subs    map[string]map[*websocket.Conn]bool
	offsets map[string]uint64

	redis *goredis.Client // nil: offsets in memory
	feed  *goredis.PubSub
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	redisAddr := flag.String("redis", "", "Redis address: number and deliver publications through Redis")
	flag.Parse()
	h := &hub{subs: map[string]map[*websocket.Conn]bool{}, offsets: map[string]uint64{}}
	if *redisAddr != "" {
		h.redis = goredis.NewClient(&goredis.Options{Addr: *redisAddr})
		h.feed = h.redis.SSubscribe(context.Background())
		go h.receive()
	}
	http.HandleFunc("GET /ws", h.serveWS)
	http.HandleFunc("POST /v1/publish", h.publish)
	log.Fatal(http.ListenAndServe(*addr, nil))
}

// publishScript numbers a publication and notifies every node.
var publishScript = goredis.NewScript(`
local offset = redis.call('INCR', KEYS[1])
redis.call('SPUBLISH', KEYS[1], offset .. ':' .. ARGV[1])
return offset`)

// receive writes each publication Redis notifies to the channel's
// subscribers.
func (h *hub) receive() {
	for {
		m, err := h.feed.ReceiveMessage(context.Background())
		if err != nil {
			log.Fatalf("floor: redis pub/sub: %v", err)
		}
		off, data, _ := strings.Cut(m.Payload, ":")
		offset, _ := strconv.ParseUint(off, 10, 64)
		h.deliver(m.Channel, offset, json.RawMessage(data))
	}
}

// serveWS reads client frames until the connection ends; a subscribe adds
// the connection to the channel's subscribers.
func (h *hub) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"herald.v1"}})
	if err != nil {
		return
	}
	ctx := context.Background()
	defer conn.CloseNow()
	var joined []string
	defer func() {
		h.mu.Lock()
		for _, ch := range joined {
			delete(h.subs[ch], conn)
		}
		h.mu.Unlock()
	}()
	if conn.Write(ctx, websocket.MessageText, []byte(`{"type":"connected"}`)) != nil {
		return
	}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		var f struct {
			ID      int64  `json:"id"`
			Type    string `json:"type"`
			Channel string `json:"channel"`
		}
		if json.Unmarshal(b, &f) != nil || f.Type != "subscribe" {
			continue
		}
		h.mu.Lock()
		first := h.subs[f.Channel] == nil
		if first {
			h.subs[f.Channel] = map[*websocket.Conn]bool{}
		}
		h.subs[f.Channel][conn] = true
		offset := h.offsets[f.Channel]
		h.mu.Unlock()
		if h.redis != nil {
			if first && h.feed.SSubscribe(ctx, f.Channel) != nil {
				return
			}
			n, err := h.redis.Get(ctx, f.Channel).Uint64()
			if err != nil && err != goredis.Nil {
				return
			}
			offset = n
		}
		joined = append(joined, f.Channel)
		reply := fmt.Sprintf(`{"id":%d,"type":"subscribed","channel":%q,"epoch":"floor","offset":%d,"recovered":false}`, f.ID, f.Channel, offset)
		if conn.Write(ctx, websocket.MessageText, []byte(reply)) != nil {
			return
		}
	}
}

// publish numbers the publication and, without Redis, writes it to every
// subscriber before answering.
func (h *hub) publish(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Data) == 0 {
		http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
		return
	}
	var offset uint64
	if h.redis != nil {
		n, err := publishScript.Run(r.Context(), h.redis, []string{req.Channel}, []byte(req.Data)).Uint64()
		if err != nil {
			http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		offset = n
	} else {
		h.order.Lock()
		defer h.order.Unlock()
		h.mu.Lock()
		h.offsets[req.Channel]++
		offset = h.offsets[req.Channel]
		h.mu.Unlock()
		h.deliver(req.Channel, offset, req.Data)
	}
	fmt.Fprintf(w, `{"channel":%q,"offset":%d,"epoch":"floor"}`, req.Channel, offset)
}

// deliver encodes a publication once and writes it to every subscriber,
// one after the other.
func (h *hub) deliver(channel string, offset uint64, data json.RawMessage) {
	h.mu.Lock()
	conns := make([]*websocket.Conn, 0, len(h.subs[channel]))
	for c := range h.subs[channel] {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	frame := []byte(`{"type":"pub","channel":` + strconv.Quote(channel) + `,"offset":` +
		strconv.FormatUint(offset, 10) + `,"epoch":"floor","data":` + string(data) + `}`)
	for _, c := range conns {
		_ = c.Write(context.Background(), websocket.MessageText, frame)
	}
}
