// Package stacks lets a test see where other goroutines wait, where no
// hook of the code under test tells.
package stacks

import (
	"runtime"
	"strings"
)

// Parked reports whether a goroutine is blocked in state (as a stack dump
// names it: "sync.Cond.Wait", "sync.Mutex.Lock") with fn on its stack.
func Parked(state, fn string) bool {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(head, "["+state) && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}
