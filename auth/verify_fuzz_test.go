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
	// Minted at a fixed time: the fuzzing workers are other processes,
	// and one minting a second later than the seed was recorded would
	// hold a different valid token than the seed.
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	valid, _ := auth.Mint(secret, auth.NewClaims("42", "acme", []string{"user:7"}, 100*365*24*time.Hour, issued))
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
