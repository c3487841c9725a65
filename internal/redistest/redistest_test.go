package redistest

import (
	"errors"
	"testing"
)

// A server started on a port another redis-server holds must not take
// that server's answers for its own.
func TestLaunch_SeesAnotherServerOnItsPort(t *testing.T) {
	a := Start(t, Options{})
	b := &Server{t: t, dir: t.TempDir(), port: a.port}
	t.Cleanup(b.Stop)
	if err := b.launch(); !errors.Is(err, errPortTaken) {
		t.Fatalf("launch on a taken port: %v", err)
	}
	if reply, err := a.Do("PING"); err != nil || reply != "PONG" {
		t.Fatalf("the first server after the second's attempt: %q %v", reply, err)
	}
}
