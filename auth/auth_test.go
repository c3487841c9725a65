package auth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"herald/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func claims(mod func(*jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "42", "exp": time.Now().Add(time.Hour).Unix(), "merchant": "acme"}
	if mod != nil {
		mod(&c)
	}
	return c
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signRaw signs a payload as written, HS256 with secret: JSON that
// jwt.MapClaims cannot make, such as a name given twice.
func signRaw(t *testing.T, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(unsigned, secret)
	if err != nil {
		t.Fatal(err)
	}
	return unsigned + "." + enc.EncodeToString(sig)
}

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestVerify_HMACAcceptsEveryHSAlgorithm(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		c, err := v.Verify(sign(t, m, secret, claims(nil)))
		if err != nil {
			t.Fatalf("%s: %v", m.Alg(), err)
		}
		g := c.Grants()
		if !g.Allows("user:42") || !g.Allows("merchant:acme") || !g.Allows("alerts:acme") || g.Allows("user:43") {
			t.Fatalf("%s: wrong grants %+v", m.Alg(), g)
		}
	}
}

func TestVerify_PublicKeyKinds(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name   string
		pub    any
		method jwt.SigningMethod
		key    any
	}{
		{"RS256", &rsaKey.PublicKey, jwt.SigningMethodRS256, rsaKey},
		{"ES256", &ecKey.PublicKey, jwt.SigningMethodES256, ecKey},
		{"EdDSA", edPub, jwt.SigningMethodEdDSA, edKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := auth.NewVerifier(auth.Config{PublicKeyPEM: pemOf(t, tc.pub)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(sign(t, tc.method, tc.key, claims(nil))); err != nil {
				t.Fatalf("valid token refused: %v", err)
			}
			// An HMAC token keyed with the public key's own PEM is the
			// classic algorithm-confusion attack.
			forged := sign(t, jwt.SigningMethodHS256, pemOf(t, tc.pub), claims(nil))
			if _, err := v.Verify(forged); !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("HS256 token signed with the public key accepted: %v", err)
			}
		})
	}
}

// The leeway forgives an issuer's clock that runs ahead (nbf, iat), never
// an expired token: one accepted would be closed as expired at once.
func TestVerify_LeewayIsForTheIssuersClockNotForExpiry(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Secret: secret, Leeway: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	at := func(claim string, d time.Duration) string {
		return sign(t, jwt.SigningMethodHS256, secret, claims(func(c *jwt.MapClaims) { (*c)[claim] = time.Now().Add(d).Unix() }))
	}
	for _, tc := range []struct {
		name, token, refused string
	}{
		{"expired 2 s ago", at("exp", -2*time.Second), "token expired"},
		{"nbf 2 s ahead", at("nbf", 2*time.Second), ""},
		{"iat 2 s ahead", at("iat", 2*time.Second), ""},
		{"iat an hour ahead", at("iat", time.Hour), "token used before issued"},
	} {
		_, err := v.Verify(tc.token)
		if tc.refused == "" && err != nil || tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)) {
			t.Errorf("%s: %v, want refused %q", tc.name, err, tc.refused)
		}
	}
}

