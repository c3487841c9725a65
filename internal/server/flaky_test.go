package server_test

import (
	"context"
	"encoding/json"
	"sync"

	"herald/channels"
	"herald/channels/memory"
	"herald/ingress"
)

// flaky is an embedded broker, and a dead-letter store, whose calls fail
// with a chosen error while one is set: a broker that went away.
type flaky struct {
	channels.Broker
	dead ingress.DeadLetterStore
	mu   sync.Mutex
	err  error
	// histErr, when set, fails History once histLeft more calls passed.
	histErr  error
	histLeft int
}

func newFlaky() *flaky {
	return &flaky{Broker: memory.New(memory.Options{}), dead: ingress.NewMemoryDeadLetters(100)}
}

// fail makes every call fail with err; nil restores the broker.
func (f *flaky) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// failHistoryAfter lets n more History calls through, then fails the
// following ones with err (nil restores): a broker that goes away halfway
// through a resume.
func (f *flaky) failHistoryAfter(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.histErr, f.histLeft = err, n
}

func (f *flaky) historyFailure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.histErr == nil {
		return f.err
	}
	if f.histLeft > 0 {
		f.histLeft--
		return f.err
	}
	return f.histErr
}

func (f *flaky) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *flaky) Publish(ctx context.Context, ch string, d json.RawMessage, o channels.PublishOptions) (channels.PublishResult, error) {
	if err := f.failure(); err != nil {
		return channels.PublishResult{}, err
	}
	return f.Broker.Publish(ctx, ch, d, o)
}

func (f *flaky) History(ctx context.Context, ch string, o channels.HistoryOptions) (channels.HistoryResult, error) {
	if err := f.historyFailure(); err != nil {
		return channels.HistoryResult{}, err
	}
	return f.Broker.History(ctx, ch, o)
}

func (f *flaky) Subscribe(ctx context.Context, ch string) error {
	if err := f.failure(); err != nil {
		return err
	}
	return f.Broker.Subscribe(ctx, ch)
}

func (f *flaky) Ready(ctx context.Context) error {
	if err := f.failure(); err != nil {
		return err
	}
	return f.Broker.Ready(ctx)
}

// deadLetters is the store half of flaky, for server.Config.DeadLetters.
type deadLetters struct{ f *flaky }

func (d deadLetters) Add(ctx context.Context, l ingress.DeadLetter) error {
	if err := d.f.failure(); err != nil {
		return err
	}
	return d.f.dead.Add(ctx, l)
}

func (d deadLetters) List(ctx context.Context, limit, maxBytes int) ([]ingress.DeadLetter, bool, error) {
	if err := d.f.failure(); err != nil {
		return nil, false, err
	}
	return d.f.dead.List(ctx, limit, maxBytes)
}
