// Package server assembles a herald node from its configuration: broker,
// hub, ingress, server API, health endpoints and the embedded web assets,
// behind one http.Handler. cmd/herald and the integration tests both build
// nodes through it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"herald/auth"
	"herald/channels"
	"herald/hub"
	"herald/ingress"
	"herald/ingress/providers"
	"herald/internal/clientip"
	"herald/metrics"
	"herald/web"
)

// Config is a node's whole configuration, parsed once by cmd/herald.
type Config struct {
	// Node names this node in connected frames and metrics.
	Node string
	// Auth verifies client tokens.
	Auth auth.Config
	// APIKey enables the server API (§4); empty disables it.
	APIKey string
	// HistorySize and HistoryTTL are each channel's retention.
	HistorySize int
	HistoryTTL  time.Duration
	// DedupWindow is how long provider event ids and idempotency keys are
	// remembered.
	DedupWindow time.Duration
	// Providers configures the ingress providers by slug; those without a
	// secret are disabled.
	Providers map[string]ingress.Config
	// TrustedProxies are the load balancers whose X-Forwarded-For names
	// the client, for per-address limits and provider allow lists.
	TrustedProxies []netip.Prefix
	// Hub tunes websocket sessions; Node, Broker, Verifier and Logger are
	// filled in by New.
	Hub    hub.Options
	Logger *slog.Logger
	// RedisURL (redis://…) or RedisCluster (seed addresses) selects the
	// Redis engine, shared by every node; neither runs the embedded broker.
	RedisURL     string
	RedisCluster []string
	// Broker, when set, is used instead of the one the settings above
	// select.
	Broker channels.Broker
	// DeadLetters, when set, replaces the engine's store.
	DeadLetters ingress.DeadLetterStore
	// Now is the clock [time.Now].
	Now func() time.Time
}

// Server is one herald node.
type Server struct {
	cfg      Config
	broker   channels.Broker
	engine   *engine
	hub      *hub.Hub
	ingress  *ingress.Ingress
	dead     ingress.DeadLetterStore
	mux      *http.ServeMux
	metrics  *metrics.Metrics
	draining atomic.Bool
}

// New builds a node and starts its broker.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	verifier, err := auth.NewVerifier(cfg.Auth)
	if err != nil {
		return nil, err
	}
	engine, err := newEngine(cfg)
	if err != nil {
		return nil, err
	}
	broker := engine.broker
	// Every broker call is timed, whichever engine runs.
	m := metrics.New(metrics.Options{Node: cfg.Node, Providers: providerSlugs(), EventTime: ingress.ReceivedAt})
	broker = metrics.InstrumentBroker(broker, m.Broker)
	hubOpts := cfg.Hub
	hubOpts.Metrics = m.Hub
	clients := clientip.Resolver{Trusted: cfg.TrustedProxies, Untrusted: warnUntrustedProxy(cfg.Logger)}
	hubOpts.ClientIP = clients
	hubOpts.Node, hubOpts.Broker, hubOpts.Verifier, hubOpts.Logger = cfg.Node, broker, verifier, cfg.Logger
	h, err := hub.New(hubOpts)
	if err != nil {
		return nil, err
	}
	enabled := make(map[string]ingress.Enabled)
	for _, p := range providers.All() {
		if pc, ok := cfg.Providers[p.Slug]; ok && pc.Secret != "" {
			enabled[p.Slug] = ingress.Enabled{Provider: p, Config: pc}
		}
	}
	for slug := range cfg.Providers {
		if !known(slug) {
			return nil, fmt.Errorf("unknown ingress provider %q", slug)
		}
	}
	dead := cfg.DeadLetters
	if dead == nil {
		dead = engine.deadLetters
	}
	in, err := ingress.New(ingress.Options{
		ClientIP:    clients,
		Broker:      broker,
		Providers:   enabled,
		DeadLetters: dead,
		Appender:    metrics.InstrumentAppender(engine.appender, m.Broker),
		DedupWindow: cfg.DedupWindow,
		MaxEvent:    h.MaxPublication(),
		Logger:      cfg.Logger,
		Now:         cfg.Now,
		Metrics:     m.Ingress,
	})
	if err != nil {
		engine.close()
		return nil, err
	}
	if err := broker.Start(h); err != nil {
		engine.close()
		return nil, fmt.Errorf("starting broker: %w", err)
	}
	s := &Server{cfg: cfg, broker: broker, engine: engine, hub: h, ingress: in, dead: dead, mux: http.NewServeMux()}
	s.metrics = m
	s.routes()
	return s, nil
}

func providerSlugs() []string {
	var out []string
	for _, p := range providers.All() {
		out = append(out, p.Slug)
	}
	return out
}

// warnUntrustedProxy warns, once per node, of the first request that came
// with X-Forwarded-For from an address HERALD_TRUSTED_PROXIES leaves out.
func warnUntrustedProxy(logger *slog.Logger) func(netip.Addr) {
	var once sync.Once
	return func(peer netip.Addr) {
		once.Do(func() {
			logger.Warn("a request came with X-Forwarded-For from an address not in HERALD_TRUSTED_PROXIES: if it is a load balancer, every client behind it counts as its one address for HERALD_MAX_CONNECTIONS_PER_IP and the providers' _ALLOW lists",
				"peer", peer.String())
		})
	}
}

func known(slug string) bool {
	for _, p := range providers.All() {
		if p.Slug == slug {
			return true
		}
	}
	return false
}

func (s *Server) routes() {
	s.mux.Handle("GET /ws", s.hub)
	// A provider may post below the URL it was given (P100 appends its
	// webhook's path: …/ingress/partner/webhook/user/status).
	s.mux.Handle("POST /ingress/{provider...}", s.ingress)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.Handle("GET /metrics", s.metrics.Handler())
	s.mux.HandleFunc("POST /v1/publish", s.api(s.publish))
	s.mux.HandleFunc("GET /v1/history", s.api(s.history))
	s.mux.HandleFunc("GET /v1/deadletters", s.api(s.deadLetters))
	// The dashboard and its files, all at the top: a path of the API or
	// the ingress asked with another method is then a 405, not the
	// dashboard's 404.
	dashboard := web.Handler()
	s.mux.Handle("GET /{$}", dashboard)
	s.mux.Handle("GET /{asset}", dashboard)
}

// Handler returns the node's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Hub returns the node's websocket hub.
func (s *Server) Hub() *hub.Hub { return s.hub }

// Broker returns the node's broker.
func (s *Server) Broker() channels.Broker { return s.broker }

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.broker.Ready(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "broker unavailable", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Drain starts a graceful shutdown: /readyz fails at once, websocket
// clients are closed with 4010 spread over window, and Drain returns when
// they are gone or ctx ends. The HTTP server's own Shutdown finishes
// in-flight ingress requests.
func (s *Server) Drain(ctx context.Context, window time.Duration) error {
	s.draining.Store(true)
	return s.hub.Drain(ctx, window)
}

// Close stops the hub and the broker.
func (s *Server) Close() error {
	s.draining.Store(true)
	s.hub.Close()
	return errors.Join(s.broker.Close(), s.engine.closeClient())
}
