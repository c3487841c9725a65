package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"herald/channels"
	"herald/hub"
	"herald/ingress"
	"herald/ingress/providers"
)

// config is everything a node is told, from the environment and flags.
type config struct {
	Addr            string
	Dev             bool
	RedisURL        string
	RedisCluster    []string
	JWTSecret       string
	JWTPublicKey    string
	JWTIssuer       string
	JWTAudience     string
	APIKey          string
	HistorySize     int
	HistoryTTL      time.Duration
	DedupWindow     time.Duration
	NodeID          string
	DrainWindow     time.Duration
	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
	SendQueueBytes  int
	MaxSubs         int
	TrustedProxies  []netip.Prefix
	MaxConnsPerIP   int
	MaxConns        int
	FrameRate       float64
	FrameBurst      int
	Providers       map[string]ingress.Config
	// generated names the secrets --dev made up (by variable): only
	// those are printed.
	generated map[string]bool
}

// setting is one configuration item: an environment variable, the flag of
// the same meaning, and how its text is applied to config.
type setting struct {
	env   string
	def   string
	usage string
	set   func(c *config, v string) error
}

// flagName derives the flag from the variable: HERALD_HISTORY_SIZE →
// --history-size.
func (s setting) flagName() string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.env, "HERALD_")), "_", "-")
}

func settings() []setting {
	list := []setting{
		{env: "HERALD_ADDR", def: ":8080", usage: "listen address", set: func(c *config, v string) error {
			c.Addr = v
			return nonEmpty(v)
		}},
		{env: "HERALD_REDIS_URL", usage: "redis://… of a single Redis; empty runs the embedded broker (one node)", set: func(c *config, v string) error {
			c.RedisURL = v
			return nil
		}},
		{env: "HERALD_REDIS_CLUSTER", usage: "comma list of Redis Cluster seed addresses, or one redis[s]://user:password@seed?addr=seed2 URL", set: func(c *config, v string) error {
			c.RedisCluster = splitList(v)
			return nil
		}},
		{env: "HERALD_JWT_SECRET", usage: "HMAC secret for client tokens (HS256/384/512)", set: func(c *config, v string) error {
			c.JWTSecret = v
			return nil
		}},
		{env: "HERALD_JWT_PUBLIC_KEY", usage: "PEM public key (a file path, or the PEM itself) for RS256/ES256/EdDSA tokens", set: func(c *config, v string) error {
			c.JWTPublicKey = v
			return nil
		}},
		{env: "HERALD_JWT_ISSUER", usage: "required iss claim, when set", set: func(c *config, v string) error {
			c.JWTIssuer = v
			return nil
		}},
		{env: "HERALD_JWT_AUDIENCE", usage: "required aud claim, when set", set: func(c *config, v string) error {
			c.JWTAudience = v
			return nil
		}},
		{env: "HERALD_API_KEY", usage: "server API key; the API is disabled when empty", set: func(c *config, v string) error {
			c.APIKey = v
			return nil
		}},
		{env: "HERALD_HISTORY_SIZE", def: "1000", usage: "publications kept per channel", set: func(c *config, v string) (err error) {
			c.HistorySize, err = positiveInt(v)
			return err
		}},
		{env: "HERALD_HISTORY_TTL", def: "24h", usage: "how long a channel's publications are kept after its last one", set: func(c *config, v string) (err error) {
			c.HistoryTTL, err = positiveDuration(v)
			return err
		}},
		{env: "HERALD_DEDUP_WINDOW", def: "72h", usage: "how long provider event ids and idempotency keys are remembered (must outlast provider retries)", set: func(c *config, v string) (err error) {
			c.DedupWindow, err = positiveDuration(v)
			return err
		}},
		{env: "HERALD_NODE_ID", usage: "node name in connected frames and metrics [hostname]", set: func(c *config, v string) error {
			c.NodeID = v
			if v == "" {
				c.NodeID, _ = os.Hostname()
			}
			return nil
		}},
		{env: "HERALD_DRAIN_WINDOW", def: "10s", usage: "on SIGTERM, clients are closed with 4010 spread over this window", set: func(c *config, v string) (err error) {
			c.DrainWindow, err = nonNegativeDuration(v)
			return err
		}},
		{env: "HERALD_SHUTDOWN_TIMEOUT", def: "30s", usage: "on SIGTERM, the process exits after at most this long", set: func(c *config, v string) (err error) {
			c.ShutdownTimeout, err = positiveDuration(v)
			return err
		}},
		{env: "HERALD_LOG_LEVEL", def: "info", usage: "debug, info, warn or error", set: func(c *config, v string) error {
			c.LogLevel = v
			return oneOf(v, "debug", "info", "warn", "error")
		}},
		{env: "HERALD_LOG_FORMAT", def: "json", usage: "json or text (text in --dev)", set: func(c *config, v string) error {
			c.LogFormat = v
			return oneOf(v, "json", "text")
		}},
		{env: "HERALD_SEND_QUEUE_BYTES", def: "4194304", usage: "bytes that may wait for one slow client before it is closed with 4009", set: func(c *config, v string) (err error) {
			c.SendQueueBytes, err = positiveInt(v)
			if err == nil && c.SendQueueBytes < minSendQueueBytes {
				// Half of it bounds a publication: below this, webhooks of
				// ordinary size would be refused.
				err = fmt.Errorf("must be at least %d (64 KiB; got %q)", minSendQueueBytes, v)
			}
			return err
		}},
		{env: "HERALD_MAX_SUBSCRIPTIONS", def: "256", usage: "subscriptions per connection", set: func(c *config, v string) (err error) {
			c.MaxSubs, err = positiveInt(v)
			return err
		}},
		{env: "HERALD_TRUSTED_PROXIES", usage: "comma list of CIDRs of load balancers whose X-Forwarded-For names the client", set: func(c *config, v string) (err error) {
			c.TrustedProxies, err = cidrList(v)
			return err
		}},
		{env: "HERALD_MAX_CONNECTIONS_PER_IP", def: "1000", usage: "websocket connections from one client address; more are closed with 4029", set: func(c *config, v string) (err error) {
			c.MaxConnsPerIP, err = positiveInt(v)
			return err
		}},
		{env: "HERALD_MAX_CONNECTIONS", usage: fmt.Sprintf("websocket connections on this node; more are closed with 1013, and at most a quarter may await authentication; the node holds at most this many plus %d TCP connections at once (default: the file limit less %d, here %d)", acceptedConns(0), hub.FilesKept, hub.DefaultMaxConns()), set: func(c *config, v string) (err error) {
			if v == "" {
				c.MaxConns = hub.DefaultMaxConns()
				return nil
			}
			c.MaxConns, err = positiveInt(v)
			return err
		}},
		{env: "HERALD_CLIENT_FRAME_RATE", def: "50", usage: "frames per second one connection may send on average; faster closes it with 4029", set: func(c *config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f > 0) || math.IsInf(f, 0) { // NaN and Inf would turn the limit off
				return fmt.Errorf("must be a positive number (got %q)", v)
			}
			c.FrameRate = f
			return nil
		}},
		{env: "HERALD_CLIENT_FRAME_BURST", def: "300", usage: "frames one connection may send at once", set: func(c *config, v string) (err error) {
			c.FrameBurst, err = positiveInt(v)
			return err
		}},
	}
	for _, p := range providers.All() {
		list = append(list, providerSettings(p.Slug)...)
	}
	return list
}

