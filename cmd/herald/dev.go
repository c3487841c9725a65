package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"herald/auth"
	"herald/ingress"
	"herald/ingress/providers"
)

// Dev mode identities: the printed token is for this user and merchant,
// and every provider files its merchant-less payloads under the merchant.
const (
	devUser     = "demo"
	devMerchant = "demo"
)

// applyDev fills what --dev generates: secrets that were not given, every
// provider enabled, text logs.
func applyDev(c *config) {
	c.generated = map[string]bool{}
	generate := func(name string, secret *string) {
		if *secret == "" {
			*secret = randomSecret()
			c.generated[name] = true
		}
	}
	if c.JWTPublicKey == "" {
		generate("HERALD_JWT_SECRET", &c.JWTSecret)
	}
	generate("HERALD_API_KEY", &c.APIKey)
	for slug, pc := range c.Providers {
		generate(providerSecretVar(slug), &pc.Secret)
		if pc.Merchant == "" {
			pc.Merchant = devMerchant
		}
		c.Providers[slug] = pc
	}
	c.LogFormat = "text"
}

// devClaims are the printed token's: the dev user and merchant, every
// merchant a provider was configured with besides, and the issuer and
// audience the node checks, so the token works whatever was configured.
func devClaims(c *config, now time.Time) auth.Claims {
	claims := auth.NewClaims(devUser, devMerchant, devChannels(c), 24*time.Hour, now)
	claims.CheckedBy(c.JWTIssuer, c.JWTAudience)
	return claims
}

// devChannels grants the merchant and alerts channels of every merchant
// other than the dev merchant that the printed samples' events go to: one
// named by HERALD_INGRESS_<SLUG>_MERCHANT, or by a sample itself (0xpay's
// merchantId). Without them a developer would post a sample, get 200,
// and watch the dashboard stay empty.
func devChannels(c *config) []string {
	seen := map[string]bool{devMerchant: true}
	var chans []string
	grant := func(m string) {
		if !seen[m] {
			seen[m] = true
			chans = append(chans, "merchant:"+m, "alerts:"+m)
		}
	}
	for _, pc := range c.Providers {
		grant(pc.Merchant)
	}
	for _, p := range providers.All() {
		if _, ok := c.Providers[p.Slug]; !ok {
			continue
		}
		for _, f := range samples(p.Slug) {
			body, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			if ev, err := p.Parse(&ingress.Request{Body: body, Now: time.Now()}); err == nil && ev.Merchant != "" {
				grant(ev.Merchant)
			}
		}
	}
	sort.Strings(chans)
	return chans
}

// samples are the sample webhooks of a provider under testdata/ in the
// current directory (none when it is elsewhere).
func samples(slug string) []string {
	files, _ := filepath.Glob(filepath.Join("testdata", slug, "*.json"))
	out := files[:0]
	for _, f := range files {
		if !strings.HasSuffix(f, ".golden.json") {
			out = append(out, f)
		}
	}
	return out
}

func alsoGranted(chans []string) string {
	if len(chans) == 0 {
		return ""
	}
	return ", also " + strings.Join(chans, " ")
}

// providerSecretVar names a provider's secret: HERALD_INGRESS_<SLUG>_SECRET.
func providerSecretVar(slug string) string { return "HERALD_INGRESS_" + envSlug(slug) + "_SECRET" }

func randomSecret() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// printDev tells a developer how to use the node just started: a
// dashboard link with a token, and curl lines posting the samples. A
// secret it was given is not printed, nor a token signed with one: a
// stray HERALD_DEV on a real node must not put them in its logs.
func printDev(w io.Writer, c *config, addr net.Addr) {
	base := "http://" + localAddr(addr)
	secret := func(name, value string) string {
		if c.generated[name] {
			return value
		}
		return "$" + name
	}
	fmt.Fprintf(w, "\nherald --dev is running at %s (embedded broker; nothing survives a restart)\n\n", base)
	if c.JWTSecret != "" && !c.generated["HERALD_JWT_SECRET"] {
		also := ""
		for _, ch := range devChannels(c) {
			also += " --channel " + ch
		}
		fmt.Fprintf(w, "Token:      HERALD_JWT_SECRET is yours, so none is printed: herald token --sub %s --merchant %s%s mints one\n", devUser, devMerchant, also)
	} else if c.JWTSecret != "" {
		claims := devClaims(c, time.Now())
		token, err := auth.Mint([]byte(c.JWTSecret), claims)
		if err == nil {
			fmt.Fprintf(w, "Dashboard:  %s/#token=%s\n", base, token)
			fmt.Fprintf(w, "Token (sub=%s, merchant=%s%s, 24h):\n  %s\n", devUser, devMerchant, alsoGranted(claims.Channels), token)
			fmt.Fprintf(w, "Follow from a terminal:\n  herald tail merchant:%s --url %s --token %s\n", devMerchant, base, token)
			if k, ok := c.Providers["kriptomat"]; ok {
				fmt.Fprintf(w, "  herald send kriptomat testdata/kriptomat/deposit.json --url %s --secret %s\n", base, secret(providerSecretVar("kriptomat"), k.Secret))
			}
		}
	}
	fmt.Fprintf(w, "API key:    %s\n\n", secret("HERALD_API_KEY", c.APIKey))
	fmt.Fprintln(w, "Post the sample webhooks from testdata/ (run from the repository root):")
	slugs := make([]string, 0, len(c.Providers))
	for slug := range c.Providers {
		slugs = append(slugs, slug)
	}
	sort.Strings(slugs)
	for _, slug := range slugs {
		for _, f := range samples(slug) {
			fmt.Fprintf(w, "  curl -sS -H \"Authorization: Bearer %s\" -H 'Content-Type: application/json' --data-binary @%s %s/ingress/%s\n",
				secret(providerSecretVar(slug), c.Providers[slug].Secret), f, base, slug)
		}
	}
	fmt.Fprintf(w, "\nPublish directly:\n  curl -sS -H \"Authorization: Bearer %s\" -d '{\"channel\":\"user:%s\",\"data\":{\"hello\":\"world\"}}' %s/v1/publish\n\n",
		secret("HERALD_API_KEY", c.APIKey), devUser, base)
	if _, err := os.Stat("testdata"); err != nil {
		fmt.Fprintln(w, "(testdata/ is not in the current directory: run from the repository root to use the samples)")
	}
}

// localAddr turns a wildcard listen address into one a browser can open.
func localAddr(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
