package bridge

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/dws-gateway/dws/session"
)

func freePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

func TestBridge_NATSRestart_ResumesWithoutLosingPosition(t *testing.T) {
	t.Parallel()
	cfg := testNATS()
	cfg.EmbeddedDir = t.TempDir()
	cfg.EmbeddedPort = freePort(t)
	s1, url, err := StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s1.Shutdown)
	nc := connect(t, url)
	pub := connect(t, url)
	routes := newMemRoutes()
	o := defaultPodOptions()
	o.nats = cfg
	p := startPod(t, nc, routes, o)
	r := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	routes.add(r, p.id)

	for i := 0; i < 10; i++ {
		publish(t, pub, "websocket.c.a.chats", strconv.Itoa(i), "")
	}
	p.rec.waitN(t, 10, 5*time.Second)
	eventually(t, 5*time.Second, "first ten acked", func() bool {
		return allSettled(t, pub, cfg)
	})

	s1.Shutdown()
	s1.WaitForShutdown()
	eventually(t, 5*time.Second, "client notices", func() bool { return !nc.IsConnected() })
	s2, _, err := StartEmbedded(cfg)
	if err != nil {
		t.Fatalf("restart on port %d: %v", cfg.EmbeddedPort, err)
	}
	t.Cleanup(s2.Shutdown)
	eventually(t, 10*time.Second, "reconnect", func() bool { return nc.IsConnected() && pub.IsConnected() })

	for i := 10; i < 20; i++ {
		publish(t, pub, "websocket.c.a.chats", strconv.Itoa(i), "")
	}
	got := p.rec.waitN(t, 20, 10*time.Second)
	time.Sleep(100 * time.Millisecond) // a replay of 0..9 would land by now
	got = p.rec.snapshot()
	assertInOrder(t, got, r, 20)

	// Drain while the restarted server is still up (the cleanups would
	// stop it first).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.bridge.Drain(ctx); err != nil {
		t.Fatalf("drain after reconnect: %v", err)
	}
	if b := settledState(t, pub, cfg); b.unsettled != 0 || b.ackPending != 0 {
		t.Fatalf("after drain %d messages unsettled, %d ack pending; want 0 and 0", b.unsettled, b.ackPending)
	}
}

func TestBridge_PodKilledMidStream_SurvivorMissesNothing(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	routes := newMemRoutes()
	o := defaultPodOptions()
	o.nats.AckWait = time.Second
	o.nats.Failover = 2 * time.Second
	o.leases = session.NewMemoryPartitionLeases() // A and B split the partitions
	a := startPod(t, connect(t, url), routes, o)
	ncB := connect(t, url)
	b := startPod(t, ncB, routes, o)
	r := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	routes.add(r, a.id)
	b.rec.setHook(func(delivery) { time.Sleep(time.Millisecond) })
	pub := connect(t, url)

	const n = 400
	for i := 0; i < n; i++ {
		publish(t, pub, "websocket.c.a.chats", strconv.Itoa(i), "")
		if i == n/2 {
			// Kill B: no drain, no acks, no forwards after this point;
			// its partitions move to A once B's leases lapse.
			ncB.Close()
			_ = b.fwd.Close()
		}
	}
	eventually(t, 10*time.Second, "every event on pod A", func() bool {
		seen := map[string]bool{}
		for _, d := range a.rec.snapshot() {
			seen[d.Payload] = true
		}
		return len(seen) == n
	})
	dups := len(a.rec.snapshot()) - n
	t.Logf("duplicates on A after the kill: %d (A counted %d redeliveries)", dups, a.bridge.Redelivered())
	if dups > 0 && a.bridge.Redelivered() == 0 {
		t.Fatal("duplicates delivered but no redelivery counted")
	}
}
