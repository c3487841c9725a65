package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/coder/websocket"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/channels"
	"herald/internal/heraldtest"
)

// asyncDoc is what docs/asyncapi.yaml says about frames and codes.
type asyncDoc struct {
	clientTypes, serverTypes set
	// schemas are the payload schemas of the server frames, by type.
	schemas     map[string][]map[string]any
	errorCodes  set
	closeCodes  set
	closeReason map[string]string
}

func readAsyncAPI(t *testing.T) asyncDoc {
	doc := loadDoc(t, "asyncapi.yaml")
	if doc["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi: %v", doc["asyncapi"])
	}
	d := asyncDoc{clientTypes: set{}, serverTypes: set{}, schemas: map[string][]map[string]any{}, errorCodes: set{}, closeCodes: set{}}
	server := func(ref any) {
		payload := deref(t, doc, get(deref(t, doc, ref), "payload"))
		typ, _ := get(payload, "properties", "type", "const").(string)
		d.serverTypes.add(typ)
		d.schemas[typ] = append(d.schemas[typ], payload)
	}
	ops, _ := doc["operations"].(map[string]any)
	for name, op := range ops {
		msgs, _ := get(op, "messages").([]any)
		switch get(op, "action") {
		case "receive":
			for _, m := range msgs {
				payload := deref(t, doc, get(deref(t, doc, m), "payload"))
				typ, _ := get(payload, "properties", "type", "const").(string)
				d.clientTypes.add(typ)
			}
			replies, _ := get(op, "reply", "messages").([]any)
			for _, m := range replies {
				server(m)
			}
		case "send":
			for _, m := range msgs {
				server(m)
			}
		default:
			t.Errorf("operation %s: action %v", name, get(op, "action"))
		}
	}
	codes, _ := get(doc, "components", "messages", "error", "payload", "properties", "code", "enum").([]any)
	for _, c := range codes {
		d.errorCodes.add(c.(string))
	}
	closes, _ := get(doc, "channels", "ws", "x-herald-close-codes").([]any)
	for _, c := range closes {
		d.closeCodes.add(fmt.Sprint(get(c, "code")))
	}
	return d
}

