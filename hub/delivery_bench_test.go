package hub_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"herald/auth"
	"herald/channels"
	"herald/channels/memory"
	"herald/hub"
	"herald/internal/heraldtest"
)

// BenchmarkDeliver measures the whole way of a publication out of the hub
// to its local subscribers: encoding, queueing and the writers, down to
// connections whose every write is a system call on /dev/null. What the
// kernel adds per write on a socket is herald-bench's to measure. One op
// is one publication, delivered to every subscriber before the next;
// ns/delivery divides by the subscribers.
func BenchmarkDeliver(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) { benchDeliver(b, n) })
	}
}

func benchDeliver(b *testing.B, subscribers int) {
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(heraldtest.Secret)})
	if err != nil {
		b.Fatal(err)
	}
	broker := memory.New(memory.Options{})
	h, err := hub.New(hub.Options{Broker: broker, Verifier: v, PingInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if err := broker.Start(h); err != nil {
		b.Fatal(err)
	}
	defer broker.Close()
	defer h.Close()

	sink := &frameSink{done: make(chan struct{}, 1)}
	token := heraldtest.Token(b, "42", "")
	subscribe := clientFrame(`{"id":1,"type":"subscribe","channel":"user:42"}`)
	conns := make([]*sinkConn, subscribers)
	for i := range conns {
		conns[i] = &sinkConn{sink: sink, in: bytes.NewReader(subscribe), closed: make(chan struct{})}
		r := upgradeRequest(token)
		// One address per client, as herald limits connections per address.
		r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:40000", i>>16&255, i>>8&255, i&255)
		go h.ServeHTTP(&hijackable{conn: conns[i]}, r)
	}
	// Each session has written connected and subscribed once it is live.
	if !sink.await(int64(2*subscribers), time.Minute) {
		b.Fatalf("%d frames written, want connected and subscribed for each of %d sessions", sink.frames.Load(), subscribers)
	}

	data := bytes.Repeat([]byte("x"), 1000)
	data[0], data[len(data)-1] = '"', '"'
	pos, _ := broker.History(b.Context(), "user:42", channels.HistoryOptions{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		target := sink.frames.Load() + int64(subscribers)
		sink.target.Store(target)
		h.HandlePublication("user:42", channels.Publication{Offset: uint64(i + 1), Epoch: pos.Epoch, Data: data})
		if !sink.await(target, time.Minute) {
			b.Fatalf("publication %d: %d of %d deliveries", i+1, sink.frames.Load()-target+int64(subscribers), subscribers)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subscribers), "ns/delivery")
	for _, c := range conns {
		_ = c.Close()
	}
}

// clientFrame is a masked text frame, as a browser sends it.
func clientFrame(payload string) []byte { return wsFrame(1, []byte(payload)) }

func upgradeRequest(token string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	r.Header.Set("Sec-WebSocket-Protocol", hub.Subprotocol)
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

// hijackable is a ResponseWriter whose connection is a sinkConn.
type hijackable struct {
	conn   *sinkConn
	header http.Header
}

func (w *hijackable) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}
func (w *hijackable) Write(p []byte) (int, error) { return len(p), nil }
func (w *hijackable) WriteHeader(int)             {}
func (w *hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.conn, bufio.NewReadWriter(bufio.NewReader(w.conn), bufio.NewWriter(w.conn)), nil
}

// frameSink counts the server frames written to every sinkConn and wakes
// the benchmark when the count reaches target.
type frameSink struct {
	frames atomic.Int64
	target atomic.Int64
	done   chan struct{}
}

func (s *frameSink) add(n int64) {
	if n > 0 && s.frames.Add(n) >= s.target.Load() {
		select {
		case s.done <- struct{}{}:
		default:
		}
	}
}

// await waits until n frames were written, or reports false after d.
func (s *frameSink) await(n int64, d time.Duration) bool {
	s.target.Store(n)
	deadline := time.Now().Add(d)
	for s.frames.Load() < n {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-s.done:
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

// sinkConn serves a few client frames, then blocks reading until closed;
// what is written to it is parsed into frames and counted, not kept.
type sinkConn struct {
	sink   *frameSink
	in     *bytes.Reader
	closed chan struct{}
	once   sync.Once

	mu   sync.Mutex
	head []byte // the header of the frame being written, while incomplete
	left int64  // payload bytes of the current frame still to come
}

func (c *sinkConn) Read(p []byte) (int, error) {
	if c.in.Len() > 0 {
		return c.in.Read(p)
	}
	<-c.closed
	return 0, net.ErrClosed
}

func (c *sinkConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	var complete int64
	for rest := p; len(rest) > 0; {
		if c.left > 0 {
			k := min(c.left, int64(len(rest)))
			c.left -= k
			rest = rest[k:]
			if c.left == 0 {
				complete++
			}
			continue
		}
		c.head = append(c.head, rest[0])
		rest = rest[1:]
		if n, ok := payloadLen(c.head); ok {
			c.head = c.head[:0]
			if c.left = n; n == 0 {
				complete++
			}
		}
	}
	c.mu.Unlock()
	c.sink.add(complete)
	// A write costs what the fastest descriptor takes, as through
	// SyscallConn.
	return devNull.Write(p)
}

// payloadLen reads an unmasked frame header, once it is complete.
func payloadLen(h []byte) (int64, bool) {
	if len(h) < 2 {
		return 0, false
	}
	switch n := h[1] & 0x7f; n {
	case 126:
		if len(h) < 4 {
			return 0, false
		}
		return int64(h[2])<<8 | int64(h[3]), true
	case 127:
		if len(h) < 10 {
			return 0, false
		}
		var v int64
		for _, x := range h[2:10] {
			v = v<<8 | int64(x)
		}
		return v, true
	default:
		return int64(n), true
	}
}

// SyscallConn gives the hub's writes that never wait a descriptor:
// /dev/null, which takes every write whole. Each such write is one frame.
func (c *sinkConn) SyscallConn() (syscall.RawConn, error) { return nullRaw{c}, nil }

type nullRaw struct{ c *sinkConn }

func (r nullRaw) Control(f func(uintptr)) error { f(devNull.Fd()); return nil }
func (r nullRaw) Read(func(uintptr) bool) error { return errors.New("sinkConn: no reads") }
func (r nullRaw) Write(f func(uintptr) bool) error {
	select {
	case <-r.c.closed:
		return net.ErrClosed
	default:
	}
	f(devNull.Fd())
	r.c.sink.add(1)
	return nil
}

var devNull = func() *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		panic(err)
	}
	return f
}()

func (c *sinkConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *sinkConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080} }
func (c *sinkConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *sinkConn) SetDeadline(time.Time) error      { return nil }
func (c *sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkConn) SetWriteDeadline(time.Time) error { return nil }
