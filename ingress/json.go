package ingress

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// Decode unmarshals a webhook body into v with numbers kept as
// json.Number, so no amount ever passes through a float. Trailing data
// after the value is an error. Every error wraps ErrMalformed.
func Decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return Malformed("%s", jsonError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Malformed("data after the JSON value")
	}
	return nil
}

// jsonError words a decoding error for the provider.
func jsonError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field != "" {
			return fmt.Sprintf("field %q: expected %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value)
		}
		return fmt.Sprintf("expected %s, got %s", typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("invalid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated or empty JSON"
	}
	return "invalid JSON: " + err.Error()
}

// Compact returns body without insignificant white space: the form "raw"
// takes in events.
func Compact(body []byte) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, body); err != nil {
		return nil, Malformed("%s", jsonError(err))
	}
	return buf.Bytes(), nil
}

// BodyHash names a body by its content, for events that carry no id of
// their own: the same bytes (white space aside) give the same hash.
func BodyHash(body []byte) string {
	raw, err := Compact(body)
	if err != nil {
		raw = body
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:12])
}

// IsCardNumber reports whether s may be a payment card number: 12 to 19
// digits, however grouped, and no letter. Crypto addresses and IBANs have
// letters; a card already masked has fewer digits.
func IsCardNumber(s string) bool {
	digits := 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case unicode.IsLetter(r):
			return false
		}
	}
	return digits >= 12 && digits <= 19
}

// MaskCard keeps the first six and last four digits of a card number
// (PCI DSS allows at most these) and hides the rest.
func MaskCard(s string) string {
	digits := 0
	for _, r := range s {
		if r >= '0' && r <= '9' {
			digits++
		}
	}
	if digits < 10 {
		return strings.Repeat("*", len(s))
	}
	var b strings.Builder
	seen := 0
	for _, r := range s {
		if r >= '0' && r <= '9' {
			seen++
			if seen > 6 && seen <= digits-4 {
				r = '*'
			}
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Rewrite re-encodes a JSON document compactly, replacing the string or
// number value of every object member whose name is in fields (at any
// depth, inside arrays too) with the string fields[name](value): a card
// number or a code sent as a JSON number is masked like one sent as a
// string. Member order and other number literals are kept exactly.
// It is how card numbers and one-time codes are masked in "raw".
func Rewrite(body []byte, fields map[string]func(string) string) (json.RawMessage, error) {
	if !mayName(body, fields) {
		return Compact(body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var out bytes.Buffer
	if err := rewriteValue(dec, &out, fields, nil, 0); err != nil {
		return nil, Malformed("%s", jsonError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, Malformed("data after the JSON value")
	}
	return out.Bytes(), nil
}

// mayName reports whether body may have a member named in fields. Most
// webhooks carry no card number, and for them compacting gives what
// rewriting would, for a fraction of the cost. A name can hide from a
// search for it only behind an escape, so any backslash says yes.
func mayName(body []byte, fields map[string]func(string) string) bool {
	if bytes.IndexByte(body, '\\') >= 0 {
		return true
	}
	for name := range fields {
		if bytes.Contains(body, []byte(`"`+name+`"`)) {
			return true
		}
	}
	return false
}

// MaxDepth bounds how deeply a webhook's arrays and objects may nest, and
// nesting in Rewrite; real payloads are a handful deep.
const MaxDepth = 64

// Depth returns how deeply the arrays and objects of a JSON text nest,
// counting its brackets outside strings. It does not validate: what the
// decoders refuse they refuse anyway.
func Depth(doc []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range doc {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

var errTooDeep = errors.New("JSON nested too deeply")

func rewriteValue(dec *json.Decoder, out *bytes.Buffer, fields map[string]func(string) string, mask func(string) string, depth int) error {
	if depth > MaxDepth {
		return errTooDeep
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			out.WriteByte('{')
			for first := true; dec.More(); first = false {
				if !first {
					out.WriteByte(',')
				}
				key, err := dec.Token()
				if err != nil {
					return err
				}
				name, _ := key.(string)
				writeString(out, name)
				out.WriteByte(':')
				if err := rewriteValue(dec, out, fields, fields[name], depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
			out.WriteByte('}')
		case '[':
			out.WriteByte('[')
			for first := true; dec.More(); first = false {
				if !first {
					out.WriteByte(',')
				}
				if err := rewriteValue(dec, out, fields, mask, depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
			out.WriteByte(']')
		}
	case string:
		if mask != nil {
			t = mask(t)
		}
		writeString(out, t)
	case json.Number:
		if mask != nil {
			writeString(out, mask(t.String()))
		} else {
			out.WriteString(t.String())
		}
	case bool:
		if t {
			out.WriteString("true")
		} else {
			out.WriteString("false")
		}
	case nil:
		out.WriteString("null")
	}
	return nil
}

func writeString(out *bytes.Buffer, s string) {
	b, _ := marshal(s)
	out.Write(b)
}

// marshal is json.Marshal but for < > &, which it leaves as they are
// where Marshal makes each six bytes: what herald sends is read as JSON,
// never pasted into HTML.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
