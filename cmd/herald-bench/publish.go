package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxInFlight bounds the publish calls waiting for an answer. A schedule
// that would exceed it counts the call as failed instead of waiting: the
// load stays open-loop, and a server that cannot keep up shows as errors
// and latency rather than as a lower rate.
const maxInFlight = 2048

// publisher makes one publish call: i is its number in the schedule and
// sent the time it was scheduled for (ns since the run's clock start),
// which the call carries so that clients can time its delivery. It
// reports the channel appended to, or an error.
type publisher func(ctx context.Context, i int, sent int64) (channel string, err error)

// pubStats counts publish calls.
type pubStats struct {
	attempted, ok, failed atomic.Int64
	perChannel            sync.Map // channel → *atomic.Int64 of successful calls
	call                  histogram
	errMu                 sync.Mutex
	errSamples            []string
}

func (s *pubStats) fail(err error) {
	s.failed.Add(1)
	s.errMu.Lock()
	if len(s.errSamples) < 5 {
		s.errSamples = append(s.errSamples, err.Error())
	}
	s.errMu.Unlock()
}

func (s *pubStats) okFor(channel string) int64 {
	if v, ok := s.perChannel.Load(channel); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// calls is how many publish calls a run at rate per second for d makes.
func calls(rate float64, d time.Duration) int { return int(rate * d.Seconds()) }

// openLoop calls pub at rate per second for d, each call on its own
// goroutine at its scheduled time whatever the previous ones are doing,
// and returns when every call has answered.
func openLoop(ctx context.Context, clock time.Time, rate float64, d time.Duration, pub publisher, s *pubStats) {
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	n := calls(rate, d)
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	for i := 0; i < n && ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		}
		s.attempted.Add(1)
		select {
		case sem <- struct{}{}:
		default:
			s.fail(fmt.Errorf("more than %d publish calls in flight", maxInFlight))
			continue
		}
		wg.Add(1)
		go func(i int, at time.Time) {
			defer wg.Done()
			defer func() { <-sem }()
			ch, err := pub(ctx, i, int64(at.Sub(clock)))
			s.call.record(time.Since(at))
			if err != nil {
				s.fail(err)
				return
			}
			s.ok.Add(1)
			v, _ := s.perChannel.LoadOrStore(ch, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}(i, at)
	}
	wg.Wait()
}

// newHTTPClient is the publishers' client: enough idle connections for
// the in-flight bound, never HTTP/2, a timeout so a run always ends.
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        maxInFlight,
			MaxIdleConnsPerHost: maxInFlight,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// post sends body and returns the answer's body, failing on any status
// but 200.
func post(ctx context.Context, hc *http.Client, url string, header http.Header, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = header
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %d %.200s", url, resp.StatusCode, b)
	}
	return b, nil
}

// apiPublisher publishes through POST /v1/publish to channelOf(i), with
// data {"sent":<ns>,"seq":i,"pad":"…"} of about size bytes.
func apiPublisher(base, apiKey string, size int, channelOf func(i int) string) publisher {
	hc := newHTTPClient()
	header := http.Header{"Authorization": {"Bearer " + apiKey}, "Content-Type": {"application/json"}}
	pad := strings.Repeat("x", max(size-48, 0))
	return func(ctx context.Context, i int, sent int64) (string, error) {
		ch := channelOf(i)
		var b strings.Builder
		b.Grow(size + 64)
		b.WriteString(`{"channel":`)
		b.WriteString(strconv.Quote(ch))
		b.WriteString(`,"data":{"sent":`)
		b.WriteString(strconv.FormatInt(sent, 10))
		b.WriteString(`,"seq":`)
		b.WriteString(strconv.Itoa(i))
		b.WriteString(`,"pad":"`)
		b.WriteString(pad)
		b.WriteString(`"}}`)
		if _, err := post(ctx, hc, base+"/v1/publish", header.Clone(), []byte(b.String())); err != nil {
			return "", err
		}
		return ch, nil
	}
}

// ingressAnswer is the part of an ingress answer the harness checks.
type ingressAnswer struct {
	Status       string `json:"status"`
	Event        string `json:"event"`
	Publications []struct {
		Channel string `json:"channel"`
	} `json:"publications"`
}

// ingressPublisher posts webhooks[i] to its provider's ingress endpoint,
// signed as the provider signs (or with the shared secret as a Bearer
// token), and records its event's send time for the clients.
func ingressPublisher(base, secret string, hooks []webhook, times *eventTimes) publisher {
	return lazyIngressPublisher(base, secret, func(i int) (webhook, error) { return hooks[i%len(hooks)], nil }, times)
}

// lazyIngressPublisher posts the webhook hookOf(i) makes for call i.
func lazyIngressPublisher(base, secret string, hookOf func(i int) (webhook, error), times *eventTimes) publisher {
	hc := newHTTPClient()
	return func(ctx context.Context, i int, sent int64) (string, error) {
		w, err := hookOf(i)
		if err != nil {
			return "", err
		}
		times.set(w.event, sent)
		path, header := w.signed(secret, time.Now())
		b, err := post(ctx, hc, base+path, header, w.body)
		if err != nil {
			return "", err
		}
		var a ingressAnswer
		if err := json.Unmarshal(b, &a); err != nil {
			return "", fmt.Errorf("ingress answer %.100q: %w", b, err)
		}
		if a.Status != "published" || a.Event != w.event {
			return "", fmt.Errorf("ingress answered %s for %s, want published %s", a.Status, a.Event, w.event)
		}
		for _, p := range a.Publications {
			if p.Channel == w.channel {
				return w.channel, nil
			}
		}
		return "", fmt.Errorf("event %s not appended to %s", w.event, w.channel)
	}
}

// eventTimes maps ingress event ids to their send times; clients find
// the id first in the data of each pub frame: "data":{"id":"…".
type eventTimes struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *eventTimes) set(id string, sent int64) {
	e.mu.Lock()
	e.m[id] = sent
	e.mu.Unlock()
}

var idKey = []byte(`"data":{"id":"`)

func (e *eventTimes) lookup(b []byte) (int64, bool) {
	i := bytes.Index(b, idKey)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(idKey):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return 0, false
	}
	e.mu.Lock()
	sent, ok := e.m[string(b[:j])]
	e.mu.Unlock()
	return sent, ok
}
