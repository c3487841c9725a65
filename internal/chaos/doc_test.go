// Package chaos proves herald's central promise under failure: every
// webhook answered 200 reaches every subscribed client exactly once and in
// order, or the client is told (recovered:false) that it has a gap.
//
// TestChaos runs real herald processes on one Redis with AOF, a provider
// simulator that retries anything but 200 and sometimes delivers twice,
// and many clients that drop and resume on random nodes, some too slow to
// keep up; meanwhile nodes are killed with SIGKILL and restarted, and Redis
// is restarted and paused. At the end it checks every channel's log and
// every client's record. HERALD_CHAOS=large runs the big version recorded
// in RELIABILITY.md.
package chaos
