package ingress

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
)

// Redact hides secrets in a body kept where operators read it (a dead
// letter): the value of every member named in fields is replaced by
// fields[name](value), as Rewrite does. A body that is not valid JSON
// (truncated, a trailing comma) cannot be rewritten, so it is redacted
// textually instead: every `"name": value` pair for those names, string or
// number, quoted or cut short. A malformed request must not carry a card
// number or a one-time code past the redaction.
func Redact(body []byte, fields map[string]func(string) string) []byte {
	if out, err := Rewrite(body, fields); err == nil {
		return out
	}
	for name, mask := range fields {
		re := regexp.MustCompile(`"` + regexp.QuoteMeta(name) + `"\s*:\s*("(?:[^"\\]|\\.)*"?|[-+0-9.eE]+)`)
		body = re.ReplaceAllFunc(body, func(pair []byte) []byte {
			value := re.FindSubmatch(pair)[1]
			s := strings.Trim(string(value), `"`)
			var buf bytes.Buffer
			buf.WriteString(`"` + name + `":`)
			b, _ := json.Marshal(mask(s))
			buf.Write(b)
			return buf.Bytes()
		})
	}
	return body
}

// Hide replaces a secret whatever its value: what one-time codes become
// in dead letters.
func Hide(string) string { return "[redacted]" }
