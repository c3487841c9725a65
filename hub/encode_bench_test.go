package hub

import (
	"bytes"
	"testing"

	"herald/channels"
)

// BenchmarkAppendPub encodes one publication of a 1,000-byte event, as
// HandlePublication does once per publication whatever the number of
// subscribers, and a resume once per missed publication.
func BenchmarkAppendPub(b *testing.B) {
	data := append(append([]byte(`{"id":"`), bytes.Repeat([]byte("x"), 990)...), `"}`...)
	p := channels.Publication{Offset: 123456, Epoch: "9f86d081884c7d65", Data: data}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		_ = appendPub(nil, "user:84624", p)
	}
}
