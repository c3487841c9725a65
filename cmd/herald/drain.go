package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"herald/internal/server"
)

// shutdown stops a node gracefully within HERALD_SHUTDOWN_TIMEOUT. At
// once, /readyz fails and the listener closes, so new connections are
// refused and the load balancer moves on. Meanwhile requests in flight
// (a webhook being appended) finish, and websocket clients are closed with
// 4010 spread over HERALD_DRAIN_WINDOW, so that they reconnect to other
// nodes a few at a time rather than all at once. What still runs at the
// deadline is cut, and the error says what.
func shutdown(logger *slog.Logger, cfg *config, srv *server.Server, httpSrv *http.Server) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(ctx, cfg.DrainWindow) }()

	var errs []error
	if err := httpSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("requests in flight: %w", err))
		_ = httpSrv.Close()
	}
	if err := <-drained; err != nil {
		errs = append(errs, fmt.Errorf("websocket clients: %w", err))
	}
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			errs = append(errs, fmt.Errorf("closing the broker: %w", err))
		}
	case <-ctx.Done():
		select {
		case err := <-closed:
			if err != nil {
				errs = append(errs, fmt.Errorf("closing the broker: %w", err))
			}
		default:
			errs = append(errs, errors.New("closing the broker: deadline passed"))
		}
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	if len(errs) > 0 {
		return fmt.Errorf("shutdown cut after %s: %w", elapsed, errors.Join(errs...))
	}
	logger.Info("stopped", "after", elapsed.String())
	return nil
}
