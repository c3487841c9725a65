package main

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// A limited listener's connections keep what the hub's writes need of a
// TCP connection, and give their place back when closed, once.
func TestLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(ln.(*net.TCPListener), 1)
	defer l.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}

	first := <-accepted
	if _, ok := first.(syscall.Conn); !ok {
		t.Error("a connection hides SyscallConn: the hub would not write it with one system call")
	}
	if _, ok := first.(interface{ SetWriteBuffer(int) error }); !ok {
		t.Error("a connection hides SetWriteBuffer: the hub could not bound its send buffer")
	}
	select {
	case c := <-accepted:
		t.Fatalf("a second connection was accepted beside the first: %v", c.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
	first.Close()
	first.Close() // a second close gives back nothing more
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the second connection was not accepted once the first closed")
	}
	l.Close()
	if _, ok := <-accepted; ok {
		t.Fatal("Accept went on after Close")
	}
	if len(l.sem) != 0 {
		t.Fatalf("%d places still held with every connection closed", len(l.sem))
	}
}
