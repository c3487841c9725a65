package redis

import "herald/channels"

// PerChannelAppender is the Appender a Redis Cluster gets, on any broker:
// one script per channel, each ranking in its own copy of the sequence.
func PerChannelAppender(b *Broker) channels.Appender { return appender{b: b, perChannel: true} }
