package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"herald/channels"
	"herald/hub"
)

const tailAbout = `
Subscribes to a channel and prints each publication as one JSON line (the
pub frame: channel, offset, epoch, data) on standard output. Connection
state goes to standard error. When the connection drops, tail reconnects
with a growing, jittered delay and resubscribes from the last offset it
printed, so nothing is printed twice or skipped; if the node reports that
publications were lost (recovered:false), tail says so on standard error
and goes on. The token is --token or HERALD_TOKEN (herald token mints
one). Interrupt to stop.

  herald tail user:42 --token "$(herald token --sub 42)"
  herald tail merchant:acme --since 17 --epoch 8f3c…   # resume`

func runTail(ctx context.Context, args []string, env lookupFunc, stdout, stderr io.Writer) int {
	fs := newFlags("tail", stderr, tailAbout)
	base := envString(fs, env, "url", "HERALD_URL", "http://127.0.0.1:8080", "the node (or load balancer)")
	token := envString(fs, env, "token", "HERALD_TOKEN", "", "client token")
	since := fs.Uint64("since", 0, "resume after this offset (needs --epoch)")
	epoch := fs.String("epoch", "", "the epoch --since belongs to")
	count := fs.Int("count", 0, "exit after printing this many publications [0: until interrupted]")
	ping := fs.Duration("ping", 30*time.Second, "how often to ping the node; one that does not answer within 10 s is left, and tail reconnects")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return usageError(stderr, "tail", err)
	}
	t := &tailer{channel: pos[0], token: *token, count: *count, ping: *ping, out: stdout, log: stderr}
	sinceSet := false
	fs.Visit(func(f *flag.Flag) { sinceSet = sinceSet || f.Name == "since" })
	switch {
	case t.token == "":
		err = errors.New("a token is required: --token or HERALD_TOKEN (herald token --sub … mints one)")
	case sinceSet != (*epoch != ""):
		err = errors.New("--since and --epoch go together: a position is an offset within an epoch")
	case *count < 0:
		err = errors.New("--count must not be negative")
	case *ping <= 0:
		err = errors.New("--ping must be positive")
	}
	if err == nil {
		_, err = channels.Parse(t.channel)
	}
	if err == nil {
		t.url, err = wsURL(*base)
	}
	if err != nil {
		return usageError(stderr, "tail", err)
	}
	if sinceSet {
		t.pos = &channels.Position{Offset: *since, Epoch: *epoch}
	}
	if err := t.run(ctx); err != nil {
		return failed(stderr, "tail", err)
	}
	return 0
}

// tailer follows one channel across reconnects.
type tailer struct {
	url, token, channel string
	count, printed      int
	ping                time.Duration
	out, log            io.Writer
	// pos is the last position printed or announced: where a reconnect
	// resumes. nil until the first subscription (then: from now).
	pos *channels.Position
}

// errDone ends a session that printed --count publications.
var errDone = errors.New("done")

// fatalError ends tail: retrying cannot help (bad token, forbidden
// channel, a protocol error).
type fatalError struct{ msg string }

func (e *fatalError) Error() string { return e.msg }

func (t *tailer) run(ctx context.Context) error {
	failures := 0
	for {
		subscribed, err := t.session(ctx)
		switch {
		case ctx.Err() != nil, errors.Is(err, errDone):
			return nil
		case errors.As(err, new(*fatalError)):
			if t.pos != nil {
				return fmt.Errorf("%w (to resume: --since %d --epoch %s)", err, t.pos.Offset, t.pos.Epoch)
			}
			return err
		}
		if subscribed {
			failures = 0
		}
		delay := reconnectDelay(failures)
		failures++
		t.logf("disconnected: %v; reconnecting in %s", err, delay.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

// reconnectDelay grows from 0.5 s to 10 s with the failures in a row, and
// takes a random part of it, so that clients dropped together (a node
// draining) do not all come back at the same instant.
func reconnectDelay(failures int) time.Duration {
	ceiling := min(500*time.Millisecond<<min(failures, 5), 10*time.Second)
	return ceiling/2 + rand.N(ceiling/2)
}

// session runs one connection: connect, subscribe (resuming from pos),
// print. It reports whether the subscription took effect and what ended
// the connection.
func (t *tailer) session(ctx context.Context) (subscribed bool, err error) {
	t.logf("connecting to %s", t.url)
	dialCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, resp, err := websocket.Dial(dialCtx, t.url, &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + t.token}},
		Subprotocols: []string{hub.Subprotocol},
	})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return false, &fatalError{"token refused (HTTP 401)"}
		}
		return false, err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(8 << 20)
	// Interrupted, tail says goodbye (1001) rather than vanish: the node
	// then counts a client that left, not a dropped connection. (Reading
	// with ctx would drop the connection the moment it is cancelled.) A
	// node that does not answer within a second is dropped all the same.
	readCtx, drop := context.WithCancelCause(context.Background())
	defer drop(nil)
	stop := context.AfterFunc(ctx, func() {
		leave(conn, websocket.StatusGoingAway)
		drop(nil)
	})
	defer stop()
	// A node that died behind a proxy or a dead network path leaves the
	// connection open and silent: only a ping that goes unanswered tells.
	go t.keepAlive(readCtx, conn, drop)

	sub := map[string]any{"id": 1, "type": "subscribe", "channel": t.channel}
	if t.pos != nil {
		sub["since"] = t.pos
	}
	for {
		_, data, err := conn.Read(readCtx)
		if err != nil {
			// A close the node sent says more than a ping that failed
			// with it.
			if cause := context.Cause(readCtx); errors.Is(cause, errSilent) && websocket.CloseStatus(err) == -1 {
				return subscribed, cause
			}
			return subscribed, closeError(err)
		}
		var f tailFrame
		if err := json.Unmarshal(data, &f); err != nil {
			leave(conn, websocket.StatusProtocolError)
			return subscribed, &fatalError{fmt.Sprintf("frame is not JSON: %.80q", data)}
		}
		switch f.Type {
		case "connected":
			t.logf("connected to node %s", f.Node)
			b, _ := json.Marshal(sub)
			if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
				return false, err
			}
		case "subscribed":
			subscribed = true
			t.subscribed(f)
		case "pub":
			if f.Channel != t.channel {
				continue
			}
			if _, err := fmt.Fprintf(t.out, "%s\n", data); err != nil {
				leave(conn, websocket.StatusGoingAway)
				return subscribed, &fatalError{"writing output: " + err.Error()}
			}
			t.pos = &channels.Position{Offset: f.Offset, Epoch: f.Epoch}
			t.printed++
			if t.count > 0 && t.printed >= t.count {
				leave(conn, websocket.StatusNormalClosure)
				return subscribed, errDone
			}
		case "error":
			leave(conn, websocket.StatusNormalClosure)
			if f.Code == "unavailable" || f.Code == "internal" {
				return subscribed, fmt.Errorf("subscribe failed: %s: %s", f.Code, f.Message)
			}
			return subscribed, &fatalError{fmt.Sprintf("subscribe refused: %s: %s", f.Code, f.Message)}
		}
	}
}

