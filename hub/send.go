package hub

import (
	"runtime"
	"slices"

	"github.com/coder/websocket"
)

// send queues a frame for the client: a complete websocket frame, as
// encode and pubFrame make them. It never blocks: if the queue would
// exceed its bound the client is closed with 4009 instead (see enqueue for
// frames behind a reply waiting for room). It reports whether the frame
// was queued. Frames may be shared between clients and must not be
// modified afterwards.
func (c *client) send(b []byte) bool {
	queued, start := c.enqueue(b, false)
	if start {
		go c.writeLoop()
	}
	return queued
}

// sendReply queues a history reply. A reply can take half the send queue,
// and a client may ask for several before it reads the first: closing it
// as too slow would punish a client that reads. So a reply that does not
// fit waits until the writer makes room (see enqueue).
func (c *client) sendReply(b []byte) {
	if _, start := c.enqueue(b, true); start {
		go c.writeLoop()
	}
}

// enqueue queues a frame as send does but leaves the client's writer to
// the caller: start reports that the client had none, and that the caller
// must start one (writeLoop, or writeNow after a fan-out).
//
// A reply that does not fit in the queue is held instead, and every frame
// after it is held behind it, so that the client gets its frames in the
// order they were sent; the writer queues them as it makes room
// (written). What is held is bounded by the queue's size again: past that
// the client asks for more than it reads, or reads too slowly for its
// channels, and is closed with 4009.
func (c *client) enqueue(b []byte, reply bool) (queued, start bool) {
	limit := c.hub.opts.SendQueueBytes
	c.mu.Lock()
	switch {
	case c.closing:
		c.mu.Unlock()
		return false, false
	case len(c.held) == 0 && c.queued+len(b) <= limit:
		start = c.push(b)
	case (reply && c.queued > 0 || len(c.held) > 0) && c.heldBytes+len(b) <= limit:
		// The queue is not empty, so a writer is under way to make room.
		c.held = append(c.held, b)
		c.heldBytes += len(b)
	default:
		c.mu.Unlock()
		c.closeWith(StatusTooSlow, "send queue overflow")
		return false, false
	}
	c.mu.Unlock()
	return true, start
}

// holdPending counts n more bytes of live publications held for the
// client's subscriptions while they recover, and reports whether they may
// be held: not past the send queue's bound (one bound for the client,
// however many channels it resumes at once), and not for a client that is
// closing, which will never be sent them.
func (c *client) holdPending(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.pendingBytes+n > c.hub.opts.SendQueueBytes {
		return false
	}
	c.pendingBytes += n
	return true
}

// releasePending uncounts n bytes held by holdPending.
func (c *client) releasePending(n int) {
	c.mu.Lock()
	c.pendingBytes -= n
	c.mu.Unlock()
}

// push appends a frame to the queue and reports whether the client had no
// writer, which the caller must then start. c.mu is held.
func (c *client) push(b []byte) (start bool) {
	c.queue = append(c.queue, b)
	c.queued += len(b)
	start = !c.writing
	c.writing = true
	return start
}

// fanoutChunk is how many clients one fan-out writer takes on at least; a
// larger fan-out has more writers, up to one per CPU.
const fanoutChunk = 64

// writeOut starts the writers of the clients a fan-out left with a frame
// to write and no writer: a few goroutines share them, each client's
// frame written without blocking (writeNow), instead of a goroutine per
// client.
func writeOut(ready []*client) {
	if len(ready) == 0 {
		return
	}
	writers := min(runtime.GOMAXPROCS(0), (len(ready)+fanoutChunk-1)/fanoutChunk)
	per := (len(ready) + writers - 1) / writers
	for i := 0; i < len(ready); i += per {
		part := ready[i:min(i+per, len(ready))]
		go func() {
			for _, c := range part {
				c.writeNow()
			}
		}()
	}
}

// writeNow is the client's writer for as long as it need not wait: it
// writes the one queued frame if the socket takes it at once, and hands
// anything else — more frames, a full socket, a partial write — to a
// writer goroutine of the client's own (writeLoop), which may block. A
// client that keeps up with a fan-out then costs no goroutine.
func (c *client) writeNow() {
	c.mu.Lock()
	if c.closing || len(c.queue) != 1 {
		c.mu.Unlock()
		go c.writeLoop()
		return
	}
	f := c.queue[0]
	c.mu.Unlock()
	n, pending, err := c.wire.tryWrite(f)
	switch {
	case err != nil:
		// Not on this goroutine, which other clients' frames wait for:
		// when a close handshake is under way, dropping the connection
		// waits for the handshake, for seconds.
		go c.writeFailed()
		return
	case n == 0:
		go c.writeLoop()
		return
	}
	// f is written, or its rest kept by the wire to go out first.
	c.mu.Lock()
	if len(c.queue) > 0 { // not dropped by a close meanwhile
		c.queue = slices.Delete(c.queue, 0, 1)
		c.written(len(f))
	}
	done := c.closing || (n == len(f) && !pending && len(c.queue) == 0)
	if done {
		c.writing = false
	}
	c.mu.Unlock()
	if !done {
		go c.writeLoop()
	}
}

