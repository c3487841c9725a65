// Package redis is the Redis engine: channel logs shared by every herald
// node, on a single Redis or a Redis Cluster, with live fan-out through
// sharded pub/sub.
//
// Each channel C has three kinds of keys (four on a Cluster, below), all
// carrying the hash tag {C} so that they live in one cluster slot and one
// Lua script may touch them:
//
//	herald:{C}:meta       hash: epoch, top (newest offset); TTL MetaTTL
//	herald:{C}:log        stream, entry id "<offset>-0", field d = data;
//	                      MAXLEN HistorySize, TTL HistoryTTL
//	herald:{C}:idem:<key> string "<offset>:<epoch>"; TTL IdempotencyTTL
//
// and one sharded pub/sub channel, herald:{C}, carrying
// "<offset>:<epoch>:<data>". Publish is one script: it assigns the offset,
// appends to the stream, sets the idempotency key and SPUBLISHes, so no
// reader sees an offset without its predecessors and subscribers receive
// appends in order. When the meta hash is missing (first use, expiry, a
// Redis restart without persistence, FLUSHALL, failover to an empty
// replica) the script starts a new epoch.
//
// On a single Redis, Appender appends one publication to several channels,
// ranked in its sequence (herald:status:{<key>}, a hash of status and
// rank), in one script: one round trip per webhook. On a Redis Cluster it
// appends to each channel in a script of its own, ranking in a copy of the
// sequence in the channel's slot: herald:{C}:status:<key>.
//
// Each node keeps one sharded pub/sub connection per Redis master it has
// subscribers on, and one subscription per channel with local subscribers.
// Pub/sub is at most once, so the engine never trusts it alone: every
// publication is checked against the last offset delivered for its
// channel, a gap is filled from the stream, and after any interruption of
// a feed (error, or no answer to its pings) every channel on it is re-read
// from its last delivered offset. What the stream no longer has is
// announced to the hub as a reset, never skipped silently.
package redis
