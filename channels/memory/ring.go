package memory

import "herald/channels"

// ring keeps the newest cap publications of a log.
type ring struct {
	buf   []channels.Publication
	start int // index of the oldest
	n     int
	cap   int
}

func newRing(capacity int) ring { return ring{cap: capacity} }

func (r *ring) len() int { return r.n }

func (r *ring) push(p channels.Publication) {
	if len(r.buf) < r.cap {
		// Grow lazily: most channels never fill their history.
		if r.n == len(r.buf) {
			grown := make([]channels.Publication, min(max(2*len(r.buf), 4), r.cap))
			copy(grown, r.buf[r.start:])
			copy(grown[len(r.buf)-r.start:], r.buf[:r.start])
			r.buf, r.start = grown, 0
		}
	}
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = p
		r.n++
		return
	}
	r.buf[r.start] = p
	r.start = (r.start + 1) % len(r.buf)
}

// slice copies n publications starting at the i-th oldest.
func (r *ring) slice(i, n int) []channels.Publication {
	out := make([]channels.Publication, n)
	for j := range out {
		out[j] = r.buf[(r.start+i+j)%len(r.buf)]
	}
	return out
}

func (r *ring) clear() {
	r.buf, r.start, r.n = nil, 0, 0
}