// hasRoom reports whether at most limit bytes wait to be written to the
// client (see waitRoom), or it is closing and nothing will be.
func (c *client) hasRoom(limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing || c.queued+c.heldBytes <= limit
}

// sendWithin queues a frame only if the queue then holds at most limit
// bytes (or is empty now), and reports whether it did; unlike send it never
// closes the client. Resumes use it to queue missed publications at the
// pace the client reads them.
func (c *client) sendWithin(b []byte, limit int) bool {
	c.mu.Lock()
	over := c.queued > 0 && c.queued+len(b) > limit
	c.mu.Unlock()
	return !over && c.send(b)
}

// writeLoop drains the queue and exits when it is empty, so an idle client
// costs no goroutine. Frames stay counted against the queue bound until they
// are written.
//
// Frames go to the wire as they are, past coder/websocket's writer: they
// are complete already, and the library would take its locks and copy
// each through its buffer again. A write blocked on a peer that stopped
// reading ends when the session closes the connection, which every way
// out of a session does.
func (c *client) writeLoop() {
	// First what the wire kept from a partial write.
	if err := c.wire.flushKept(); err != nil {
		c.writeFailed()
		return
	}
	var batch [][]byte
	for {
		c.mu.Lock()
		if c.closing || len(c.queue) == 0 {
			c.writing = false
			if !c.closing && cap(c.queue) == 0 {
				// Keep an array for the next frames: most bursts are one.
				c.queue = batch[:0]
			}
			c.mu.Unlock()
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.mu.Unlock()

		written := 0
		for i, b := range batch {
			// A batch goes out in one system call, with its last frame.
			c.wire.hold(i < len(batch)-1)
			if err := c.wire.writeFrame(b); err != nil {
				c.writeFailed()
				return
			}
			written += len(b)
			batch[i] = nil
		}
		c.mu.Lock()
		c.written(written)
		c.mu.Unlock()
	}
}

// written uncounts n bytes of frames written from the queue, queues the
// replies waiting for the room that made, and wakes a resume waiting for
// room. It runs on the client's writer, which goes on to write what it
// queued. c.mu is held.
func (c *client) written(n int) {
	c.queued -= n
	for len(c.held) > 0 && c.queued+len(c.held[0]) <= c.hub.opts.SendQueueBytes {
		c.push(c.held[0])
		c.heldBytes -= len(c.held[0])
		c.held[0] = nil
		c.held = c.held[1:]
	}
	if c.room != nil && c.queued+c.heldBytes <= c.roomAt {
		close(c.room)
		c.room = nil
	}
}

// writeFailed ends the session after a write failed: the connection is
// broken.
func (c *client) writeFailed() {
	c.mu.Lock()
	c.writing = false
	c.mu.Unlock()
	c.broken()
}

// broken ends the session after a write or a ping failed. When a close
// frame is already on its way (herald's own, the answer to the client's,
// or the library's 1002 for a protocol error) the write failed because of
// it: the session ends with that frame's code, and its handshake is
// finished rather than cut short, which would drop the frame.
func (c *client) broken() {
	code := c.wire.sentClose()
	if code == 0 {
		c.closeNow(websocket.StatusAbnormalClosure)
		return
	}
	c.closeWith(code, "") // the frame is out: this waits for the answer
}

// waitRoom blocks until at most limit bytes wait to be written to the
// client (queued, or held behind a reply), so that a resume queues its
// missed publications at the pace the client reads them. It reports false
// when the client closed, or done (nil: never) was closed: the
// subscription the resume was for ended.
func (c *client) waitRoom(limit int, done <-chan struct{}) bool {
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return false
		}
		if c.queued+c.heldBytes <= limit {
			c.mu.Unlock()
			return true
		}
		if c.room == nil {
			c.room, c.roomAt = make(chan struct{}), limit
		}
		c.roomAt = min(c.roomAt, limit)
		room := c.room
		c.mu.Unlock()
		select {
		case <-room:
		case <-done:
			// This waiter's limit may be the one roomAt holds: wake the
			// others, which wait again each at its own.
			c.mu.Lock()
			if c.room == room {
				close(c.room)
				c.room = nil
			}
			c.mu.Unlock()
			return false
		case <-c.ctx.Done():
			return false
		}
	}
}
