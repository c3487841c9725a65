package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"herald/channels"
)

// Bearer returns the credential of an "Authorization: Bearer <credential>"
// header. The scheme's case does not matter, and spaces or tabs may
// separate it from the credential (RFC 7235, RFC 9110 §11.4).
func Bearer(h http.Header) (string, bool) {
	const scheme = "Bearer"
	v := h.Get("Authorization")
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) || (v[len(scheme)] != ' ' && v[len(scheme)] != '\t') {
		return "", false
	}
	return strings.TrimLeft(v[len(scheme):], " \t"), true
}

// MaxTokenLength bounds what Verify will even look at.
const MaxTokenLength = 16 << 10

// ErrInvalidToken is wrapped by every verification failure.
var ErrInvalidToken = errors.New("invalid token")

// Config selects how tokens are verified. Exactly one of Secret and
// PublicKeyPEM must be set.
type Config struct {
	Secret       []byte
	PublicKeyPEM []byte
	Issuer       string
	Audience     string
	// Leeway tolerates the issuer's clock running ahead: on nbf and iat.
	// Not on exp: a token accepted would be closed as expired at once.
	Leeway time.Duration
}

// Claims are the claims herald reads from a token.
type Claims struct {
	// Merchant grants merchant:<m> and alerts:<m>.
	Merchant string `json:"merchant,omitempty"`
	// Channels are granted exactly as listed.
	Channels []string `json:"channels,omitempty"`
	jwt.RegisteredClaims
}

// Grants returns what the claims allow the bearer to subscribe to.
func (c *Claims) Grants() channels.Grants {
	return channels.Grants{Subject: c.Subject, Merchant: c.Merchant, Channels: c.Channels}
}

// Expires returns the token's expiry.
func (c *Claims) Expires() time.Time { return c.ExpiresAt.Time }

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	key    any
	parser *jwt.Parser
	// issuer and audience are required claims when set.
	issuer, audience string
}

// NewVerifier builds a Verifier, failing with a message that says which
// setting is wrong.
func NewVerifier(cfg Config) (*Verifier, error) {
	var key any
	var methods []string
	switch {
	case len(cfg.Secret) > 0 && len(cfg.PublicKeyPEM) > 0:
		return nil, errors.New("set either a JWT secret or a JWT public key, not both")
	case len(cfg.Secret) > 0:
		key, methods = cfg.Secret, []string{"HS256", "HS384", "HS512"}
	case len(cfg.PublicKeyPEM) > 0:
		pub, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		if key, methods, err = methodsFor(pub); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("no JWT secret or public key configured")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		// Only canonical base64: no second spelling of a signed token.
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &Verifier{key: key, parser: jwt.NewParser(opts...), issuer: cfg.Issuer, audience: cfg.Audience}, nil
}

// Verify checks token and returns its claims. Every failure wraps
// ErrInvalidToken and says why in words fit for the client.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: missing token", ErrInvalidToken)
	}
	if len(token) > MaxTokenLength {
		return nil, fmt.Errorf("%w: token longer than %d bytes", ErrInvalidToken, MaxTokenLength)
	}
	if !compact(token) {
		return nil, fmt.Errorf("%w: malformed token", ErrInvalidToken)
	}
	var c Claims
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			// Extensions the signer says must be understood, and herald
			// understands none (RFC 7515 §4.1.11).
			return nil, errCritical
		}
		return v.key, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidToken, v.reason(err, &c))
	}
	if err := v.exactClaimNames(token); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: missing sub claim", ErrInvalidToken)
	}
	if !c.ExpiresAt.After(time.Now()) { // within the leeway the parser forgave
		return nil, fmt.Errorf("%w: token expired", ErrInvalidToken)
	}
	return &c, nil
}

// missing names the required claims c lacks: exp always, iss and aud when
// the node checks them.
func (v *Verifier) missing(c *Claims) string {
	var names []string
	if c.ExpiresAt == nil {
		names = append(names, "exp")
	}
	if v.issuer != "" && c.Issuer == "" {
		names = append(names, "iss")
	}
	if v.audience != "" && len(c.Audience) == 0 {
		names = append(names, "aud")
	}
	if len(names) == 0 {
		return "missing a required claim"
	}
	return "missing " + strings.Join(names, ", ") + " claim"
}

