package main

import (
	"net"
	"sync"
)

// limitListener accepts at most cap(sem) connections at once; the rest
// wait in the kernel's queue until one closes. golang.org/x/net/netutil's
// LimitListener does the same, but hides each connection behind a type
// without *net.TCPConn's SyscallConn and SetWriteBuffer, and the hub's
// writes need both (one system call per delivery; a bounded send buffer).
type limitListener struct {
	*net.TCPListener
	sem    chan struct{}
	closed chan struct{}
	once   sync.Once
}

func newLimitListener(l *net.TCPListener, n int) *limitListener {
	return &limitListener{TCPListener: l, sem: make(chan struct{}, n), closed: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.AcceptTCP()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{TCPConn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.TCPListener.Close()
}

// limitedConn gives its place back when closed, once.
type limitedConn struct {
	*net.TCPConn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.release)
	return err
}