// envSlug is a provider slug as it appears in variable names: 0xpay → 0XPAY.
func envSlug(slug string) string { return strings.ToUpper(slug) }

func providerSettings(slug string) []setting {
	prefix := "HERALD_INGRESS_" + envSlug(slug) + "_"
	with := func(c *config, f func(*ingress.Config)) {
		if c.Providers == nil {
			c.Providers = make(map[string]ingress.Config)
		}
		pc := c.Providers[slug]
		f(&pc)
		c.Providers[slug] = pc
	}
	return []setting{
		{env: prefix + "SECRET", usage: slug + " webhook secret; the provider is disabled without one", set: func(c *config, v string) error {
			with(c, func(pc *ingress.Config) { pc.Secret = v })
			return nil
		}},
		{env: prefix + "MERCHANT", usage: "merchant for " + slug + " payloads that name none", set: func(c *config, v string) error {
			with(c, func(pc *ingress.Config) { pc.Merchant = v })
			return validID(v)
		}},
		{env: prefix + "USER_PREFIX", usage: "prefix for " + slug + " user ids", set: func(c *config, v string) error {
			with(c, func(pc *ingress.Config) { pc.UserPrefix = v })
			if v == "" {
				return nil
			}
			// Checked here, not per event: a bad prefix would refuse
			// every webhook that names a user.
			if err := channels.ValidID(v); err != nil {
				return err
			}
			if len(v) >= channels.MaxIDLength {
				return fmt.Errorf("%d characters leave no room for a user id (ids have at most %d)", len(v), channels.MaxIDLength)
			}
			return nil
		}},
		{env: prefix + "ALLOW", usage: "comma list of CIDRs allowed to post " + slug + " webhooks", set: func(c *config, v string) error {
			nets, err := cidrList(v)
			with(c, func(pc *ingress.Config) { pc.Allow = nets })
			return err
		}},
		{env: prefix + "TOLERANCE", def: "12h", usage: "maximum age of a signed " + slug + " timestamp", set: func(c *config, v string) error {
			d, err := positiveDuration(v)
			with(c, func(pc *ingress.Config) { pc.Tolerance = d })
			return err
		}},
	}
}

