package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"herald/ingress"
	"herald/ingress/providers"
)

// benchMerchant is the merchant the harness's tokens name, and the one
// herald should be configured with for payloads that name none
// (HERALD_INGRESS_<SLUG>_MERCHANT).
const benchMerchant = "bench"

// providerEnv is the environment that enables every registered provider
// in herald with secret and the harness's merchant.
func providerEnv(secret string) []string {
	var env []string
	for _, p := range providers.All() {
		slug := strings.ToUpper(p.Slug)
		env = append(env, "HERALD_INGRESS_"+slug+"_SECRET="+secret, "HERALD_INGRESS_"+slug+"_MERCHANT="+benchMerchant)
	}
	return env
}

// webhook is one request the harness will post to the ingress.
type webhook struct {
	provider ingress.Provider
	body     []byte
	event    string // the event id herald will give it
	channel  string // the user channel it must reach
}

func (w webhook) config(secret string) ingress.Config {
	return ingress.Config{Secret: secret, Merchant: benchMerchant}
}

// signed returns the ingress path of w and the headers its provider sends
// at now: its own signature, or the shared secret as a Bearer token.
func (w webhook) signed(secret string, now time.Time) (string, http.Header) {
	path := "/ingress/" + w.provider.Slug
	header := http.Header{"Content-Type": {"application/json"}}
	if w.provider.Sign != nil {
		w.provider.Sign(header, http.MethodPost, path, w.body, w.config(secret), now)
	} else {
		header.Set("Authorization", "Bearer "+secret)
	}
	return path, header
}

// sample is a provider payload from testdata/ that names a user, and the
// parts of it that make its event id.
type sample struct {
	provider ingress.Provider
	name     string
	body     []byte
	user     string          // the provider's user id, as parsed
	idParts  map[string]bool // values that make up the event id
}