// claimNames are the claims herald reads.
var claimNames = []string{"sub", "exp", "nbf", "iat", "iss", "aud", "jti", "merchant", "channels"}

// exactClaimNames refuses a payload that names a claim herald reads in
// another case, or twice. Go's JSON decoding matches names in any case and
// keeps the last of several, where claim names are case-sensitive (RFC
// 7519): a custom "Merchant" or "SUB" of the issuer's would otherwise be
// read as a grant. The signature was checked: the payload is the
// issuer's.
func (v *Verifier) exactClaimNames(token string) error {
	payload, err := v.parser.DecodeSegment(strings.Split(token, ".")[1])
	if err != nil {
		return errors.New("malformed payload")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if _, err := dec.Token(); err != nil { // {
		return errors.New("malformed payload")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return errors.New("malformed payload")
		}
		key, _ := t.(string)
		for _, name := range claimNames {
			switch {
			case !strings.EqualFold(key, name):
			case key != name:
				return fmt.Errorf("claim %q: claim names are case-sensitive; herald reads %q", key, name)
			case seen[name]:
				return fmt.Errorf("claim %q given twice", name)
			default:
				seen[name] = true
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return errors.New("malformed payload")
		}
	}
	return nil
}

// compact reports whether token holds only what a compact JWS may: the
// base64url alphabet and dots. Go's base64 decoder skips CR and LF even
// when strict, so without this a signed token with a line break inside
// would verify as a second spelling of itself.
func compact(token string) bool {
	for i := 0; i < len(token); i++ {
		switch b := token[i]; {
		case 'A' <= b && b <= 'Z', 'a' <= b && b <= 'z', '0' <= b && b <= '9', b == '-', b == '_', b == '.':
		default:
			return false
		}
	}
	return true
}

// errCritical refuses a token whose header names critical extensions.
var errCritical = errors.New(`header names critical extensions ("crit"), which herald does not support`)

// reason turns golang-jwt's errors into a short message that names the
// problem without echoing the token. c holds what was decoded.
func (v *Verifier) reason(err error, c *Claims) string {
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.Is(err, errCritical):
		return errCritical.Error()
	case errors.As(err, &typeErr) && typeErr.Field != "":
		// Field is a path through Claims ("RegisteredClaims.sub").
		name := typeErr.Field[strings.LastIndexByte(typeErr.Field, '.')+1:]
		want := "a string"
		if name == "channels" {
			want = "an array of strings"
		}
		return fmt.Sprintf("claim %q must be %s", name, want)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable token (algorithm not accepted)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "signature invalid"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return v.missing(c)
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token used before issued"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "invalid claims"
	}
	return "token rejected"
}

func parsePublicKey(data []byte) (any, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("JWT public key: no PEM block found")
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("JWT public key: %w", err)
		}
		return k, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("JWT public key: %w", err)
		}
		return k, nil
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("JWT public key: %w", err)
		}
		return cert.PublicKey, nil
	}
	return nil, fmt.Errorf("JWT public key: PEM block %q is not a public key or certificate", block.Type)
}

func methodsFor(pub any) (any, []string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return k, []string{"RS256", "RS384", "RS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, []string{"ES256"}, nil
		case elliptic.P384():
			return k, []string{"ES384"}, nil
		case elliptic.P521():
			return k, []string{"ES512"}, nil
		}
		return nil, nil, fmt.Errorf("JWT public key: unsupported ECDSA curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return k, []string{"EdDSA"}, nil
	}
	return nil, nil, fmt.Errorf("JWT public key: unsupported key type %T", pub)
}

// Mint signs claims with an HMAC secret (HS256). It is what `herald --dev`,
// `herald token` and the tests use; production tokens come from the
// operator's own backend.
func Mint(secret []byte, c Claims) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// CheckedBy sets the issuer and audience a node requires of tokens
// (HERALD_JWT_ISSUER, HERALD_JWT_AUDIENCE); empty ones stay unset.
func (c *Claims) CheckedBy(issuer, audience string) {
	c.Issuer = issuer
	if audience != "" {
		c.Audience = jwt.ClaimStrings{audience}
	}
}

// NewClaims fills the claims a token needs: subject, expiry ttl from now, and
// optionally a merchant and listed channels.
func NewClaims(sub, merchant string, chans []string, ttl time.Duration, now time.Time) Claims {
	return Claims{
		Merchant: merchant,
		Channels: chans,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
}
