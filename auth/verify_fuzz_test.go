package auth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"herald/auth"
)

// FuzzVerify feeds arbitrary tokens to the verifier: it must never panic,
// and must accept nothing it did not sign — only the seeded valid tokens,
// byte for byte, pass.
func FuzzVerify(f *testing.F) {
	v, err := auth.NewVerifier(auth.Config{Secret: secret})
	if err != nil {
		f.Fatal(err)
	}
	valid, _ := auth.Mint(secret, auth.NewClaims("42", "acme", []string{"user:7"}, 100*365*24*time.Hour, time.Now()))
	f.Add(valid)
	f.Add(strings.Replace(valid, "eyJ", "eyK", 1))
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiIsImV4cCI6OTk5OTk5OTk5OX0.")
	f.Add("a.b.c")
	f.Add("")
	f.Add(strings.Repeat("A", 100) + "." + strings.Repeat("B", 100) + ".")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err == nil {
			if token != valid {
				t.Fatalf("accepted a token it did not sign: %q (claims %+v)", token, c)
			}
			return
		}
		if !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("unclassified error %v", err)
		}
		if strings.Contains(err.Error(), string(secret)) {
			t.Fatalf("error leaks the secret: %v", err)
		}
	})
}
