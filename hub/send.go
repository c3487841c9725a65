package hub

import (
	"github.com/coder/websocket"
)

// send queues a frame for the client: a complete websocket frame, as
// encode and pubFrame make them. It never blocks: if the queue would
// exceed its bound the client is closed with 4009 instead. It reports
// whether the frame was queued. Frames may be shared between clients and
// must not be modified afterwards.
func (c *client) send(b []byte) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if c.queued+len(b) > c.hub.opts.SendQueueBytes {
		c.mu.Unlock()
		c.closeWith(StatusTooSlow, "send queue overflow")
		return false
	}
	c.queue = append(c.queue, b)
	c.queued += len(b)
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	c.mu.Unlock()
	return true
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
				c.mu.Lock()
				c.writing = false
				c.mu.Unlock()
				c.closeNow(websocket.StatusAbnormalClosure)
				return
			}
			written += len(b)
			batch[i] = nil
		}
		c.mu.Lock()
		c.queued -= written
		if c.room != nil && c.queued <= c.roomAt {
			close(c.room)
			c.room = nil
		}
		c.mu.Unlock()
	}
}

// waitRoom blocks until at most limit bytes wait to be written to the
// client, so that a resume queues its missed publications at the pace the
// client reads them. It reports false when the client closed.
func (c *client) waitRoom(limit int) bool {
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return false
		}
		if c.queued <= limit {
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
		case <-c.ctx.Done():
			return false
		}
	}
}