// parseConfig reads the environment, then flags (which win). Every error
// names the setting.
func parseConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(stderr, fs) }
	devEnv, _ := lookupEnv("HERALD_DEV")
	devDefault := false
	if devEnv != "" {
		// Strictly: a "no" or "off" taken for yes would print generated
		// secrets and enable every provider.
		b, err := strconv.ParseBool(devEnv)
		if err != nil {
			return nil, fmt.Errorf("HERALD_DEV=%q: want true or false (or 1 or 0)", devEnv)
		}
		devDefault = b
	}
	dev := fs.Bool("dev", devDefault, "development mode: embedded broker, generated secrets, every provider enabled, text logs (HERALD_DEV)")
	list := settings()
	values := make([]*string, len(list))
	for i, s := range list {
		values[i] = envString(fs, lookupEnv, s.flagName(), s.env, s.def, s.usage)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c := &config{Dev: *dev}
	for i, s := range list {
		if err := s.set(c, *values[i]); err != nil {
			return nil, fmt.Errorf("%s: %w", s.env, err)
		}
	}
	if c.Dev {
		applyDev(c)
	}
	return c, c.validate()
}

// validate checks what no single setting can.
func (c *config) validate() error {
	switch {
	case c.JWTSecret == "" && c.JWTPublicKey == "":
		return errors.New("HERALD_JWT_SECRET or HERALD_JWT_PUBLIC_KEY is required (or run with --dev)")
	case c.JWTSecret != "" && c.JWTPublicKey != "":
		return errors.New("HERALD_JWT_SECRET and HERALD_JWT_PUBLIC_KEY are exclusive: set one")
	case c.RedisURL != "" && len(c.RedisCluster) > 0:
		return errors.New("HERALD_REDIS_URL and HERALD_REDIS_CLUSTER are exclusive: set one")
	case c.Dev && (c.RedisURL != "" || len(c.RedisCluster) > 0):
		// --dev (or a stray HERALD_DEV) prints secrets and a token; it is
		// not for a node configured for a shared broker.
		return errors.New("--dev (HERALD_DEV) runs the embedded broker and prints its secrets: unset HERALD_REDIS_URL and HERALD_REDIS_CLUSTER, or do not use --dev")
	case c.DrainWindow >= c.ShutdownTimeout:
		return fmt.Errorf("HERALD_DRAIN_WINDOW (%s) must be shorter than HERALD_SHUTDOWN_TIMEOUT (%s): clients are closed within the window, and the node must still stop in time", c.DrainWindow, c.ShutdownTimeout)
	}
	return nil
}

// publicKeyPEM returns the configured public key: the value itself when it
// is PEM, else the contents of the file it names.
func (c *config) publicKeyPEM() ([]byte, error) {
	if c.JWTPublicKey == "" {
		return nil, nil
	}
	if strings.HasPrefix(strings.TrimSpace(c.JWTPublicKey), "-----BEGIN") {
		return []byte(c.JWTPublicKey), nil
	}
	b, err := os.ReadFile(c.JWTPublicKey)
	if err != nil {
		return nil, fmt.Errorf("HERALD_JWT_PUBLIC_KEY: %w", err)
	}
	return b, nil
}

