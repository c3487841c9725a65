package hub

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/coder/websocket"
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
	// maxGather bounds what wire keeps before writing while held, and
	// the control frames (pongs) it gathers while a write is blocked on a
	// peer that does not read: beyond that the peer is only sending pings
	// to make the node hold its answers, and the connection is closed.
	maxGather = 64 << 10
	// socketSendBuffer is asked of the kernel for each connection (Linux
	// doubles it): enough for 1 MB/s to a client 200 ms away.
	socketSendBuffer = 128 << 10
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
	if tc, ok := conn.(interface{ SetWriteBuffer(int) error }); ok {
		// Left alone, the kernel grows the send buffer of a client that
		// reads slowly to megabytes (tcp_wmem): memory beyond the send
		// queue that is meant to bound what waits for one client, and a
		// backlog that the close frame telling it 4009 must wait behind.
		_ = tc.SetWriteBuffer(socketSendBuffer)
	}
	u.wire = newWire(conn)
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			u.wire.raw, u.wire.try = raw, newRawWrite()
		}
	}
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

// wire is a hijacked connection with everything written to it going
// through one place. The hub writes its own frames (writeFrame): complete
// text frames it built once — a publication's once for all its
// subscribers — so that a delivery is one system call and nothing else.
// coder/websocket writes the rest (pings, pongs, the close handshake)
// through Write, in pieces as small as its buffer; wire gathers those and
// writes each frame once it is whole.
//
// While held (the session's writer has more frames queued) wire gathers
// the hub's frames too, up to maxGather, so that a client that fell behind
// — a resume's missed publications above all — gets its backlog in a few
// large writes instead of one per frame. Control frames are never held
// back, and after a close frame no data frame goes out.
//
// One goroutine writes to the connection at a time, the others leave what
// they gathered to it, so frames keep their order and no lock is held
// across the network write.
type wire struct {
	net.Conn
	// raw writes without waiting (tryWrite); nil when the connection has
	// no file descriptor.
	raw  syscall.RawConn
	try  *rawWrite
	held atomic.Bool

	mu       sync.Mutex
	idle     sync.Cond // signalled when flushing ends; L is &mu
	buf      *[]byte   // gathered bytes, from gatherPool; nil when there are none
	whole    int       // length of the prefix of buf made of complete frames
	urgent   bool      // a control frame is gathered
	flushing bool      // a goroutine is writing; it writes what is gathered meanwhile
	// closeCode is the code of the close frame gathered (1005 when it has
	// none), 0 before one; no data frame may follow it.
	closeCode websocket.StatusCode
}

func newWire(conn net.Conn) *wire {
	w := &wire{Conn: conn}
	w.idle.L = &w.mu
	return w
}

// doneFlushing marks the connection free to write again and wakes those
// waiting for that (waitIdle). w.mu is held.
func (w *wire) doneFlushing() {
	w.flushing = false
	w.idle.Broadcast()
}

// waitIdle waits until nobody is writing. w.mu is held.
func (w *wire) waitIdle() {
	for w.flushing {
		w.idle.Wait()
	}
}

// errStalled ends a connection whose peer sends but does not read.
var errStalled = errors.New("peer does not read what it asks for")

var gatherPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// hold makes wire gather complete frames rather than write them (on) or
// go back to writing each (off): the next complete frame then goes out
// with everything gathered before it.
func (w *wire) hold(on bool) { w.held.Store(on) }

// writeFrame writes a complete frame built by the hub. It is only called
// by the session's writer goroutine.
func (w *wire) writeFrame(f []byte) error {
	w.mu.Lock()
	// Someone else (the library, answering a ping) is writing: wait for
	// it rather than gather, so that what the client has not taken stays
	// in its send queue, where it counts against the queue's bound.
	w.waitIdle()
	if w.closeCode != 0 {
		w.mu.Unlock()
		return net.ErrClosed
	}
	if w.buf == nil && !w.held.Load() {
		// The common case: nothing gathered, nobody writing. f goes out
		// as it is, without a copy.
		w.flushing = true
		w.mu.Unlock()
		_, err := w.Conn.Write(f)
		w.mu.Lock()
		w.doneFlushing()
		if err != nil {
			w.mu.Unlock()
			return err
		}
		return w.flush()
	}
	// Ahead of any frame the library is half way through writing.
	b := w.gatherBuf()
	b = slices.Insert(b, w.whole, f...)
	*w.buf = b
	w.whole += len(f)
	return w.flush()
}

