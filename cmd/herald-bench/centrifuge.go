package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// The harness also speaks the JSON protocol of Centrifuge, the library
// Centrifugo is made of (-protocol centrifuge), so that the peer in
// ./peer is driven by the same clients, schedule and measurements as
// herald. What the idle, fanout, peruser-via-api and resume scenarios
// need: connect with a token, subscribe (recovering missed publications),
// count the publications pushed, answer the server's pings.

// cfReply is what the harness reads of a Centrifuge reply.
type cfReply struct {
	ID    int64 `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Subscribe *struct {
		Epoch        string `json:"epoch"`
		Offset       uint64 `json:"offset"`
		Recovered    bool   `json:"recovered"`
		Publications []struct {
			Offset uint64 `json:"offset"`
		} `json:"publications"`
	} `json:"subscribe"`
}

// cfOpen connects with token and subscribes to the client's channel from
// its current position.
func (c *client) cfOpen(ctx context.Context, token string) error {
	if err := cfConnect(ctx, c.conn, token); err != nil {
		return err
	}
	sub := `{"id":2,"subscribe":{"channel":` + strconv.Quote(c.channel) + `}}`
	r, err := cfCall(ctx, c.conn, 2, sub)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if r.Subscribe == nil {
		return fmt.Errorf("subscribe: no subscribe result")
	}
	c.epoch, c.last = r.Subscribe.Epoch, r.Subscribe.Offset
	return nil
}

// cfConnect sends the connect command with token and waits for its reply.
func cfConnect(ctx context.Context, conn *websocket.Conn, token string) error {
	if _, err := cfCall(ctx, conn, 1, `{"id":1,"connect":{"token":`+strconv.Quote(token)+`}}`); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return nil
}

// cfCall sends a command and reads frames until the reply with its id,
// answering pings meanwhile.
func cfCall(ctx context.Context, conn *websocket.Conn, id int64, cmd string) (cfReply, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, []byte(cmd)); err != nil {
		return cfReply{}, err
	}
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return cfReply{}, err
		}
		for m := range bytes.SplitSeq(b, []byte("\n")) {
			if bytes.Equal(m, cfPing) {
				if err := conn.Write(ctx, websocket.MessageText, cfPing); err != nil {
					return cfReply{}, err
				}
				continue
			}
			var r cfReply
			if len(m) == 0 || json.Unmarshal(m, &r) != nil || r.ID != id {
				continue
			}
			if r.Error != nil {
				return r, fmt.Errorf("error %d: %s", r.Error.Code, r.Error.Message)
			}
			return r, nil
		}
	}
}

var (
	cfPing     = []byte("{}")
	cfPushPub  = []byte(`{"push":{"channel":`)
	cfPubField = []byte(`"pub":`)
)

// cfFrame accounts for one Centrifuge frame: newline-separated replies
// and pushes. A ping ({}) is answered with a pong ({}).
func (c *client) cfFrame(b []byte, clock time.Time, times sendTimes, t *tally) {
	for m := range bytes.SplitSeq(b, []byte("\n")) {
		switch {
		case bytes.Equal(m, cfPing):
			_ = c.conn.Write(context.Background(), websocket.MessageText, cfPing)
		case bytes.HasPrefix(m, cfPushPub):
			i := bytes.Index(m, cfPubField)
			if i < 0 {
				continue // another kind of push (join, leave, unsubscribe…)
			}
			c.pub(m[i:], clock, times, t)
		}
	}
}

// cfResumeOnce is resumeOnce in Centrifuge's protocol: the subscribe
// command asks to recover from pos, and its reply carries the missed
// publications, so both histograms get the time to that reply.
func (b *bench) cfResumeOnce(ctx context.Context, tok, channel string, pos position, subscribed, all *histogram) (int, error) {
	conn, err := b.d.dial(ctx, 0, tok)
	if err != nil {
		return 0, err
	}
	defer conn.CloseNow()
	if err := cfConnect(ctx, conn, tok); err != nil {
		return 0, err
	}
	sub := `{"id":2,"subscribe":{"channel":` + strconv.Quote(channel) + `,"recover":true,"epoch":` +
		strconv.Quote(pos.Epoch) + `,"offset":` + strconv.FormatUint(pos.Offset, 10) + `}}`
	start := time.Now()
	r, err := cfCall(ctx, conn, 2, sub)
	if err != nil {
		return 0, fmt.Errorf("resume: %w", err)
	}
	took := time.Since(start)
	s := r.Subscribe
	if s == nil || !s.Recovered {
		return 0, fmt.Errorf("resume: not recovered: %+v", s)
	}
	for i, p := range s.Publications {
		if p.Offset != pos.Offset+uint64(i)+1 {
			return i, fmt.Errorf("resume: got offset %d, want %d", p.Offset, pos.Offset+uint64(i)+1)
		}
	}
	// A recovered answer leaves the channel's offset out: it is the last
	// publication's.
	if n := len(s.Publications); n != b.o.missed {
		return n, fmt.Errorf("resume: %d publications recovered after %d, want the %d missed", n, pos.Offset, b.o.missed)
	}
	subscribed.record(took)
	all.record(took)
	return len(s.Publications), nil
}
