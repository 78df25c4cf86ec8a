package app

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/bridge/forwardpb"
)

// singleSock opens a user socket of company/agent on a dev pod.
func singleSock(t *testing.T, a *App, company, agent, user string) *sock {
	t.Helper()
	tok, err := a.Minter.MintUser(userClaims(company, agent, user))
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"user": {user}, "token": {tok}, "x-api-key": {a.Cfg.Auth.APIKey}}
	return openSock(t, user, fmt.Sprintf("ws://127.0.0.1:%d/ws/%s/%s?%s", a.WSPort(), company, agent, q.Encode()))
}

// plainConn dials a pod's gRPC port with no credentials at all, as a
// stranger on the network would.
func plainConn(t *testing.T, a *App) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func chatsEvent(id string) *forwardpb.Event {
	return &forwardpb.Event{Kind: forwardpb.Kind_KIND_CHATS, Company: "acme", Agent: "a1", RequestId: "req-" + id,
		Payload: payloadFor("websocket.acme.a1.chats", id)}
}

// A stranger reaching the gRPC port must not be able to push into a
// socket (issue 9, finding 1); a pod holding the fleet token can.
func TestGRPC_Push_OnlyTheFleetTokenDelivers(t *testing.T) {
	a := startApp(t, nil)
	if a.Cfg.GRPC.AuthToken == "" {
		t.Fatal("dev mode left grpc.auth_token empty: the port would be open")
	}
	s := singleSock(t, a, "acme", "a1", "u1")
	push := forwardpb.NewForwardClient(plainConn(t, a))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name string
		md   []string
	}{
		{"no token", nil},
		{"wrong token", []string{"authorization", "Bearer " + a.Cfg.GRPC.AuthToken + "-not"}},
		{"token of another fleet", []string{"authorization", "Bearer not-" + a.Cfg.GRPC.AuthToken}},
	} {
		cctx := ctx
		if tc.md != nil {
			cctx = metadata.AppendToOutgoingContext(ctx, tc.md...)
		}
		_, err := push.Push(cctx, &forwardpb.PushRequest{Events: []*forwardpb.Event{chatsEvent("forged-" + tc.name)}})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%s: Push = %v, want Unauthenticated", tc.name, err)
		}
	}
	if got := metric(t, a, "dws_auth_failures_total", `reason="`+bridge.AuthFailureReason+`"`); got != 3 {
		t.Fatalf("dws_auth_failures_total{reason=%q} = %v, want 3", bridge.AuthFailureReason, got)
	}

	// Health stays open for probes.
	if resp, err := healthpb.NewHealthClient(plainConn(t, a)).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check without a token = %v, %v", resp, err)
	}

	// The pod's own client pool, configured from the same keys, delivers.
	dial, err := security(a.Cfg.GRPC).DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	fc := bridge.NewForwardClient(a.Cfg.GRPC, a.Metrics, bridge.WithDialOptions(dial...))
	t.Cleanup(func() { _ = fc.Close() })
	genuine := chatsEvent("genuine")
	if n, err := fc.Push(ctx, a.GRPCAddr(), genuine); err != nil || n != 1 {
		t.Fatalf("push with the fleet token = %d, %v; want 1 socket", n, err)
	}
	s.waitAll(t, 5*time.Second, []string{"genuine"})
	quiet()
	s.expectExactly(t, &publisher{t: t, sent: map[string][]byte{"genuine": genuine.Payload}}, []string{"genuine"})
}
