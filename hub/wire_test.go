package hub

import (
	"bytes"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"herald/internal/stacks"
)

// recordingConn keeps each Write as one chunk.
type recordingConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

// frameOf is an unmasked server frame with the given opcode.
func frameOf(opcode byte, payload string) []byte {
	h := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n <= 125:
		h = append(h, byte(n))
	case n <= 0xffff:
		h = append(h, 126, byte(n>>8), byte(n))
	default:
		h = append(h, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(h, payload...)
}

// writePieces writes b as the library's small buffer does: a few bytes,
// then the rest.
func writePieces(t *testing.T, w *wire, b []byte) {
	t.Helper()
	for _, p := range [][]byte{b[:3], b[3:]} {
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
}

func TestWire_WritesEachFrameWholeOnceComplete(t *testing.T) {
	c := &recordingConn{}
	w := newWire(c)
	for _, payload := range []string{"short", string(bytes.Repeat([]byte("x"), 300)), string(bytes.Repeat([]byte("y"), 70000))} {
		f := frameOf(0x1, payload)
		writePieces(t, w, f)
		if got := c.writes[len(c.writes)-1]; !bytes.Equal(got, f) {
			t.Fatalf("wrote %d bytes, want the %d-byte frame whole", len(got), len(f))
		}
	}
	if len(c.writes) != 3 {
		t.Fatalf("%d writes for 3 frames", len(c.writes))
	}
}

func TestWire_HeldFramesGoOutWithTheFirstAfterRelease(t *testing.T) {
	c := &recordingConn{}
	w := newWire(c)
	var want []byte
	w.hold(true)
	for i, s := range []string{"one", "two", "three"} {
		f := frameOf(0x1, s)
		want = append(want, f...)
		if i == 1 {
			if err := w.writeFrame(f); err != nil {
				t.Fatal(err)
			}
			continue
		}
		writePieces(t, w, f)
	}
	if len(c.writes) != 0 {
		t.Fatalf("held frames written: %q", c.writes)
	}
	w.hold(false)
	last := frameOf(0x1, "four")
	want = append(want, last...)
	writePieces(t, w, last)
	if len(c.writes) != 1 || !bytes.Equal(c.writes[0], want) {
		t.Fatalf("writes %q, want one of %q", c.writes, want)
	}
}

func TestWire_ControlFramesAreNeverHeld(t *testing.T) {
	c := &recordingConn{}
	w := newWire(c)
	w.hold(true)
	data, ping := frameOf(0x1, "data"), frameOf(0x9, "")
	writePieces(t, w, data)
	if _, err := w.Write(ping); err != nil {
		t.Fatal(err)
	}
	if want := append(bytes.Clone(data), ping...); len(c.writes) != 1 || !bytes.Equal(c.writes[0], want) {
		t.Fatalf("writes %q, want the gathered frame and the ping at once", c.writes)
	}
}

func TestWire_HoldingStopsAtMaxGather(t *testing.T) {
	c := &recordingConn{}
	w := newWire(c)
	w.hold(true)
	f := frameOf(0x1, string(bytes.Repeat([]byte("z"), 1000)))
	n := 0
	for len(c.writes) == 0 {
		writePieces(t, w, f)
		n++
	}
	if got := len(c.writes[0]); got < maxGather || got > maxGather+len(f) {
		t.Fatalf("first write of %d bytes after %d frames, want just past %d", got, n, maxGather)
	}
}

func TestWire_HubFramesGoOutAsTheyAre(t *testing.T) {
	c := &recordingConn{}
	w := newWire(c)
	f := frameOf(0x1, "publication")
	if err := w.writeFrame(f); err != nil {
		t.Fatal(err)
	}
	if len(c.writes) != 1 || !bytes.Equal(c.writes[0], f) {
		t.Fatalf("writes %q, want %q", c.writes, f)
	}
}

func TestWire_HubFramesGoAheadOfAHalfWrittenLibraryFrame(t *testing.T) {
	c := &recordingConn{}
	w := newWire(c)
	pong := frameOf(0xA, "")
	mine := frameOf(0x1, "mine")
	if _, err := w.Write(pong[:1]); err != nil {
		t.Fatal(err)
	}
	if err := w.writeFrame(mine); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pong[1:]); err != nil {
		t.Fatal(err)
	}
	if want := append(bytes.Clone(mine), pong...); len(c.writes) != 1 || !bytes.Equal(c.writes[0], want) {
		t.Fatalf("writes %q, want %q", c.writes, want)
	}
}

func TestWire_NoDataFrameAfterAClose(t *testing.T) {
	c := &recordingConn{}
	w := newWire(c)
	if _, err := w.Write(frameOf(0x8, "\x0f\xa1")); err != nil {
		t.Fatal(err)
	}
	if err := w.writeFrame(frameOf(0x1, "late")); err == nil {
		t.Fatal("a data frame was accepted after the close frame")
	}
	if len(c.writes) != 1 {
		t.Fatalf("writes %q, want only the close frame", c.writes)
	}
}

// TestWire_ACloseFrameIsWrittenBeforeTheLibraryCloses: the library answers
// a client's close frame and closes the connection at once. If the hub's
// writer is then half way through a frame, the answer must not be left
// gathered behind it, where closing drops it: the client would see the
// connection end without a close frame (1006 instead of its own 1000).
func TestWire_ACloseFrameIsWrittenBeforeTheLibraryCloses(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	w := newWire(server)
	data := frameOf(0x1, "subscribed")
	written := make(chan error, 1)
	go func() { written <- w.writeFrame(data) }() // blocks: the client reads nothing yet
	waitWire := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			w.mu.Lock()
			ok := cond()
			w.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	waitWire("the writer never started", func() bool { return w.flushing })
	closeFrame := frameOf(0x8, "\x03\xe8")
	closed := make(chan error, 1)
	go func() { // what the library does on a client's close frame
		_, err := w.Write(closeFrame)
		w.Close()
		closed <- err
	}()
	// Before the client reads, the close frame's Write must be waiting
	// for the hub's write, so that the Close after it cannot come first. A
	// Write that returned instead lets Close run: that fails at once.
	for deadline := time.Now().Add(10 * time.Second); !stacks.Parked("sync.Cond.Wait", "herald/hub.(*wire).Write("); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-closed:
			t.Fatalf("the close frame's Write returned (%v) while the hub's write was under way", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the close frame's Write neither waits for the hub's write nor returns")
		}
	}
	got := make([]byte, len(data)+len(closeFrame))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatalf("the client read %q, then %v", got, err)
	}
	if want := append(bytes.Clone(data), closeFrame...); !bytes.Equal(got, want) {
		t.Fatalf("the client read %q, want %q", got, want)
	}
	if err := <-closed; err != nil {
		t.Fatalf("writing the close frame: %v", err)
	}
	if err := <-written; err != nil {
		t.Fatalf("writing the data frame: %v", err)
	}
}

// TestWire_TryWriteNeverWaitsAndKeepsTheRest fills a real socket whose
// peer does not read: tryWrite must return at once, and whatever part of
// a frame the socket did not take must reach the peer first, whole, once
// it reads.
func TestWire_TryWriteNeverWaitsAndKeepsTheRest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	w := newWire(conn)
	w.raw, w.try = raw, newRawWrite()
	defer w.Close()

	f := frameOf(0x1, string(bytes.Repeat([]byte("p"), 60000)))
	var sent []byte
	start := time.Now()
	for {
		n, pending, err := w.tryWrite(f)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, f[:n]...)
		if n < len(f) {
			if pending != (n > 0) {
				t.Fatalf("partial write of %d bytes: pending %v", n, pending)
			}
			if n > 0 {
				sent = append(sent, f[n:]...) // kept by the wire
			}
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the socket never filled")
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("tryWrite waited: %v", d)
	}
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(sent))))
		got <- b
	}()
	if err := w.flushKept(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, sent) {
		t.Fatalf("peer read %d bytes, not the %d written and kept, in order", len(b), len(sent))
	}
}