// TestAsyncAPI_MatchesTheServer runs a session that makes the server send
// every frame, error code and close code it can, and holds
// docs/asyncapi.yaml to it both ways: everything documented happened,
// everything that happened is documented, and each frame carries the
// documented fields and no others.
func TestAsyncAPI_MatchesTheServer(t *testing.T) {
	d := readAsyncAPI(t)
	broker := newFlaky()
	cfg := heraldtest.Config()
	cfg.Broker = broker
	cfg.Hub.MaxSubscriptions = 2
	cfg.Hub.SendQueueBytes = 32 << 10
	n := heraldtest.Start(t, cfg)

	frames, errorCodes, closeCodes := set{}, set{}, set{}
	var bad []string
	read := func(c *heraldtest.Client) heraldtest.Frame {
		t.Helper()
		f := c.Read()
		frames.add(f.Type())
		if f.Type() == "error" {
			errorCodes.add(f.String("code"))
		}
		if msg := checkFrame(d, f); msg != "" {
			bad = append(bad, msg)
		}
		return f
	}
	expect := func(c *heraldtest.Client, frame map[string]any, typ string) heraldtest.Frame {
		t.Helper()
		c.Send(frame)
		f := read(c)
		if f.Type() != typ {
			t.Fatalf("%v: got %v, want %s", frame, f, typ)
		}
		return f
	}
	closed := func(c *heraldtest.Client, want int) {
		t.Helper()
		code := c.CloseStatus(10 * time.Second)
		closeCodes.add(fmt.Sprint(int(code)))
		if int(code) != want {
			t.Fatalf("closed with %d, want %d", code, want)
		}
	}
	token := heraldtest.Token(t, "42", "acme")
	sent := set{}
	send := func(c *heraldtest.Client, frame map[string]any, typ string) heraldtest.Frame {
		t.Helper()
		sent.add(frame["type"].(string))
		return expect(c, frame, typ)
	}

	c := heraldtest.Dial(t, n)
	send(c, map[string]any{"type": "connect", "token": token}, "connected")
	read(heraldtest.DialHeader(t, n, http.Header{"Authorization": {"Bearer " + token}})) // connected, unprompted
	send(c, map[string]any{"type": "ping"}, "pong")
	sub := send(c, map[string]any{"type": "subscribe", "channel": "user:42"}, "subscribed")
	send(c, map[string]any{"type": "subscribe", "channel": "user:42"}, "error")
	send(c, map[string]any{"type": "subscribe", "channel": "room:1"}, "error")
	send(c, map[string]any{"type": "subscribe", "channel": "user:43"}, "error")
	send(c, map[string]any{"type": "unsubscribe", "channel": "merchant:acme"}, "error")
	send(c, map[string]any{"type": "subscribe", "channel": "merchant:acme"}, "subscribed")
	send(c, map[string]any{"type": "subscribe", "channel": "alerts:acme"}, "error")
	n.Publish(t, "user:42", map[string]string{"hello": "world"})
	read(c) // pub
	send(c, map[string]any{"type": "history", "channel": "user:42", "limit": 10}, "history")
	send(c, map[string]any{"type": "history", "channel": "user:42", "since": map[string]any{"offset": 0, "epoch": sub.String("epoch")}}, "history")
	// The broker reports a lost log: the server says so on its own.
	n.Server.Hub().HandleReset("user:42", channels.Position{Offset: 0, Epoch: "reset"}, channels.ReasonEpochMismatch)
	if f := read(c); f.Type() != "subscribed" || f["recovered"] != false {
		t.Fatalf("gap: %v", f)
	}
	// A refreshed token without the merchant drops merchant:acme.
	send(c, map[string]any{"type": "refresh", "token": heraldtest.Token(t, "42", "")}, "refreshed")
	if f := read(c); f.Type() != "unsubscribed" || f.String("channel") != "merchant:acme" {
		t.Fatalf("dropped subscription: %v", f)
	}
	send(c, map[string]any{"type": "refresh", "token": heraldtest.Token(t, "99", "")}, "error")
	send(c, map[string]any{"type": "unsubscribe", "channel": "user:42"}, "unsubscribed")
	broker.fail(channels.ErrUnavailable)
	send(c, map[string]any{"type": "subscribe", "channel": "user:42"}, "error")
	broker.fail(errors.New("disk on fire"))
	send(c, map[string]any{"type": "history", "channel": "user:42"}, "error")
	broker.fail(nil)

	// Every close code.
	bad4001 := heraldtest.Dial(t, n)
	bad4001.Send(map[string]any{"type": "connect", "token": "not.a.token"})
	closed(bad4001, 4001)
	proto := heraldtest.Connect(t, n, token)
	proto.SendRaw([]byte(`{"type":"dance"}`))
	closed(proto, 4002)
	expiring := heraldtest.Connect(t, n, heraldtest.TokenTTL(t, 3*time.Second, "42", ""))
	closed(expiring, 4008)
	slow := heraldtest.Connect(t, n, heraldtest.Token(t, "7", ""))
	slow.Subscribe("user:7")
	// Larger than the whole queue: the API refuses such data, another
	// node's broker may not.
	if _, err := broker.Publish(context.Background(), "user:7", json.RawMessage(`"`+strings.Repeat("x", 40<<10)+`"`), channels.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	closed(slow, 4009)
	// A resume longer than the queue holds, cut short by the broker.
	for i := 0; i < 60; i++ {
		n.Publish(t, "user:8", strings.Repeat("y", 1<<10))
	}
	resuming := heraldtest.Connect(t, n, heraldtest.Token(t, "8", ""))
	epoch8 := send(resuming, map[string]any{"type": "history", "channel": "user:8", "limit": 1}, "history").String("epoch")
	broker.failHistoryAfter(1, channels.ErrUnavailable)
	resuming.Send(map[string]any{"type": "subscribe", "channel": "user:8", "since": map[string]any{"offset": 0, "epoch": epoch8}})
	closed(resuming, 1013)
	broker.failHistoryAfter(0, nil)
	flood := heraldtest.Connect(t, n, token)
	for i := 0; i < 400; i++ {
		if err := flood.Conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
			break
		}
	}
	closed(flood, 4029)
	big := heraldtest.Connect(t, n, token)
	big.SendRaw([]byte(`{"type":"ping","pad":"` + strings.Repeat("x", 64<<10) + `"}`))
	closed(big, 1009)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { _ = n.Server.Drain(ctx, 0) }()
	closed(c, 4010)

	for _, msg := range bad {
		t.Error(msg)
	}
	compare(t, "server frame type", d.serverTypes, frames)
	compare(t, "error code", d.errorCodes, errorCodes)
	compare(t, "close code", d.closeCodes, closeCodes)
	compare(t, "client frame type", d.clientTypes, sent)
}

// checkFrame reports a frame whose fields are not those of any documented
// schema of its type.
func checkFrame(d asyncDoc, f heraldtest.Frame) string {
	var why []string
	for _, schema := range d.schemas[f.Type()] {
		props, _ := get(schema, "properties").(map[string]any)
		required, _ := get(schema, "required").([]any)
		var problems []string
		for k := range f {
			if _, ok := props[k]; !ok {
				problems = append(problems, "undocumented field "+k)
			}
		}
		for _, r := range required {
			if _, ok := f[r.(string)]; !ok {
				problems = append(problems, "missing required "+r.(string))
			}
		}
		if len(problems) == 0 {
			return ""
		}
		why = append(why, strings.Join(problems, ", "))
	}
	return fmt.Sprintf("frame %v does not match the documented %q frame: %v", f, f.Type(), why)
}
