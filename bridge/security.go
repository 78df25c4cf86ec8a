package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
)

// Security is how pods authenticate each other on the gRPC port (SPEC §5):
// a shared bearer token on every call, and optionally TLS or mutual TLS.
//
// An empty AuthToken turns the token check off on the server and sends no
// token from the client. Only tests and dev mode run that way: config
// Validate refuses an empty grpc.auth_token outside dev mode, and dev mode
// binds the gRPC listener to 127.0.0.1.
type Security struct {
	// AuthToken is the fleet's shared secret (grpc.auth_token), carried
	// as metadata "authorization: Bearer <token>".
	AuthToken string
	// CertFile and KeyFile are this pod's PEM certificate and key: served
	// by the gRPC server and presented as client certificate to peers.
	// Empty = plaintext.
	CertFile, KeyFile string
	// CAFile is a PEM bundle verifying peers: the server then requires and
	// verifies client certificates (mutual TLS); the client verifies the
	// server against it instead of the system roots.
	CAFile string
}

// AuthFailureReason is the dws_auth_failures_total reason of a gRPC call
// refused for a missing or wrong bearer token.
const AuthFailureReason = "grpc_token"

// authMetadataKey is the metadata key of the bearer token (lower case, as
// HTTP/2 carries it).
const authMetadataKey = "authorization"

// healthMethodPrefix is left unauthenticated: orchestrator probes carry no
// fleet secret.
const healthMethodPrefix = "/grpc.health.v1.Health/"

// rejectLogEvery bounds how often a refused call is logged: a stranger
// hammering the port must not flood the log (the counter sees them all).
const rejectLogEvery = 10 * time.Second

// tlsOn reports whether s turns TLS on: this pod has a certificate, or
// (client side) a CA to verify the server with.
func (s Security) tlsOn() bool { return s.CertFile != "" || s.CAFile != "" }

// ServerOptions returns the gRPC server options enforcing s: TLS (mutual
// when CAFile is set) and the token interceptors for unary and stream
// calls. Refusals are counted in m's auth failures as AuthFailureReason.
func (s Security) ServerOptions(m *metrics.Metrics) ([]grpc.ServerOption, error) {
	var opts []grpc.ServerOption
	if s.tlsOn() {
		if s.CertFile == "" || s.KeyFile == "" {
			return nil, errors.New("grpc tls: the server needs both a certificate and its key")
		}
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("grpc tls: %w", err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if s.CAFile != "" {
			pool, err := loadCA(s.CAFile)
			if err != nil {
				return nil, err
			}
			cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	if s.AuthToken != "" {
		a := &tokenAuth{want: sha256.Sum256([]byte(s.AuthToken)), rejected: m.AuthFailures.WithLabelValues(AuthFailureReason)}
		opts = append(opts, grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream))
	}
	return opts, nil
}

// DialOptions returns the client options matching s: TLS credentials
// (presenting CertFile when set) and the bearer token on every call.
// Without them the client dials in plaintext and sends no token.
func (s Security) DialOptions() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if s.tlsOn() {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if s.CertFile != "" {
			if s.KeyFile == "" {
				return nil, errors.New("grpc tls: a client certificate needs its key")
			}
			cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("grpc tls: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		if s.CAFile != "" {
			pool, err := loadCA(s.CAFile)
			if err != nil {
				return nil, err
			}
			cfg.RootCAs = pool
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if s.AuthToken != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{
			md:     map[string]string{authMetadataKey: "Bearer " + s.AuthToken},
			secure: s.tlsOn(),
		}))
	}
	return opts, nil
}

func loadCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("grpc tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("grpc tls ca: no PEM certificate in %s", file)
	}
	return pool, nil
}

// bearer is the client's per-RPC token. It allows a plaintext transport
// when no TLS is configured (a private network, or dev mode on loopback):
// gRPC would otherwise refuse to send it.
type bearer struct {
	md     map[string]string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return b.md, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// tokenAuth checks the bearer token of every call but health.
type tokenAuth struct {
	want     [sha256.Size]byte
	rejected prometheus.Counter
	lastLog  atomic.Int64 // unix nanos of the last refusal logged
}

func (a *tokenAuth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *tokenAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// errUnauthenticated says nothing about why: a stranger learns only that
// it needs a token.
var errUnauthenticated = status.Error(codes.Unauthenticated, "missing or invalid bearer token")

// check accepts health calls and calls carrying the token. Both sides are
// hashed before the constant-time compare, so neither the token's content
// nor its length leaks through timing.
func (a *tokenAuth) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, healthMethodPrefix) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(authMetadataKey) {
		scheme, tok, ok := strings.Cut(v, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			continue
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if subtle.ConstantTimeCompare(got[:], a.want[:]) == 1 {
			return nil
		}
	}
	a.rejected.Inc()
	now := time.Now().UnixNano()
	if last := a.lastLog.Load(); now-last >= int64(rejectLogEvery) && a.lastLog.CompareAndSwap(last, now) {
		addr := "unknown"
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			addr = p.Addr.String()
		}
		logx.From(ctx).Warn("grpc call without a valid bearer token refused (logged at most every 10s; see dws_auth_failures_total{reason=\"grpc_token\"})",
			"peer", addr, "method", method)
	}
	return errUnauthenticated
}
