package ingress

import (
	"context"
	"sync"
	"time"
)

// StatusStore remembers the latest status of each provider transaction, so
// that an event arriving after a later status of the same transaction (a
// PENDING after its SUCCESS) can be marked stale instead of moving the
// client's view backwards. The ingress uses it when the broker has no
// Appender, which ranks statuses itself (the Redis engine's does).
type StatusStore interface {
	// Advance records status with its rank for txn unless a status of a
	// higher rank is recorded already. It returns the status recorded after
	// the call and whether the given one was behind it (stale). Equal ranks
	// replace each other. The record lives ttl after its last change.
	Advance(ctx context.Context, txn, status string, rank int, ttl time.Duration) (current string, stale bool, err error)
}

// MemoryStatuses is a StatusStore in this process.
type MemoryStatuses struct {
	mu      sync.Mutex
	entries map[string]statusEntry
	now     func() time.Time
	sweeps  int
}

type statusEntry struct {
	status  string
	rank    int
	expires time.Time
}

// NewMemoryStatuses returns an empty store.
func NewMemoryStatuses() *MemoryStatuses {
	return &MemoryStatuses{entries: map[string]statusEntry{}, now: time.Now}
}

// Advance implements StatusStore.
func (m *MemoryStatuses) Advance(_ context.Context, txn, status string, rank int, ttl time.Duration) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweep(now)
	if e, ok := m.entries[txn]; ok && now.Before(e.expires) && e.rank > rank {
		return e.status, true, nil
	}
	m.entries[txn] = statusEntry{status: status, rank: rank, expires: now.Add(ttl)}
	return status, false, nil
}

// sweep drops expired entries now and then, so memory follows the window
// rather than the traffic seen.
func (m *MemoryStatuses) sweep(now time.Time) {
	m.sweeps++
	if m.sweeps < 1024 {
		return
	}
	m.sweeps = 0
	for k, e := range m.entries {
		if !now.Before(e.expires) {
			delete(m.entries, k)
		}
	}
}
