package app

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/bridge/forwardpb"
)

// An event that is not valid UTF-8 JSON never reaches a browser — from
// NATS or from a peer — while the next valid one does (issue 9, finding 1:
// a browser drops the connection on an invalid text frame).
func TestGRPC_InvalidPayloads_NeverReachASocketNextValidDoes(t *testing.T) {
	a := startApp(t, nil)
	s := singleSock(t, a, "acme", "a1", "u1")
	nc, err := bridge.Connect(a.NATSURL(), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub := &publisher{t: t, nc: nc}
	const subject = "websocket.acme.a1.chats"

	// From NATS: invalid UTF-8 inside a JSON string, then not JSON at all,
	// then a valid event.
	pub.publishRaw(subject, "bad-utf8", []byte("{\"event_id\":\"bad-utf8\",\"text\":\"\xff\xfe\"}"), "req-bad-utf8")
	pub.publishRaw(subject, "not-json", []byte(`{"event_id":"not-json",`), "req-not-json")
	pub.publish(subject, "nats-ok")
	s.waitAll(t, 10*time.Second, []string{"nats-ok"})

	// From a peer holding the fleet token: a batch mixing both kinds.
	dial, err := security(a.Cfg.GRPC).DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	fc := bridge.NewForwardClient(a.Cfg.GRPC, a.Metrics, bridge.WithDialOptions(dial...))
	t.Cleanup(func() { _ = fc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	results := make(chan string, 3)
	ok := chatsEvent("grpc-ok")
	pub.mu.Lock()
	pub.sent["grpc-ok"] = ok.Payload
	pub.mu.Unlock()
	for _, ev := range []*forwardpb.Event{
		{Kind: forwardpb.Kind_KIND_CHATS, Company: "acme", Agent: "a1", Payload: []byte("{\"event_id\":\"grpc-bad\",\"t\":\"\xc3\"}")},
		ok,
		{Kind: forwardpb.Kind_KIND_CHATS, Company: "acme", Agent: "a1", Payload: []byte("grpc-not-json")},
	} {
		go func() {
			n, err := fc.Push(ctx, a.GRPCAddr(), ev)
			results <- fmt.Sprintf("%d %v", n, err)
		}()
	}
	got := map[string]int{}
	for range 3 {
		got[<-results]++
	}
	if got["0 <nil>"] != 2 || got["1 <nil>"] != 1 {
		t.Fatalf("push answers %v; want the invalid two accepted by 0 sockets, the valid one by 1", got)
	}
	s.waitAll(t, 5*time.Second, []string{"grpc-ok"})
	quiet()
	s.expectExactly(t, pub, []string{"nats-ok", "grpc-ok"})
	s.mu.Lock()
	others := len(s.others)
	s.mu.Unlock()
	if others != 0 {
		t.Fatalf("socket got %d frames besides the two valid events", others)
	}
	if v := metric(t, a, "dws_drops_total", `reason="invalid_payload"`); v != 4 {
		t.Fatalf("dws_drops_total{reason=\"invalid_payload\"} = %v, want 4 (2 from NATS, 2 from gRPC)", v)
	}
	if v := metric(t, a, "dws_nats_acks_total", `result="term"`, `reason="invalid_payload"`); v != 2 {
		t.Fatalf("dws_nats_acks_total{term,invalid_payload} = %v, want 2 terminated", v)
	}
}
