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
//	floor -addr 127.0.0.1:8090
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"sync"

	"github.com/coder/websocket"
)

type hub struct {
	// order is held from numbering a publication to its last write, so
	// that every subscriber gets a channel's publications in order.
	order   sync.Mutex
	mu      sync.Mutex
	subs    map[string]map[*websocket.Conn]bool
	offsets map[string]uint64
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Parse()
	h := &hub{subs: map[string]map[*websocket.Conn]bool{}, offsets: map[string]uint64{}}
	http.HandleFunc("GET /ws", h.serveWS)
	http.HandleFunc("POST /v1/publish", h.publish)
	log.Fatal(http.ListenAndServe(*addr, nil))
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
		if h.subs[f.Channel] == nil {
			h.subs[f.Channel] = map[*websocket.Conn]bool{}
		}
		h.subs[f.Channel][conn] = true
		offset := h.offsets[f.Channel]
		h.mu.Unlock()
		joined = append(joined, f.Channel)
		reply := fmt.Sprintf(`{"id":%d,"type":"subscribed","channel":%q,"epoch":"floor","offset":%d,"recovered":false}`, f.ID, f.Channel, offset)
		if conn.Write(ctx, websocket.MessageText, []byte(reply)) != nil {
			return
		}
	}
}

// publish encodes the publication once and writes it to every subscriber,
// one after the other, before answering.
func (h *hub) publish(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Data) == 0 {
		http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
		return
	}
	h.order.Lock()
	defer h.order.Unlock()
	h.mu.Lock()
	h.offsets[req.Channel]++
	offset := h.offsets[req.Channel]
	conns := make([]*websocket.Conn, 0, len(h.subs[req.Channel]))
	for c := range h.subs[req.Channel] {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	frame := []byte(`{"type":"pub","channel":` + strconv.Quote(req.Channel) + `,"offset":` +
		strconv.FormatUint(offset, 10) + `,"epoch":"floor","data":` + string(req.Data) + `}`)
	for _, c := range conns {
		_ = c.Write(context.Background(), websocket.MessageText, frame)
	}
	fmt.Fprintf(w, `{"channel":%q,"offset":%d,"epoch":"floor"}`, req.Channel, offset)
}