func TestVerify_RejectsHostileTokens(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	v, err := auth.NewVerifier(auth.Config{Secret: secret, Issuer: "herald-test", Audience: "dashboards"})
	if err != nil {
		t.Fatal(err)
	}
	good := func(c *jwt.MapClaims) { (*c)["iss"] = "herald-test"; (*c)["aud"] = "dashboards" }
	with := func(f func(*jwt.MapClaims)) jwt.MapClaims {
		return claims(func(c *jwt.MapClaims) { good(c); f(c) })
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, with(func(*jwt.MapClaims) {})).SignedString(jwt.UnsafeAllowNoneSignatureType)
	valid := sign(t, jwt.SigningMethodHS256, secret, with(func(*jwt.MapClaims) {}))
	tampered := valid[:len(valid)-2] + "AA"
	if strings.HasSuffix(valid, "AA") {
		tampered = valid[:len(valid)-2] + "BB"
	}
	cases := map[string]string{
		"alg none":          none,
		"tampered":          tampered,
		"wrong secret":      sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret!!"), with(func(*jwt.MapClaims) {})),
		"RS256 for HMAC":    sign(t, jwt.SigningMethodRS256, rsaKey, with(func(*jwt.MapClaims) {})),
		"expired":           sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["exp"] = time.Now().Add(-time.Minute).Unix() })),
		"no exp":            sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { delete(*c, "exp") })),
		"no iss":            sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { delete(*c, "iss") })),
		"no aud":            sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { delete(*c, "aud") })),
		"no sub":            sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { delete(*c, "sub") })),
		"not yet valid":     sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["nbf"] = time.Now().Add(time.Hour).Unix() })),
		"wrong issuer":      sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["iss"] = "someone-else" })),
		"wrong audience":    sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["aud"] = "other" })),
		"merchant number":   sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["merchant"] = 7 })),
		"garbage":           "not.a.token",
		"empty":             "",
		"huge":              strings.Repeat("a", auth.MaxTokenLength+1),
		"valid then space":  valid + " ",
		"claim in capitals": sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["MERCHANT"] = "other" })),
		"sub in capitals":   sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { delete(*c, "sub"); (*c)["SUB"] = "42" })),
		"sub twice": signRaw(t, fmt.Sprintf(`{"sub":"42","iss":"herald-test","aud":"dashboards","exp":%d,"sub":"43"}`,
			time.Now().Add(time.Hour).Unix())),
		"sub number":       sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["sub"] = 42 })),
		"channels string":  sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["channels"] = "user:1" })),
		"channels numbers": sign(t, jwt.SigningMethodHS256, secret, with(func(c *jwt.MapClaims) { (*c)["channels"] = []int{1} })),
		"crit header":      critical(t, with(func(*jwt.MapClaims) {})),
	}
	// The reason a client is told names the problem.
	reasons := map[string]string{
		"alg none":          "signature invalid",
		"tampered":          "signature invalid",
		"expired":           "token expired",
		"no exp":            "missing exp claim",
		"no iss":            "missing iss claim",
		"no aud":            "missing aud claim",
		"no sub":            "missing sub claim",
		"not yet valid":     "not valid yet",
		"wrong issuer":      "wrong issuer",
		"wrong audience":    "wrong audience",
		"huge":              "longer than",
		"claim in capitals": `"MERCHANT": claim names are case-sensitive`,
		"sub in capitals":   `"SUB": claim names are case-sensitive`,
		"sub twice":         `"sub" given twice`,
		"merchant number":   `claim "merchant" must be a string`,
		"sub number":        `claim "sub" must be a string`,
		"channels string":   `claim "channels" must be an array of strings`,
		"channels numbers":  `claim "channels" must be an array of strings`,
		"crit header":       `critical extensions`,
	}
	if _, err := v.Verify(valid); err != nil {
		t.Fatalf("the valid token itself was refused: %v", err)
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := v.Verify(tok)
			if !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("accepted (claims %+v, err %v)", c, err)
			}
			if strings.Contains(err.Error(), string(secret)) {
				t.Fatalf("error leaks the secret: %v", err)
			}
			if want := reasons[name]; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
}

// critical signs c, HS256 with secret, with a header that names a
// critical extension (RFC 7797's unencoded payload).
func critical(t *testing.T, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tok.Header["crit"] = []string{"b64"}
	tok.Header["b64"] = true
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBearer(t *testing.T) {
	for header, want := range map[string]string{
		"Bearer abc":   "abc",
		"bearer abc":   "abc",
		"Bearer   abc": "abc",
		"Bearer\tabc":  "abc",
		"Bearerabc":    "",
		"Bearer":       "",
		"Basic abc":    "",
		"":             "",
	} {
		got, ok := auth.Bearer(http.Header{"Authorization": {header}})
		if got != want || ok != (want != "") {
			t.Errorf("%q: %q %v, want %q", header, got, ok, want)
		}
	}
}

func TestNewVerifier_ConfigErrors(t *testing.T) {
	for name, cfg := range map[string]auth.Config{
		"nothing":     {},
		"both":        {Secret: secret, PublicKeyPEM: []byte("x")},
		"not PEM":     {PublicKeyPEM: []byte("hello")},
		"private key": {PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})},
	} {
		if _, err := auth.NewVerifier(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMint_RoundTrip(t *testing.T) {
	v, _ := auth.NewVerifier(auth.Config{Secret: secret})
	tok, err := auth.Mint(secret, auth.NewClaims("7", "m1", []string{"user:8"}, time.Minute, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Grants().List(); strings.Join(got, ",") != "user:7,merchant:m1,alerts:m1,user:8" {
		t.Fatalf("grants %v", got)
	}
}

// TestVerify_RefusesASecondSpellingOfASignedToken: base64 leaves unused
// bits in the last character of the signature; a lenient decoder accepts
// them set, which makes a different string that verifies.
func TestVerify_RefusesASecondSpellingOfASignedToken(t *testing.T) {
	v, _ := auth.NewVerifier(auth.Config{Secret: secret})
	tok, _ := auth.Mint(secret, auth.NewClaims("42", "", nil, time.Hour, time.Now()))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	// HS256's 32-byte signature is 43 characters: the last one carries 4
	// bits of data and 2 unused ones.
	other := tok[:len(tok)-1] + string(alphabet[last|1])
	if other == tok {
		other = tok[:len(tok)-1] + string(alphabet[last|2])
	}
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(other); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("accepted %q, a second spelling of %q", other, tok)
	}
	// Go's base64 decoder skips line breaks, even in strict mode.
	sig := strings.LastIndexByte(tok, '.') + 5
	for _, brk := range []string{"\n", "\r", "\r\n"} {
		spelled := tok[:sig] + brk + tok[sig:]
		if _, err := v.Verify(spelled); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("accepted %q, a second spelling of %q", spelled, tok)
		}
	}
}