// tryWrite writes a complete frame built by the hub if the socket takes
// it at once, and never waits. It writes nothing (n = 0) when the socket
// is full, the connection has no descriptor, or the wire is busy
// (gathering, held or writing); the caller then writes f the usual way.
// When the socket took part of f (0 < n < len(f)) the wire keeps the rest
// to go out before anything else. pending reports that the wire holds
// bytes to flush (that rest, or frames the library wrote meanwhile): the
// caller must then start a writer, whose flushKept writes them.
func (w *wire) tryWrite(f []byte) (n int, pending bool, err error) {
	if w.raw == nil {
		return 0, false, nil
	}
	w.mu.Lock()
	if w.closeCode != 0 {
		w.mu.Unlock()
		return 0, false, net.ErrClosed
	}
	if w.buf != nil || w.flushing || w.held.Load() {
		w.mu.Unlock()
		return 0, false, nil
	}
	w.flushing = true
	w.mu.Unlock()
	w.try.frame = f
	err = w.raw.Write(w.try.write)
	n, werr := max(w.try.n, 0), w.try.err
	w.try.frame = nil
	if werr == syscall.EAGAIN {
		n, werr = 0, nil
	}
	if err == nil {
		err = werr
	}
	w.mu.Lock()
	w.doneFlushing()
	if err == nil && n > 0 && n < len(f) {
		b := slices.Insert(w.gatherBuf(), 0, f[n:]...)
		*w.buf = b
		w.whole += len(f) - n
	}
	pending = w.whole > 0
	w.mu.Unlock()
	return n, pending, err
}

// rawWrite is tryWrite's system call. Its write func, which RawConn.Write
// calls, is made once per connection rather than per write, so that a
// write allocates nothing; only the connection's writer uses it.
type rawWrite struct {
	frame []byte
	n     int
	err   error
	write func(fd uintptr) bool
}

func newRawWrite() *rawWrite {
	r := &rawWrite{}
	r.write = func(fd uintptr) bool {
		for {
			r.n, r.err = syscall.Write(int(fd), r.frame)
			if r.err != syscall.EINTR {
				return true // never wait for the socket
			}
		}
	}
	return r
}

// flushKept writes out what the wire kept, waiting for the socket.
func (w *wire) flushKept() error {
	w.mu.Lock()
	return w.flush()
}

// Write is how coder/websocket writes: it gathers p and writes out the
// complete frames when it should.
func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.flushing && w.buf != nil && len(*w.buf)+len(p) > maxGather {
		w.mu.Unlock()
		w.Conn.Close() // which also ends the write that is blocked
		return 0, errStalled
	}
	b := append(w.gatherBuf(), p...)
	*w.buf = b
	n, control, code := wholeFrames(b[w.whole:])
	w.whole += n
	w.urgent = w.urgent || control
	if code != 0 {
		if w.closeCode == 0 {
			w.closeCode = code
		}
		// The library closes the connection right after its close frame
		// (answering the client's at once), which drops anything still
		// gathered: the frame must be out by then, not left behind the
		// hub's write under way. That write ends, or the library's write
		// timeout closes the connection.
		w.waitIdle()
	}
	return len(p), w.flush()
}

func (w *wire) gatherBuf() []byte {
	if w.buf == nil {
		w.buf = gatherPool.Get().(*[]byte)
	}
	return *w.buf
}

// flush writes out the gathered complete frames, unless someone else is
// writing (they will), it is held, or a frame is half written (its end
// follows at once). w.mu is held on entry and released on return.
func (w *wire) flush() error {
	var err error
	for !w.flushing && w.whole > 0 && err == nil {
		b := *w.buf
		if !w.urgent && w.whole < maxGather && (w.held.Load() || w.whole < len(b)) {
			break
		}
		out, whole := w.buf, w.whole
		w.buf, w.whole, w.urgent = nil, 0, false
		if tail := b[whole:]; len(tail) > 0 {
			w.buf = gatherPool.Get().(*[]byte)
			*w.buf = append(*w.buf, tail...)
		}
		w.flushing = true
		w.mu.Unlock()
		_, err = w.Conn.Write(b[:whole])
		if cap(b) <= 2*maxGather {
			*out = b[:0]
			gatherPool.Put(out)
		}
		w.mu.Lock()
		w.doneFlushing()
	}
	w.mu.Unlock()
	return err
}

// sentClose returns the code of the close frame that went out or is
// about to (1005 for one without a code), or 0 before one.
func (w *wire) sentClose() websocket.StatusCode {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closeCode
}

// Close closes the connection, which ends a write blocked on it, and
// drops what was gathered.
func (w *wire) Close() error {
	err := w.Conn.Close()
	w.mu.Lock()
	w.buf, w.whole = nil, 0
	w.mu.Unlock()
	return err
}

// wholeFrames returns the length of the complete websocket frames at the
// start of b, whether one of them is a control frame, and the code of the
// first close frame among them: 0 when there is none, 1005 when it has no
// code.
func wholeFrames(b []byte) (n int, control bool, closeCode websocket.StatusCode) {
	for {
		size, ok := frameSize(b[n:])
		if !ok || size > len(b)-n {
			return n, control, closeCode
		}
		control = control || b[n]&0x08 != 0
		if b[n]&0x0f == 0x8 && closeCode == 0 {
			// A close frame's payload is at most 125 bytes: a 2-byte
			// header (frames here are unmasked), then the code.
			closeCode = websocket.StatusNoStatusRcvd
			if size >= 4 {
				closeCode = websocket.StatusCode(binary.BigEndian.Uint16(b[n+2:]))
			}
		}
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
