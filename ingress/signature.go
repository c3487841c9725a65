package ingress

import (
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
	"time"
)

// ErrSignature: a signature is present but does not match. Verify
// functions wrap it (or say which header is missing); the framework
// answers 401 either way.
var ErrSignature = errors.New("signature does not match")

// SignHex returns the lowercase hex HMAC of the concatenated parts under
// key, with hash h (sha256.New, sha512.New, …). The key is used as text,
// as every provider herald knows documents it.
func SignHex(h func() hash.Hash, key string, parts ...[]byte) string {
	return hex.EncodeToString(mac(h, key, parts))
}

// VerifyHex checks that sig, hex in either case, is the HMAC of the
// concatenated parts under key, comparing the digests with hmac.Equal.
func VerifyHex(h func() hash.Hash, key, sig string, parts ...[]byte) error {
	got, err := hex.DecodeString(strings.TrimSpace(sig))
	if err != nil {
		return fmt.Errorf("%w: not hex", ErrSignature)
	}
	if !hmac.Equal(got, mac(h, key, parts)) {
		return ErrSignature
	}
	return nil
}

// VerifyHeader checks the hex HMAC a provider sends in header over the
// concatenated parts (see VerifyHex) with the configured secret.
func VerifyHeader(r *Request, header string, h func() hash.Hash, parts ...[]byte) error {
	sig := r.Header.Get(header)
	if sig == "" {
		return fmt.Errorf("missing %s header", header)
	}
	return VerifyHex(h, r.Config.Secret, sig, parts...)
}

// BodySignature is the scheme several providers share: one header holding
// the hex HMAC of the raw body under the secret, with no timestamp.
type BodySignature struct {
	Header string
	Hash   func() hash.Hash
}

// Verify implements Provider.Verify.
func (s BodySignature) Verify(r *Request) error {
	return VerifyHeader(r, s.Header, s.Hash, r.Body)
}

// Sign implements Provider.Sign.
func (s BodySignature) Sign(h http.Header, _, _ string, body []byte, cfg Config, _ time.Time) {
	h.Set(s.Header, SignHex(s.Hash, cfg.Secret, body))
}

func mac(h func() hash.Hash, key string, parts [][]byte) []byte {
	m := hmac.New(h, []byte(key))
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}
