package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"herald/ingress"
	"herald/ingress/providers"
)

const sendAbout = `
Posts a webhook body (a file, or - for standard input) to a node's
/ingress/<provider> the way that provider does: signed with the provider's
own scheme when it has one, else with the shared secret as a Bearer token.
The secret is HERALD_INGRESS_<SLUG>_SECRET (or --secret). Prints the
node's answer on standard output and its status on standard error; exits
0 when the event was published (or was already: a duplicate), 3 when the
node kept the webhook as a dead letter without publishing it (202), 1
otherwise.

  herald send kriptomat testdata/kriptomat/withdrawal.json`

func runSend(ctx context.Context, args []string, env lookupFunc, stdout, stderr io.Writer) int {
	fs := newFlags("send", stderr, sendAbout)
	base := envString(fs, env, "url", "HERALD_URL", "http://127.0.0.1:8080", "the node (or load balancer)")
	secretFlag := fs.String("secret", "", "the provider's secret [HERALD_INGRESS_<SLUG>_SECRET]")
	merchantFlag := fs.String("merchant", "", "the merchant a provider that names one in a header sends (0xpay's merchant-id) [HERALD_INGRESS_<SLUG>_MERCHANT]")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return usageError(stderr, "send", err)
	}
	p, ok := providerBySlug(pos[0])
	if !ok {
		return usageError(stderr, "send", fmt.Errorf("unknown provider %q (known: %s)", pos[0], strings.Join(providerSlugs(), ", ")))
	}
	variable := providerSecretVar(p.Slug)
	secret := *secretFlag
	if secret == "" {
		secret, _ = env(variable)
	}
	if secret == "" {
		return usageError(stderr, "send", fmt.Errorf("%s (or --secret) is required", variable))
	}
	merchant := *merchantFlag
	if merchant == "" {
		merchant, _ = env("HERALD_INGRESS_" + envSlug(p.Slug) + "_MERCHANT")
	}
	body, err := readInput(pos[1])
	if err != nil {
		return usageError(stderr, "send", err)
	}
	target, err := ingressURL(*base, p.Slug)
	if err != nil {
		return usageError(stderr, "send", fmt.Errorf("--url: %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := webhookRequest(ctx, target, p, ingress.Config{Secret: secret, Merchant: merchant}, body, time.Now())
	if err != nil {
		return failed(stderr, "send", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return failed(stderr, "send", err)
	}
	defer resp.Body.Close()
	fmt.Fprintln(stderr, resp.Status)
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		return failed(stderr, "send", err)
	}
	switch {
	case resp.StatusCode == http.StatusAccepted:
		fmt.Fprintln(stderr, "herald send: kept as a dead letter, not published")
		return 3
	case resp.StatusCode/100 != 2:
		return 1
	}
	return 0
}

// webhookRequest builds the POST a provider would send: its own signature
// headers when it signs (Provider.Sign), else the shared secret as a
// Bearer token, which the ingress accepts from every provider.
func webhookRequest(ctx context.Context, target *url.URL, p ingress.Provider, cfg ingress.Config, body []byte, now time.Time) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "herald-send")
	if p.Sign != nil {
		p.Sign(req.Header, http.MethodPost, target.EscapedPath(), body, cfg, now)
	} else {
		req.Header.Set("Authorization", "Bearer "+cfg.Secret)
	}
	return req, nil
}

// ingressURL appends /ingress/<slug> to the node's base URL, keeping any
// path prefix a proxy adds.
func ingressURL(base, slug string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/ingress/" + slug
	u.RawPath = ""
	return u, nil
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, ingress.MaxBody+1))
	}
	return os.ReadFile(name)
}

func providerBySlug(slug string) (ingress.Provider, bool) {
	for _, p := range providers.All() {
		if p.Slug == slug {
			return p, true
		}
	}
	return ingress.Provider{}, false
}

func providerSlugs() []string {
	var out []string
	for _, p := range providers.All() {
		out = append(out, p.Slug)
	}
	sort.Strings(out)
	return out
}
