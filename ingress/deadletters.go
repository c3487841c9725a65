package ingress

import (
	"context"
	"encoding/json"
	"sync"
	"unicode/utf8"
)

// DeadLetter is a request the ingress could not turn into an event, kept for
// operators (GET /v1/deadletters).
type DeadLetter struct {
	Provider   string `json:"provider"`
	ReceivedAt string `json:"received_at"`
	// Status is the HTTP status the provider got (202, 400, or 500 when
	// the fault was herald's).
	Status int    `json:"status"`
	Reason string `json:"reason"`
	// Body is the request body, cut to MaxDeadLetterBody bytes as stored
	// (Truncated).
	Body      string `json:"body"`
	Truncated bool   `json:"truncated,omitempty"`
}

// MaxDeadLetterBody is how much of a body a dead letter keeps, counted as
// stored: encoded as a JSON string, where a control character takes six
// bytes.
const MaxDeadLetterBody = 64 << 10

// cutEncoded cuts s, at a character's start, so that it takes at most max
// bytes encoded as a JSON string (quotes aside), and reports whether it
// cut. Counting raw bytes would let a body of control characters store
// six times as much.
func cutEncoded(s string, max int) (string, bool) {
	cut := false
	for {
		b, _ := json.Marshal(s) // a string always marshals
		if len(b)-2 <= max {
			return s, cut
		}
		n := min(len(s)-1, len(s)*max/(len(b)-2))
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s, cut = s[:n], true
	}
}

// DeadLetterStore keeps the newest dead letters. Implementations: an
// in-memory ring (NewMemoryDeadLetters) and Redis (shared by every node).
type DeadLetterStore interface {
	Add(ctx context.Context, d DeadLetter) error
	// List returns up to limit dead letters, newest first, and no more
	// than fit in about maxBytes of JSON (always the newest one); more
	// reports that it stopped on the bytes while older ones were left.
	List(ctx context.Context, limit, maxBytes int) (list []DeadLetter, more bool, err error)
}

// MemoryDeadLetters keeps the newest dead letters in this process.
type MemoryDeadLetters struct {
	mu    sync.Mutex
	max   int
	items []sized // oldest first
}

// sized is a dead letter and the size of its JSON, what a listing is
// bounded by (escapes can make it several times the body's).
type sized struct {
	DeadLetter
	size int
}

// NewMemoryDeadLetters keeps at most max dead letters.
func NewMemoryDeadLetters(max int) *MemoryDeadLetters {
	return &MemoryDeadLetters{max: max}
}

// Add implements DeadLetterStore.
func (m *MemoryDeadLetters) Add(_ context.Context, d DeadLetter) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items = append(m.items, sized{d, len(b)})
	if over := len(m.items) - m.max; over > 0 {
		m.items = append(m.items[:0], m.items[over:]...)
	}
	return nil
}

// List implements DeadLetterStore.
func (m *MemoryDeadLetters) List(_ context.Context, limit, maxBytes int) ([]DeadLetter, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := min(limit, len(m.items))
	out := make([]DeadLetter, 0, n)
	size := 0
	for i := len(m.items) - 1; len(out) < n; i-- {
		if size += m.items[i].size; size > maxBytes && len(out) > 0 {
			return out, true, nil
		}
		out = append(out, m.items[i].DeadLetter)
	}
	return out, false, nil
}
