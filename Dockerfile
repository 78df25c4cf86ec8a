# syntax=docker/dockerfile:1
#
# dws container image: a static binary on distroless, running as non-root.
#
#   docker build -t dws:dev --build-arg VERSION=$(git describe --tags --always --dirty) .
#   docker run --rm -p 8080:8080 -p 8081:8081 dws:dev        # single node, dev mode
#
# Health: distroless has no shell and no curl, so there is no HEALTHCHECK
# here; let the orchestrator probe the ops listener over HTTP instead
# (Kubernetes: livenessProbe GET /healthz, readinessProbe GET /ready on
# :8081; see docs/operations.md).

ARG GO_VERSION=1.26

# --- build -----------------------------------------------------------------
FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# CGO off: a static binary that runs on distroless/static (no libc).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X github.com/dws-gateway/dws/cmd/dws/app.Version=${VERSION}" \
      -o /out/dws ./cmd/dws

# --- run -------------------------------------------------------------------
# static-debian12:nonroot carries CA certificates, tzdata, /tmp and the
# nonroot user (65532); nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/dws /usr/local/bin/dws
USER nonroot:nonroot
# server.ws_addr, server.ops_addr, server.grpc_addr defaults.
EXPOSE 8080 8081 50051
# SIGTERM starts the drain of SPEC §6; give it server-side shutdown.timeout
# (20 s) plus a margin before a SIGKILL (compose: stop_grace_period,
# Kubernetes: terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/dws"]
CMD ["serve"]
