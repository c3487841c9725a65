package hub

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeFrame feeds arbitrary client frames to the decoder: it must
// never panic, and must sort every input into exactly one of: a protocol
// error (close 4002), a refusal with an error frame, or a frame of a known
// type.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range []string{
		`{"id":1,"type":"connect","token":"x.y.z"}`,
		`{"id":2,"type":"subscribe","channel":"user:42","since":{"offset":17,"epoch":"E"}}`,
		`{"id":3,"type":"unsubscribe","channel":"user:42"}`,
		`{"id":4,"type":"history","channel":"user:42","limit":50}`,
		`{"id":5,"type":"refresh","token":"t"}`,
		`{"id":6,"type":"ping"}`,
		`{"id":"x","type":"ping"}`,
		`{"type":7}`,
		`[1,2]`, `"ping"`, `{`, ``, "{\"type\":\"ping\",\"x\":\"\xff\"}",
		`{"type":"ping","type":"subscribe"}`,
		`{"type":"subscribe","since":{"offset":-1,"epoch":"E"}}`,
		`{"type":"history","limit":1e400}`,
	} {
		f.Add([]byte(seed))
	}
	known := map[string]bool{typeConnect: true, typeSubscribe: true, typeUnsubscribe: true, typeHistory: true, typeRefresh: true, typePing: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeFrame(data)
		var re *requestError
		switch {
		case errors.Is(err, errProtocol):
			// 4002; nothing else to check.
		case errors.As(err, &re):
			if re.code != codeBadRequest || re.message == "" {
				t.Fatalf("refusal %+v", re)
			}
		case err != nil:
			t.Fatalf("unclassified error %v", err)
		default:
			if !known[fr.Type] {
				t.Fatalf("accepted unknown type %q", fr.Type)
			}
			if !utf8.Valid(data) || !json.Valid(data) {
				t.Fatalf("accepted a frame that is not valid UTF-8 JSON: %q", data)
			}
		}
	})
}
