package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
	"herald/channels"
	"herald/channels/memory"
	"herald/hub"
	"herald/ingress"
	"herald/internal/heraldtest"
	"herald/metrics"
)

// BenchmarkFanOut measures HandlePublication, the per-publication fan-out,
// with 100 local subscribers, with and without metrics: the metrics must
// add no allocation and only a constant cost per publication.
func BenchmarkFanOut(b *testing.B) {
	for _, withMetrics := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", withMetrics), func(b *testing.B) {
			var m *metrics.Hub
			if withMetrics {
				m = metrics.New(metrics.Options{Node: "bench", EventTime: ingress.ReceivedAt}).Hub
			}
			benchFanOut(b, m, 100)
		})
	}
}

func benchFanOut(b *testing.B, m *metrics.Hub, subscribers int) {
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(heraldtest.Secret)})
	if err != nil {
		b.Fatal(err)
	}
	broker := memory.New(memory.Options{})
	h, err := hub.New(hub.Options{Broker: broker, Verifier: v, Metrics: m, SendQueueBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	if err := broker.Start(h); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token := heraldtest.Token(b, "42", "")
	var epoch string
	for i := 0; i < subscribers; i++ {
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + token}},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer conn.CloseNow()
		_, _, _ = conn.Read(ctx) // connected
		_ = conn.Write(ctx, websocket.MessageText, []byte(`{"id":1,"type":"subscribe","channel":"user:42"}`))
		_, reply, _ := conn.Read(ctx) // subscribed
		var f struct{ Epoch string }
		_ = json.Unmarshal(reply, &f)
		epoch = f.Epoch
		go func() {
			for {
				if _, _, err := conn.Read(ctx); err != nil {
					return
				}
			}
		}()
	}
	data := []byte(`{"id":"kriptomat:withdrawal.fiat:58463:SUCCESSFUL","provider":"kriptomat","type":"withdrawal.fiat","status":"succeeded","user":"42","merchant":"acme","occurred_at":"2018-11-27T13:46:22.658Z","received_at":"` +
		ingress.FormatTime(time.Now()) + `","amounts":{"amount":{"value":"100.00","currency":"EUR"}},"details":{},"raw":{"user_id":42,"id":58463}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.HandlePublication("user:42", channels.Publication{Offset: uint64(i + 1), Epoch: epoch, Data: data})
	}
}
