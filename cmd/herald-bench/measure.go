package main

import (
	"bytes"
	"fmt"
	"math"
	"math/bits"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat
// (sysconf(_SC_CLK_TCK)); 100 on every Linux this runs on.
const clockTicks = 100

// procSample is what /proc says of a process at one moment.
type procSample struct {
	at    time.Time
	rss   int64         // resident set, bytes (VmRSS)
	cpu   time.Duration // user + system time of every thread so far
	valid bool
}

// readProc samples a process; pid 0 means "not measured" and gives an
// invalid sample rather than an error.
func readProc(pid int) (procSample, error) {
	if pid == 0 {
		return procSample{}, nil
	}
	s := procSample{at: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range bytes.Lines(status) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kib, err := strconv.ParseInt(string(bytes.Fields(v)[0]), 10, 64)
			if err != nil {
				return s, fmt.Errorf("VmRSS of %d: %w", pid, err)
			}
			s.rss = kib << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces; fields count from the
	// closing parenthesis. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	s.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	s.valid = true
	return s, nil
}

// histogram counts durations in log-linear buckets of microseconds: exact
// below 1 ms, within 1/512 (0.2%) above. It is safe for concurrent use.
type histogram struct {
	counts [64 << subBits]atomic.Uint64
	max    atomic.Int64
	n      atomic.Uint64
}

const subBits = 9

func bucketOf(us uint64) int {
	if us < 2<<subBits {
		return int(us)
	}
	shift := bits.Len64(us) - subBits - 1
	return (shift+1)<<subBits + int(us>>shift) - 1<<subBits
}

// lowest returns the smallest value, in microseconds, of bucket b.
func lowest(b int) uint64 {
	if b < 2<<subBits {
		return uint64(b)
	}
	shift := b>>subBits - 1
	return uint64(b-(shift+1)<<subBits+1<<subBits) << shift
}

func (h *histogram) record(d time.Duration) {
	us := max(d.Microseconds(), 0)
	h.counts[bucketOf(uint64(us))].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// quantile returns the value at quantile q (0 < q ≤ 1), in milliseconds.
func (h *histogram) quantile(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen >= rank {
			return float64(lowest(b)) / 1000
		}
	}
	return h.maxMS()
}

func (h *histogram) maxMS() float64 { return float64(h.max.Load()) / float64(time.Millisecond) }

// Latency is a latency distribution in milliseconds, as printed.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func (h *histogram) summary() Latency {
	return Latency{
		Count: h.n.Load(),
		P50:   round3(h.quantile(0.50)),
		P90:   round3(h.quantile(0.90)),
		P99:   round3(h.quantile(0.99)),
		P999:  round3(h.quantile(0.999)),
		Max:   round3(h.maxMS()),
	}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
