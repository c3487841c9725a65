// Package channels defines what a herald channel is and the ordered log
// behind it.
//
// A channel is "namespace:id" (see Parse). Every channel is an append-only
// log: each publication gets the next integer offset, and the log as a whole
// has an epoch that changes whenever the log was lost or reset, so that an
// offset is only meaningful together with its epoch. Grants decides which
// channels a token may read.
//
// Broker is the contract every log implementation keeps; the hub and the
// ingress depend on it and nothing else. Implementations live in
// sub-packages (memory, redis) and are held to the same conformance suite in
// channelstest.
package channels
