package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"herald/auth"
	"herald/channels"
)

const tokenAbout = `
Mints a client token (HS256) signed with HERALD_JWT_SECRET, for trying a
node from a terminal or a script. It grants user:<sub>, merchant:<m> and
alerts:<m> with --merchant, and each --channel exactly. When the node
checks HERALD_JWT_ISSUER / HERALD_JWT_AUDIENCE, the token carries them.
Nodes verifying tokens with a public key need tokens from the identity
provider that holds the private key.

  herald token --sub 42 --merchant acme --ttl 1h`

func runToken(_ context.Context, args []string, env lookupFunc, stdout, stderr io.Writer) int {
	fs := newFlags("token", stderr, tokenAbout)
	sub := fs.String("sub", "", "subject (end-user id): grants user:<sub>")
	merchant := fs.String("merchant", "", "merchant claim: grants merchant:<m> and alerts:<m>")
	var chans stringList
	fs.Var(&chans, "channel", "a channel granted exactly (repeatable)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	secret := envString(fs, env, "jwt-secret", "HERALD_JWT_SECRET", "", "HMAC secret the node verifies tokens with")
	issuer := envString(fs, env, "jwt-issuer", "HERALD_JWT_ISSUER", "", "iss claim")
	audience := envString(fs, env, "jwt-audience", "HERALD_JWT_AUDIENCE", "", "aud claim")
	if _, err := parseArgs(fs, args, 0); err != nil {
		return usageError(stderr, "token", err)
	}
	claims, err := tokenClaims(*sub, *merchant, chans, *ttl, time.Now())
	if err == nil && *secret == "" {
		err = errors.New("HERALD_JWT_SECRET (or --jwt-secret) is required: the token is signed with it")
	}
	if err != nil {
		return usageError(stderr, "token", err)
	}
	claims.CheckedBy(*issuer, *audience)
	tok, err := auth.Mint([]byte(*secret), claims)
	if err != nil {
		return failed(stderr, "token", err)
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// tokenClaims checks what a token would grant, so that a typo fails here
// rather than as a forbidden subscribe later.
func tokenClaims(sub, merchant string, chans []string, ttl time.Duration, now time.Time) (auth.Claims, error) {
	if sub == "" {
		return auth.Claims{}, errors.New("--sub is required")
	}
	if err := channels.ValidID(sub); err != nil {
		return auth.Claims{}, fmt.Errorf("--sub: %w", err)
	}
	if merchant != "" {
		if err := channels.ValidID(merchant); err != nil {
			return auth.Claims{}, fmt.Errorf("--merchant: %w", err)
		}
	}
	for _, c := range chans {
		if _, err := channels.Parse(c); err != nil {
			return auth.Claims{}, fmt.Errorf("--channel: %w", err)
		}
	}
	if ttl <= 0 {
		return auth.Claims{}, fmt.Errorf("--ttl must be positive (got %s)", ttl)
	}
	return auth.NewClaims(sub, merchant, chans, ttl, now), nil
}
