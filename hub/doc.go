// Package hub is herald's websocket endpoint: it authenticates clients,
// keeps their subscriptions, and fans the channels' publications out to them.
//
// Start with Hub.ServeHTTP (one session per connection, in session.go), then
// subscribe.go, which holds the one subtle piece: joining a channel's live
// feed and its history so that a resuming client gets every missed offset
// once, in order, with nothing lost to publications racing the subscribe.
//
// Each publication is encoded once per node, straight into a websocket
// frame (pubFrame), and the same bytes are queued for every subscriber.
// Every client has a bounded send queue (send.go) drained by a writer
// goroutine that exists only while there is something to write; a client
// whose queue overflows is closed with 4009 and never slows the publisher
// or other clients. The writer hands the frames
// to the connection's wire (wire.go), past coder/websocket's writer: one
// system call per frame, or per queued batch. wire also swaps net/http's
// 4 KiB buffers for small ones, so an idle client costs little.
package hub