// printConfig writes the effective configuration, secrets masked.
func printConfig(w io.Writer, c *config) {
	values := map[string]string{}
	for _, s := range settings() {
		values[s.env] = ""
	}
	set := func(k, v string) { values[k] = v }
	set("HERALD_ADDR", c.Addr)
	set("HERALD_REDIS_URL", maskURL(c.RedisURL))
	cluster := make([]string, len(c.RedisCluster))
	for i, a := range c.RedisCluster {
		cluster[i] = maskURL(a)
	}
	set("HERALD_REDIS_CLUSTER", strings.Join(cluster, ","))
	set("HERALD_JWT_SECRET", mask(c.JWTSecret))
	set("HERALD_JWT_PUBLIC_KEY", c.JWTPublicKey)
	set("HERALD_JWT_ISSUER", c.JWTIssuer)
	set("HERALD_JWT_AUDIENCE", c.JWTAudience)
	set("HERALD_API_KEY", mask(c.APIKey))
	set("HERALD_HISTORY_SIZE", strconv.Itoa(c.HistorySize))
	set("HERALD_HISTORY_TTL", c.HistoryTTL.String())
	set("HERALD_DEDUP_WINDOW", c.DedupWindow.String())
	set("HERALD_NODE_ID", c.NodeID)
	set("HERALD_DRAIN_WINDOW", c.DrainWindow.String())
	set("HERALD_SHUTDOWN_TIMEOUT", c.ShutdownTimeout.String())
	set("HERALD_LOG_LEVEL", c.LogLevel)
	set("HERALD_LOG_FORMAT", c.LogFormat)
	set("HERALD_SEND_QUEUE_BYTES", strconv.Itoa(c.SendQueueBytes))
	set("HERALD_MAX_SUBSCRIPTIONS", strconv.Itoa(c.MaxSubs))
	set("HERALD_TRUSTED_PROXIES", prefixes(c.TrustedProxies))
	set("HERALD_MAX_CONNECTIONS_PER_IP", strconv.Itoa(c.MaxConnsPerIP))
	set("HERALD_MAX_CONNECTIONS", strconv.Itoa(c.MaxConns))
	set("HERALD_CLIENT_FRAME_RATE", strconv.FormatFloat(c.FrameRate, 'f', -1, 64))
	set("HERALD_CLIENT_FRAME_BURST", strconv.Itoa(c.FrameBurst))
	for slug, pc := range c.Providers {
		prefix := "HERALD_INGRESS_" + envSlug(slug) + "_"
		set(prefix+"SECRET", mask(pc.Secret))
		set(prefix+"MERCHANT", pc.Merchant)
		set(prefix+"USER_PREFIX", pc.UserPrefix)
		set(prefix+"ALLOW", prefixes(pc.Allow))
		set(prefix+"TOLERANCE", pc.Tolerance.String())
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if c.Dev {
		fmt.Fprintln(w, "# --dev: generated secrets and every provider enabled")
	}
	for _, k := range keys {
		fmt.Fprintf(w, "%s=%s\n", k, values[k])
	}
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "****** (" + strconv.Itoa(len(s)) + " bytes)"
}

// maskURL hides a password in redis://user:pass@host: everything between
// the user's colon and the last @, as a URL parser reads it.
func maskURL(s string) string {
	start := strings.Index(s, "//") + 2
	at := strings.LastIndex(s, "@")
	if start < 2 || at < start {
		return s
	}
	if colon := strings.Index(s[start:at], ":"); colon >= 0 {
		return s[:start+colon+1] + "******" + s[at:]
	}
	return s
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// cidrList parses a comma list of CIDRs; a bare address is a /32 or /128.
func cidrList(v string) ([]netip.Prefix, error) {
	var nets []netip.Prefix
	for _, s := range splitList(v) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p, err = a.Prefix(a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", s)
		}
		if p.Addr().Is4In6() {
			// Client addresses are compared unmapped: ::ffff:10.0.0.0/104
			// is 10.0.0.0/8.
			if p.Bits() < 96 {
				return nil, fmt.Errorf("%q: an IPv4-mapped prefix must be /96 or longer", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		nets = append(nets, p)
	}
	return nets, nil
}

func prefixes(nets []netip.Prefix) string {
	out := make([]string, len(nets))
	for i, n := range nets {
		out[i] = n.String()
	}
	return strings.Join(out, ",")
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// minSendQueueBytes is the least HERALD_SEND_QUEUE_BYTES.
const minSendQueueBytes = 64 << 10

func positiveInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("must be a positive integer (got %q)", v)
	}
	return n, nil
}

func positiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("must be a positive duration such as 30s or 24h (got %q)", v)
	}
	return d, nil
}

func nonNegativeDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("must be a duration such as 10s (got %q)", v)
	}
	return d, nil
}

func oneOf(v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("must be one of %s (got %q)", strings.Join(allowed, ", "), v)
}

func validID(v string) error {
	if v == "" {
		return nil
	}
	return channels.ValidID(v)
}
