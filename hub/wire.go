package hub

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// What a connection is read and written through. On hijack net/http hands
// coder/websocket 4 KiB buffers for each direction, which it keeps for
// the connection's life: 8 KiB of every idle client. herald hands it
// small ones instead, and gathers what is written in wire, in a buffer
// from a pool that a connection holds only while writing.
const (
	// readBufferSize fits any frame a client sends in normal use (the
	// library reads larger ones past the buffer).
	readBufferSize = 512
	// writeBufferSize is the library's write buffer: a frame header and a
	// little; wire gathers the rest of each frame.
	writeBufferSize = 64
	// maxGather bounds what wire keeps before writing while held.
	maxGather = 64 << 10
)

// upgrader is the ResponseWriter Accept sees: its Hijack gives the library
// a wire and small buffers in place of net/http's.
type upgrader struct {
	http.ResponseWriter
	wire *wire
}

// Unwrap lets http.ResponseController reach the server's writer.
func (u *upgrader) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// Hijack implements http.Hijacker.
func (u *upgrader) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	u.wire = &wire{Conn: conn}
	// net/http may have read what the client sent right after the upgrade
	// request. Accept keeps what the returned reader has buffered, so it
	// goes into ours first.
	early := brw.Reader.Buffered()
	var src io.Reader = u.wire
	if early > 0 {
		b, _ := brw.Reader.Peek(early)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), u.wire)
	}
	r := bufio.NewReaderSize(src, max(readBufferSize, early))
	if _, err := r.Peek(early); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return u.wire, bufio.NewReadWriter(r, bufio.NewWriterSize(u.wire, writeBufferSize)), nil
}

// wire is a hijacked connection as coder/websocket writes to it. The
// library flushes its writer at the end of every message, in pieces as
// small as its buffer; wire gathers them and writes each frame once it is
// complete, in one system call. While held — the session's writer has
// more frames queued — it keeps gathering, so that a client that fell
// behind gets its backlog in a few large writes instead of one per frame.
// Control frames (ping, pong, close) are never held back.
//
// The library writes a connection under one lock of its own, so Write is
// never called concurrently; wire's lock only guards its buffer against
// Close, and is not held across the network write.
type wire struct {
	net.Conn
	held atomic.Bool

	mu    sync.Mutex
	buf   *[]byte // gathered bytes, from gatherPool; nil when there are none
	whole int     // length of the prefix of buf made of complete frames
}

var gatherPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// hold makes wire gather complete frames rather than write them (on) or
// go back to writing each (off): the next complete frame then goes out
// with everything gathered before it. A nil wire does not gather.
func (w *wire) hold(on bool) {
	if w != nil {
		w.held.Store(on)
	}
}

// Write gathers p and writes out the complete frames when it should.
func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.buf == nil {
		w.buf = gatherPool.Get().(*[]byte)
	}
	*w.buf = append(*w.buf, p...)
	b := *w.buf
	n, control := wholeFrames(b[w.whole:])
	w.whole += n
	// Keep gathering while held, and while a frame is half written: its
	// end follows at once and goes out with what came before.
	if w.whole == 0 || (!control && w.whole < maxGather && (w.held.Load() || w.whole < len(b))) {
		w.mu.Unlock()
		return len(p), nil
	}
	out, whole := w.buf, w.whole
	w.buf, w.whole = nil, 0
	if tail := b[whole:]; len(tail) > 0 {
		// The start of the next frame stays gathered.
		w.buf = gatherPool.Get().(*[]byte)
		*w.buf = append(*w.buf, tail...)
	}
	w.mu.Unlock()
	_, err := w.Conn.Write(b[:whole])
	if cap(b) <= 2*maxGather {
		*out = b[:0]
		gatherPool.Put(out)
	}
	return len(p), err
}

// Close closes the connection and drops what was gathered.
func (w *wire) Close() error {
	w.mu.Lock()
	w.buf, w.whole = nil, 0
	w.mu.Unlock()
	return w.Conn.Close()
}

// wholeFrames returns the length of the complete websocket frames at the
// start of b, and whether one of them is a control frame.
func wholeFrames(b []byte) (n int, control bool) {
	for {
		size, ok := frameSize(b[n:])
		if !ok || size > len(b)-n {
			return n, control
		}
		control = control || b[n]&0x08 != 0
		n += size
	}
}

// frameSize reads a frame header and returns the frame's whole length,
// or false while the header is incomplete.
func frameSize(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	head, size := 2, int(b[1]&0x7f)
	switch size {
	case 126:
		if len(b) < 4 {
			return 0, false
		}
		head, size = 4, int(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return 0, false
		}
		head, size = 10, int(binary.BigEndian.Uint64(b[2:]))
	}
	if b[1]&0x80 != 0 {
		head += 4 // masked: a client's frame, never written here
	}
	return head + size, true
}
