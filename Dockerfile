# herald: one static binary on a small base image (no shell, no curl; the
# health check is `herald healthcheck`).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /herald ./cmd/herald

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /herald /herald
ENV HERALD_ADDR=:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["/herald", "healthcheck"]
# SIGTERM drains: /readyz fails, clients get 4010 over HERALD_DRAIN_WINDOW,
# in-flight webhooks finish. Give the container HERALD_SHUTDOWN_TIMEOUT
# (30s) or more to stop (docker stop -t, stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/herald"]
