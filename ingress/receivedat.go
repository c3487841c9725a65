package ingress

import (
	"bytes"
	"time"
)

// The shape of an encoded Event: it opens with its id, and received_at
// precedes every field that could nest a key of the same name (details,
// raw), so the first match is the event's own.
var (
	eventPrefix   = []byte(`{"id":"`)
	receivedAtKey = []byte(`,"received_at":"`)
)

// ReceivedAt returns the received_at of an encoded Event — when its webhook
// arrived — without decoding the rest and without allocating, so the hub can
// measure ingress-to-delivery latency once per publication on its fan-out
// path. Data of another shape (a server API publication) reports false.
func ReceivedAt(data []byte) (time.Time, bool) {
	if !bytes.HasPrefix(data, eventPrefix) {
		return time.Time{}, false
	}
	i := bytes.Index(data, receivedAtKey)
	if i < 0 {
		return time.Time{}, false
	}
	rest := data[i+len(receivedAtKey):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return time.Time{}, false
	}
	return parseUTC(rest[:end])
}

// parseUTC reads what FormatTime writes: 2006-01-02T15:04:05[.999999999]Z.
func parseUTC(b []byte) (time.Time, bool) {
	const base = len("2006-01-02T15:04:05Z")
	if len(b) < base || b[len(b)-1] != 'Z' || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return time.Time{}, false
	}
	nsec := 0
	if frac := b[base-1 : len(b)-1]; len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return time.Time{}, false
		}
		n, ok := digits(frac[1:])
		if !ok {
			return time.Time{}, false
		}
		for i := len(frac) - 1; i < 9; i++ {
			n *= 10
		}
		nsec = n
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
