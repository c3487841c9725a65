package memory_test

import (
	"testing"

	"herald/channels"
	"herald/channels/channelstest"
	"herald/channels/memory"
)

func TestConformance(t *testing.T) {
	channelstest.Run(t, func(t *testing.T, o channelstest.Options, h channels.Handler) channels.Broker {
		b := memory.New(memory.Options{HistorySize: o.HistorySize, HistoryTTL: o.HistoryTTL})
		if err := b.Start(h); err != nil {
			t.Fatal(err)
		}
		return b
	})
}