// errSilent ends a session whose node did not answer a ping.
var errSilent = errors.New("the node did not answer a ping within 10 s")

// keepAlive pings the node every t.ping while ctx lasts, and drops the
// connection with errSilent when a ping goes unanswered for 10 s.
func (t *tailer) keepAlive(ctx context.Context, conn *websocket.Conn, drop context.CancelCauseFunc) {
	tick := time.NewTicker(t.ping)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := conn.Ping(pingCtx)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			drop(errSilent)
			return
		default:
			return // the connection ended: the read says how
		}
	}
}

// leave closes the connection with code, so that the node counts a client
// that left rather than a dropped connection, waiting at most a second for
// the node's answer (the deferred CloseNow ends a wait cut short).
func leave(conn *websocket.Conn, code websocket.StatusCode) {
	done := make(chan struct{})
	go func() {
		_ = conn.Close(code, "")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// subscribed reports a subscribed frame: the reply to ours, or one the
// node sends when it learns publications were lost.
func (t *tailer) subscribed(f tailFrame) {
	resumed := t.pos != nil
	switch {
	case f.ID != nil && !resumed:
		t.logf("subscribed to %s at offset %d (epoch %s)", t.channel, f.Offset, f.Epoch)
	case f.Recovered:
		t.logf("resumed %s after offset %d: no gap; what was missed follows", t.channel, t.pos.Offset)
		return // the missed publications follow and move pos
	default:
		from := "the start"
		if resumed {
			from = fmt.Sprintf("offset %d of epoch %s", t.pos.Offset, t.pos.Epoch)
		}
		t.logf("GAP in %s: publications after %s were lost (recovered:false, %s); continuing from offset %d (epoch %s)",
			t.channel, from, f.Reason, f.Offset, f.Epoch)
	}
	t.pos = &channels.Position{Offset: f.Offset, Epoch: f.Epoch}
}

func (t *tailer) logf(format string, args ...any) {
	fmt.Fprintf(t.log, "herald tail: "+format+"\n", args...)
}

// tailFrame is the part of a server frame tail reads.
type tailFrame struct {
	ID        *int64 `json:"id"`
	Type      string `json:"type"`
	Node      string `json:"node"`
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset"`
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
	Reason    string `json:"reason"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

// closeError turns how the node closed the connection into what tail
// does next: reconnect (4009, 4010, network errors) or stop.
func closeError(err error) error {
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		return err
	}
	switch ce.Code {
	case hub.StatusUnauthorized:
		return &fatalError{"unauthorized (4001): " + ce.Reason}
	case hub.StatusTokenExpired:
		return &fatalError{"token expired (4008): mint a new one"}
	case hub.StatusProtocolError, websocket.StatusMessageTooBig:
		return &fatalError{fmt.Sprintf("protocol error (%d): %s", ce.Code, ce.Reason)}
	case hub.StatusShuttingDown:
		return fmt.Errorf("node shutting down (4010)")
	case hub.StatusTooSlow:
		return fmt.Errorf("too slow (4009): output did not keep up")
	}
	return fmt.Errorf("closed (%d) %s", ce.Code, ce.Reason)
}

// wsURL turns the node's base URL into its websocket endpoint.
func wsURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("--url: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("--url: %q is not an http(s) or ws(s) URL", base)
	}
	if u.Host == "" {
		return "", fmt.Errorf("--url: %q has no host", base)
	}
	if !strings.HasSuffix(u.Path, "/ws") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/ws"
	}
	return u.String(), nil
}
