package bridge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/internal/metrics"
)

const testToken = "fleet-secret-0123456789"

// testPKI is a throw-away CA with a server certificate for 127.0.0.1 and a
// client certificate, as PEM files in a temp dir.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dws test fleet CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{ca: writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", kb)
	}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// secureServer starts a ForwardServer enforcing sec over d; register, when
// set, adds services before it serves.
func secureServer(t *testing.T, sec Security, d Deliverer, register func(*grpc.Server)) (string, *ForwardServer, *metrics.Metrics) {
	t.Helper()
	m := metrics.New()
	opts, err := sec.ServerOptions(m)
	if err != nil {
		t.Fatal(err)
	}
	s := NewForwardServer(d, m, opts...)
	if register != nil {
		register(s.srv)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), s, m
}

// rawConn dials addr in plaintext with no credentials at all.
func rawConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func validEvent(payload string) *forwardpb.Event {
	return &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: "c", Agent: "a", Payload: []byte(payload), RequestId: "req-sec"}
}

func TestForwardServer_BearerToken_OnlyTheRightTokenDelivers(t *testing.T) {
	t.Parallel()
	rec := newRecorder(1)
	addr, _, m := secureServer(t, Security{AuthToken: testToken}, rec, nil)
	push := forwardpb.NewForwardClient(rawConn(t, addr))
	refused := m.AuthFailures.WithLabelValues(AuthFailureReason)

	tests := []struct {
		name string
		md   []string // authorization values sent
		want codes.Code
	}{
		{"no token", nil, codes.Unauthenticated},
		{"wrong token", []string{"Bearer " + testToken + "x"}, codes.Unauthenticated},
		{"prefix of the token", []string{"Bearer " + testToken[:5]}, codes.Unauthenticated},
		{"token without scheme", []string{testToken}, codes.Unauthenticated},
		{"basic scheme", []string{"Basic " + testToken}, codes.Unauthenticated},
		{"right token", []string{"Bearer " + testToken}, codes.OK},
		{"scheme is case-insensitive", []string{"bearer " + testToken}, codes.OK},
	}
	wantRefused, wantDelivered := 0.0, 0
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for _, v := range tt.md {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
		}
		resp, err := push.Push(ctx, &forwardpb.PushRequest{Events: []*forwardpb.Event{validEvent(`{"n":1}`)}})
		cancel()
		if got := status.Code(err); got != tt.want {
			t.Fatalf("%s: code %v (%v), want %v", tt.name, got, err, tt.want)
		}
		if tt.want == codes.OK {
			wantDelivered++
			if len(resp.GetAccepted()) != 1 || resp.Accepted[0] != 1 {
				t.Fatalf("%s: accepted %v", tt.name, resp.GetAccepted())
			}
		} else {
			wantRefused++
		}
		if got := len(rec.snapshot()); got != wantDelivered {
			t.Fatalf("%s: %d deliveries, want %d: a refused call delivered", tt.name, got, wantDelivered)
		}
		if got := counter(refused); got != wantRefused {
			t.Fatalf("%s: auth failures{%s} = %v, want %v", tt.name, AuthFailureReason, got, wantRefused)
		}
	}
}

func TestForwardClient_WithToken_OverPlaintextDelivers(t *testing.T) {
	t.Parallel()
	rec := newRecorder(2)
	sec := Security{AuthToken: testToken}
	addr, _, m := secureServer(t, sec, rec, nil)
	dial, err := sec.DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	c := NewForwardClient(testGRPC(), metrics.New(), WithDialOptions(dial...))
	t.Cleanup(func() { _ = c.Close() })
	got, err := c.Push(context.Background(), addr, validEvent(`{"n":2}`))
	if err != nil || got != 2 {
		t.Fatalf("push with the token = %d, %v; want 2, nil", got, err)
	}
	if v := counter(m.AuthFailures.WithLabelValues(AuthFailureReason)); v != 0 {
		t.Fatalf("auth failures = %v, want 0", v)
	}

	// The same client pool without the token is refused, and its events
	// are reported failed, not accepted.
	bare := NewForwardClient(testGRPC(), metrics.New())
	t.Cleanup(func() { _ = bare.Close() })
	if _, err := bare.Push(context.Background(), addr, validEvent(`{"n":3}`)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("push without the token: %v, want Unauthenticated", err)
	}
	if n := len(rec.snapshot()); n != 1 {
		t.Fatalf("%d deliveries, want only the authenticated one", n)
	}
}

// streamDesc is a server-streaming test service: the token check must hold
// for streams too, not only for the unary Push.
var streamDesc = grpc.ServiceDesc{
	ServiceName: "dws.test.Stream",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Open",
		ServerStreams: true,
		Handler: func(_ any, ss grpc.ServerStream) error {
			return ss.SendMsg(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
		},
	}},
}