// loadSamples reads testdata/<slug>/*.json (not the golden files) of
// every registered provider in slugs (all when empty) and keeps those
// that parse into an event for a user: the only ones a per-user client
// can receive. It says why the others were left out.
func loadSamples(dir string, slugs []string) ([]sample, []string, error) {
	var out []sample
	var skipped []string
	for _, p := range providers.All() {
		if len(slugs) > 0 && !slices.Contains(slugs, p.Slug) {
			continue
		}
		files, err := filepath.Glob(filepath.Join(dir, p.Slug, "*.json"))
		if err != nil {
			return nil, nil, err
		}
		for _, f := range files {
			if strings.HasSuffix(f, ".golden.json") {
				continue
			}
			name := p.Slug + "/" + strings.TrimSuffix(filepath.Base(f), ".json")
			body, err := os.ReadFile(f)
			if err != nil {
				return nil, nil, err
			}
			ev, err := parse(p, body)
			if err != nil {
				skipped = append(skipped, name+": "+err.Error())
				continue
			}
			if ev.User == "" || !slices.Contains(ev.Channels(), "user:"+ev.User) {
				skipped = append(skipped, name+": names no user")
				continue
			}
			s := sample{provider: p, name: name, body: body, user: ev.User, idParts: map[string]bool{}}
			for _, part := range strings.FieldsFunc(ev.ID, func(r rune) bool { return strings.ContainsRune(":/|#", r) }) {
				if strings.ContainsAny(part, "0123456789") && part != ev.User {
					s.idParts[part] = true
				}
			}
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, skipped, fmt.Errorf("no payload in %s names a user (providers %v)", dir, slugs)
	}
	return out, skipped, nil
}

// parse runs a provider's adapter as the ingress would on body.
func parse(p ingress.Provider, body []byte) (*ingress.Event, error) {
	return p.Parse(&ingress.Request{
		Method: http.MethodPost, Path: "/ingress/" + p.Slug, Header: http.Header{},
		Body: body, Config: ingress.Config{Merchant: benchMerchant}, Now: time.Now(),
	})
}

// variant makes the sample a new event for user: every value equal to the
// sample's user becomes user, and every value that makes up its event id
// becomes unique to n (and to salt, which tells runs apart: herald
// remembers event ids for its dedup window). It checks the result with
// the provider's own adapter.
func (s sample) variant(user string, n, salt int) (webhook, error) {
	u := uint64(salt)*1_000_000 + uint64(n)%1_000_000
	body, err := rewriteValues(s.body, func(v string) (string, bool) {
		switch {
		case v == s.user:
			return user, true
		case s.idParts[v]:
			return unique(v, u), true
		}
		return "", false
	})
	if err != nil {
		return webhook{}, err
	}
	ev, err := parse(s.provider, body)
	if err != nil {
		return webhook{}, fmt.Errorf("%s varied: %w", s.name, err)
	}
	if ev.User != user {
		return webhook{}, fmt.Errorf("%s varied: user %q, want %q", s.name, ev.User, user)
	}
	return webhook{provider: s.provider, body: body, event: ev.ID, channel: "user:" + user}, nil
}

// unique returns a value like v that no other u gives: digits stay
// digits (a number stays a number below 2^31), a long identifier keeps
// its length and separators, anything else gets a suffix.
func unique(v string, u uint64) string {
	digits := strconv.FormatUint(1_000_000_000+u, 10)
	if strings.Trim(v, "0123456789") == "" {
		return digits
	}
	alnum := 0
	for _, r := range v {
		if isAlnum(r) {
			alnum++
		}
	}
	if alnum < len(digits)+4 {
		return v + "-" + digits
	}
	b := []byte(v)
	for i, j := len(b)-1, len(digits)-1; i >= 0 && j >= 0; i-- {
		if isAlnum(rune(b[i])) {
			b[i] = digits[j]
			j--
		}
	}
	return string(b)
}

func isAlnum(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}

// buildWebhooks makes n webhooks, the i-th for users[i%len(users)] from
// the usable samples in turn.
func buildWebhooks(samples []sample, users []string, n, salt int) ([]webhook, []string, error) {
	usable, skipped, err := usableSamples(samples, users, salt)
	if err != nil {
		return nil, skipped, err
	}
	out := make([]webhook, n)
	for i := range out {
		w, err := usable[i%len(usable)].variant(users[i%len(users)], i, salt)
		if err != nil {
			return nil, skipped, err
		}
		out[i] = w
	}
	return out, skipped, nil
}

// usableSamples keeps the samples that vary into distinct events: one
// whose event id does not change with the varied values (it would be a
// duplicate) is dropped, with the reason.
func usableSamples(samples []sample, users []string, salt int) ([]sample, []string, error) {
	var skipped []string
	usable := samples[:0:0]
	for _, s := range samples {
		a, errA := s.variant(users[0], 0, salt)
		b, errB := s.variant(users[0], 1, salt)
		switch {
		case errA != nil || errB != nil:
			skipped = append(skipped, errors.Join(errA, errB).Error())
		case a.event == b.event:
			skipped = append(skipped, s.name+": event id does not change with the varied values")
		default:
			usable = append(usable, s)
		}
	}
	if len(usable) == 0 {
		return nil, skipped, errors.New("no usable webhook sample")
	}
	return usable, skipped, nil
}

// rewriteValues re-emits a JSON document with every string or number
// value (never a key) for which f says so replaced, keeping the order of
// members and the type of each value (a number stays a number).
func rewriteValues(doc []byte, f func(v string) (string, bool)) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	type level struct {
		object bool
		n      int // tokens written at this level (keys and values)
	}
	var stack []level
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			out.WriteByte(byte(d))
			stack = stack[:len(stack)-1]
			continue
		}
		isKey := false
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			isKey = top.object && top.n%2 == 0
			switch {
			case top.object && !isKey:
				out.WriteByte(':')
			case top.n > 0:
				out.WriteByte(',')
			}
			top.n++
		}
		switch v := tok.(type) {
		case json.Delim:
			out.WriteByte(byte(v))
			stack = append(stack, level{object: v == '{'})
		case string:
			if r, ok := f(v); ok && !isKey {
				v = r
			}
			if err := enc.Encode(v); err != nil {
				return nil, err
			}
			out.Truncate(out.Len() - 1) // Encode's newline
		case json.Number:
			s := string(v)
			if r, ok := f(s); ok {
				if _, err := strconv.ParseFloat(r, 64); err != nil {
					return nil, fmt.Errorf("replacing number %s with %q", s, r)
				}
				s = r
			}
			out.WriteString(s)
		case bool:
			out.WriteString(strconv.FormatBool(v))
		case nil:
			out.WriteString("null")
		}
	}
}
