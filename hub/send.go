package hub

import (
	"github.com/coder/websocket"
)

// send queues a frame for the client. It never blocks: if the queue would
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

// writeLoop drains the queue and exits when it is empty, so an idle client
// costs no goroutine. Frames stay counted against the queue bound until they
// are written.
func (c *client) writeLoop() {
	var batch [][]byte
	for {
		c.mu.Lock()
		if c.closing || len(c.queue) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.mu.Unlock()

		written := 0
		for i, b := range batch {
			if err := c.conn.Write(c.ctx, websocket.MessageText, b); err != nil {
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
		c.mu.Unlock()
	}
}