func TestForwardServer_BearerToken_StreamsCheckedHealthOpen(t *testing.T) {
	t.Parallel()
	rec := newRecorder(1)
	addr, _, m := secureServer(t, Security{AuthToken: testToken}, rec, func(s *grpc.Server) {
		var impl any = struct{}{}
		s.RegisterService(&streamDesc, impl)
	})
	conn := rawConn(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Health needs no token: Check and Watch (a stream).
	hc := healthpb.NewHealthClient(conn)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: ForwardServiceName}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check without a token = %v, %v", resp, err)
	}
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := w.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch without a token = %v, %v", resp, err)
	}

	// Any other stream is refused without the token, served with it.
	open := func(ctx context.Context) error {
		st, err := conn.NewStream(ctx, &streamDesc.Streams[0], "/dws.test.Stream/Open")
		if err != nil {
			return err
		}
		if err := st.CloseSend(); err != nil {
			return err
		}
		return st.RecvMsg(&healthpb.HealthCheckResponse{})
	}
	if err := open(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream without a token: %v, want Unauthenticated", err)
	}
	if err := open(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken)); err != nil {
		t.Fatalf("stream with the token: %v", err)
	}

	// PushStream, the senders' own stream, likewise: the refusal arrives
	// on the first Recv and the batch sent meanwhile is never delivered.
	pushStream := func(ctx context.Context) (*forwardpb.PushResponse, error) {
		st, err := forwardpb.NewForwardClient(conn).PushStream(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(&forwardpb.PushRequest{Events: []*forwardpb.Event{validEvent(`{"n":9}`)}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return st.Recv()
	}
	if _, err := pushStream(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("PushStream without a token: %v, want Unauthenticated", err)
	}
	if n := len(rec.snapshot()); n != 0 {
		t.Fatalf("a refused PushStream delivered %d events", n)
	}
	resp, err := pushStream(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken))
	if err != nil || fmt.Sprint(resp.GetAccepted()) != "[1]" {
		t.Fatalf("PushStream with the token = %v, %v; want [1]", resp, err)
	}
	if v := counter(m.AuthFailures.WithLabelValues(AuthFailureReason)); v != 2 {
		t.Fatalf("auth failures = %v, want 2 (health calls are not failures)", v)
	}
}

func TestForward_TLSAndMutualTLS_RoundTrip(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	tests := []struct {
		name    string
		server  Security
		client  Security
		deliver bool
	}{
		{"tls", Security{AuthToken: testToken, CertFile: pki.serverCert, KeyFile: pki.serverKey},
			Security{AuthToken: testToken, CAFile: pki.ca}, true},
		{"tls, client without the CA", Security{AuthToken: testToken, CertFile: pki.serverCert, KeyFile: pki.serverKey},
			Security{AuthToken: testToken}, false},
		{"mtls", Security{AuthToken: testToken, CertFile: pki.serverCert, KeyFile: pki.serverKey, CAFile: pki.ca},
			Security{AuthToken: testToken, CertFile: pki.clientCert, KeyFile: pki.clientKey, CAFile: pki.ca}, true},
		{"mtls, client without a certificate", Security{AuthToken: testToken, CertFile: pki.serverCert, KeyFile: pki.serverKey, CAFile: pki.ca},
			Security{AuthToken: testToken, CAFile: pki.ca}, false},
		{"mtls, right certificate but no token", Security{AuthToken: testToken, CertFile: pki.serverCert, KeyFile: pki.serverKey, CAFile: pki.ca},
			Security{CertFile: pki.clientCert, KeyFile: pki.clientKey, CAFile: pki.ca}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(1)
			addr, _, _ := secureServer(t, tt.server, rec, nil)
			dial, err := tt.client.DialOptions()
			if err != nil {
				t.Fatal(err)
			}
			cfg := testGRPC()
			c := NewForwardClient(cfg, metrics.New(), WithDialOptions(dial...))
			t.Cleanup(func() { _ = c.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := c.Push(ctx, addr, validEvent(`{"tls":true}`))
			if tt.deliver {
				if err != nil || got != 1 {
					t.Fatalf("push = %d, %v; want 1, nil", got, err)
				}
				rec.waitN(t, 1, 5*time.Second)
				return
			}
			if err == nil {
				t.Fatalf("push succeeded (accepted %d); want it refused", got)
			}
			if n := len(rec.snapshot()); n != 0 {
				t.Fatalf("refused push delivered %d events", n)
			}
		})
	}
}

func TestSecurity_BadFiles_Refused(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	for _, sec := range []Security{
		{CertFile: pki.serverCert},                  // no key
		{CAFile: pki.ca},                            // server without a certificate
		{CertFile: pki.serverCert, KeyFile: pki.ca}, // key file is no key
		{CertFile: pki.serverCert, KeyFile: pki.serverKey, CAFile: pki.serverKey}, // CA file has no certificate
		{CertFile: filepath.Join(t.TempDir(), "missing.pem"), KeyFile: pki.serverKey},
	} {
		if _, err := sec.ServerOptions(metrics.New()); err == nil {
			t.Errorf("ServerOptions(%+v) accepted", sec)
		}
	}
	if _, err := (Security{CertFile: pki.clientCert}).DialOptions(); err == nil {
		t.Error("DialOptions with a certificate and no key accepted")
	}
	if _, err := (Security{CAFile: pki.clientKey}).DialOptions(); err == nil {
		t.Error("DialOptions with a CA file holding no certificate accepted")
	}
}

func TestForwardServer_Shutdown_OpenHealthWatchDoesNotHoldIt(t *testing.T) {
	t.Parallel()
	addr, s, _ := secureServer(t, Security{AuthToken: testToken}, newRecorder(1), nil)
	conn := rawConn(t, addr)
	w, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	const bound = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	err = s.Shutdown(ctx)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with an open Watch = %v, want the deadline error", err)
	}
	if took < bound || took > bound+3*time.Second {
		t.Fatalf("Shutdown took %v, want about %v", took, bound)
	}
	// The watcher saw the server go away.
	for {
		if _, err := w.Recv(); err != nil {
			break
		}
	}
}

func TestForwardServer_Shutdown_NothingOpenIsGraceful(t *testing.T) {
	t.Parallel()
	addr, s, _ := secureServer(t, Security{}, newRecorder(1), nil)
	push := forwardpb.NewForwardClient(rawConn(t, addr))
	if _, err := push.Push(context.Background(), &forwardpb.PushRequest{Events: []*forwardpb.Event{validEvent("1")}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with nothing open = %v, want nil", err)
	}
}
