package ingress

import (
	"bytes"
	"encoding/json"
	"testing"
)

// An event is published with < > & as the provider sent them: escaped,
// each would take six bytes of the subscriber's send queue, and a body
// well under the ingress limit could grow past what a client is sent.
func TestEncode_LeavesHTMLCharactersAlone(t *testing.T) {
	ev := Event{ID: "p:1", Provider: "p", Type: "t", Status: StatusInfo, User: "<u>", ReceivedAt: "now",
		Amounts: map[string]Amount{}, Details: map[string]any{"note": "a&b"}, Raw: json.RawMessage(`{"html":"<b>x</b> & y"}`)}
	data, err := ev.encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"user":"<u>"`, `"note":"a&b"`, `"raw":{"html":"<b>x</b> & y"}`} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("%s lacks %s", data, want)
		}
	}
	if bytes.HasSuffix(data, []byte("\n")) {
		t.Errorf("%q ends in a newline", data)
	}
	var back Event
	if err := json.Unmarshal(data, &back); err != nil || back.User != ev.User {
		t.Fatalf("%s does not decode: %v", data, err)
	}
}
