// Command herald runs a herald node: the websocket hub, the provider
// ingress and the server API on one address.
//
//	herald --dev        # embedded broker, generated secrets, try it locally
//	herald              # configured from HERALD_* variables (see README)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"herald/auth"
	"herald/hub"
	"herald/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

func run(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if cmd, ok := findCommand(args[0]); ok {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return cmd.run(ctx, args[1:], lookupEnv, stdout, stderr)
		}
	}
	cfg, err := parseConfig(args, lookupEnv, stderr)
	if err != nil {
		return configError(stderr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "herald:", err)
		return 1
	}
	return 0
}

func configError(stderr io.Writer, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "herald: configuration:", err)
	return 2
}

// serve runs a node until ctx is cancelled (SIGTERM or SIGINT), then drains
// it: /readyz fails, clients are closed with 4010 over the drain window,
// in-flight requests finish, and it returns within the shutdown timeout.
func serve(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	logger := newLogger(cfg, stderr)
	scfg, err := serverConfig(cfg, logger)
	if err != nil {
		return err
	}
	srv, err := server.New(scfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		srv.Close()
		return err
	}
	// Connections not yet upgraded hold files too: bound them all, so that
	// a flood of TCP connections waits in the kernel's queue instead of
	// taking the files the broker and the node need.
	ln = newLimitListener(ln.(*net.TCPListener), acceptedConns(cfg.MaxConns))
	httpSrv := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(ln) }()
	logger.Info("herald listening", "addr", ln.Addr().String(), "node", cfg.NodeID, "broker", brokerName(cfg))
	if cfg.DedupWindow < longestProviderRetries {
		logger.Warn("HERALD_DEDUP_WINDOW is shorter than the longest provider retries: a webhook retried after it is published again",
			"dedup_window", cfg.DedupWindow.String(), "longest_provider_retries", longestProviderRetries.String())
	}
	warnMerchantless(logger, cfg)
	if n := len(cfg.JWTSecret); n > 0 && n < 32 {
		// RFC 7518 §3.2: an HMAC key at least as long as the hash. A short
		// one can be guessed from any token, and a guess mints any grant.
		logger.Warn("HERALD_JWT_SECRET is shorter than 32 bytes: it can be found from any token by trying secrets, and then any token can be forged", "bytes", n)
	}
	if cfg.ShutdownTimeout-cfg.DrainWindow < closeWait {
		// The last client is closed at the window's end, and one that
		// does not answer its 4010 is waited for this long.
		logger.Warn("HERALD_SHUTDOWN_TIMEOUT leaves less than 10s after HERALD_DRAIN_WINDOW: a last client that does not answer its close makes the stop cut (exit 1)",
			"drain_window", cfg.DrainWindow.String(), "shutdown_timeout", cfg.ShutdownTimeout.String())
	}
	if def := hub.DefaultMaxConns(); cfg.MaxConns > def {
		logger.Warn(fmt.Sprintf("HERALD_MAX_CONNECTIONS leaves fewer than %d of the file limit to webhooks, the API and the broker: clients can starve them", hub.FilesKept),
			"max_connections", cfg.MaxConns, "default", def)
	}
	if cfg.Dev {
		printDev(stdout, cfg, ln.Addr())
	}

	select {
	case err := <-served:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down", "drain_window", cfg.DrainWindow.String(), "shutdown_timeout", cfg.ShutdownTimeout.String())
	// A second signal ends the process at once (the default action).
	signal.Reset(syscall.SIGTERM, syscall.SIGINT)
	return shutdown(logger, cfg, srv, httpSrv)
}

// acceptedConns is how many TCP connections a node holds at once: its
// websocket clients, and half of what FilesKept leaves for webhooks and
// API calls, and for clients beyond the limit to be told 1013.
func acceptedConns(maxConns int) int {
	return maxConns + hub.FilesKept/2
}

// closeWait is how long a websocket close may take: coder/websocket waits
// up to 5 s to write the close frame to a client that does not read, and
// 5 s more for its answer.
const closeWait = 10 * time.Second

// warnMerchantless warns of every provider enabled without a merchant:
// its webhooks that name neither a user nor a merchant (Kriptomat's master
// balance alerts, the gateway's invoices, 0xpay's withdrawals) are kept as
// dead letters, answered 202, and the provider does not send them again.
func warnMerchantless(logger *slog.Logger, cfg *config) {
	slugs := make([]string, 0, len(cfg.Providers))
	for slug, pc := range cfg.Providers {
		if pc.Secret != "" && pc.Merchant == "" {
			slugs = append(slugs, slug)
		}
	}
	sort.Strings(slugs)
	for _, slug := range slugs {
		logger.Warn("a provider is enabled without a merchant: its webhooks that name no user and no merchant are kept as dead letters",
			"provider", slug, "set", "HERALD_INGRESS_"+envSlug(slug)+"_MERCHANT")
	}
}

func serverConfig(cfg *config, logger *slog.Logger) (server.Config, error) {
	pem, err := cfg.publicKeyPEM()
	if err != nil {
		return server.Config{}, err
	}
	return server.Config{
		Node: cfg.NodeID,
		Auth: auth.Config{
			Secret:       []byte(cfg.JWTSecret),
			PublicKeyPEM: pem,
			Issuer:       cfg.JWTIssuer,
			Audience:     cfg.JWTAudience,
			Leeway:       5 * time.Second,
		},
		APIKey:         cfg.APIKey,
		RedisURL:       cfg.RedisURL,
		RedisCluster:   cfg.RedisCluster,
		HistorySize:    cfg.HistorySize,
		HistoryTTL:     cfg.HistoryTTL,
		DedupWindow:    cfg.DedupWindow,
		Providers:      cfg.Providers,
		TrustedProxies: cfg.TrustedProxies,
		Hub: hub.Options{
			SendQueueBytes:   cfg.SendQueueBytes,
			MaxSubscriptions: cfg.MaxSubs,
			MaxConnsPerIP:    cfg.MaxConnsPerIP,
			MaxConns:         cfg.MaxConns,
			FrameRate:        cfg.FrameRate,
			FrameBurst:       cfg.FrameBurst,
		},
		Logger: logger,
	}, nil
}

// longestProviderRetries is how long the slowest provider keeps retrying a
// webhook (the crypto processing gateway, about 34 h; docs/EVENTS.md).
const longestProviderRetries = 34 * time.Hour

func brokerName(cfg *config) string {
	switch {
	case cfg.RedisURL != "":
		return "redis"
	case len(cfg.RedisCluster) > 0:
		return "redis-cluster"
	}
	return "embedded"
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
