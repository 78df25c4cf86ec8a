package app

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/dws-gateway/dws/session"
)

// Issue 10's fleet tests (SPEC §5): ordered, exactly-once delivery while
// pods join, drain, or hold acks back. Real pods, one JetStream and one
// Redis prefix per test.

// seriesCompany is one (company, a1) under test: its sockets and the
// events each should get.
type seriesCompany struct {
	name   string
	prefix string  // of its event ids, to tell two series apart
	socks  []*sock // chats only
	chatty []*sock // chats and messages of x1
	chats  []string
	all    []string
}

// publishSeries publishes n events at rate/s round-robin over cos, one in
// five a message of chat x1, and calls at(i) before event i.
func publishSeries(t *testing.T, pub *publisher, cos []*seriesCompany, n, rate int, at func(i int)) {
	t.Helper()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := range n {
		if at != nil {
			at(i)
		}
		<-tick.C
		// 5 is coprime with the company count: each gets both kinds.
		cos[i%len(cos)].publishEvent(i, pub.publish)
	}
}

// publishEvent publishes the company's event number i with publish and
// notes which sockets should get it.
func (co *seriesCompany) publishEvent(i int, publish func(subject, id string)) {
	subject, id, chats := co.event(i)
	publish(subject, id)
	co.expect(id, chats)
}

// event is the company's event number i: a message of chat x1 when
// i%5 == 2, a chats event otherwise.
func (co *seriesCompany) event(i int) (subject, id string, chats bool) {
	id = fmt.Sprintf("%sev-%05d", co.prefix, i)
	if i%5 == 2 {
		return "websocket." + co.name + ".a1.messages.x1", id, false
	}
	return "websocket." + co.name + ".a1.chats", id, true
}

// expect notes that every socket of the company gets id, the chats
// sockets only when it is a chats event.
func (co *seriesCompany) expect(id string, chats bool) {
	if chats {
		co.chats = append(co.chats, id)
	}
	co.all = append(co.all, id)
}

// expectSeries checks every socket got exactly its events, once each, in
// publish order with strictly increasing seq.
func expectSeries(t *testing.T, pub *publisher, cos []*seriesCompany) {
	t.Helper()
	for _, co := range cos {
		for _, s := range co.socks {
			s.waitAll(t, 10*time.Second, co.chats)
		}
		for _, s := range co.chatty {
			s.waitAll(t, 10*time.Second, co.all)
		}
	}
	quiet()
	check := func(s *sock, want []string) {
		s.expectExactly(t, pub, want)
		if got := s.snapshot(); !slices.Equal(got, want) {
			t.Errorf("%s: %d inversions; first at %s", s.name, inversions(got), firstOutOfOrder(got, want))
		}
	}
	for _, co := range cos {
		for _, s := range co.socks {
			check(s, co.chats)
		}
		for _, s := range co.chatty {
			check(s, co.all)
		}
	}
}

// companyIn returns a company whose (company, a1) partition is p.
func companyIn(t *testing.T, c *cluster, p int) string {
	t.Helper()
	l := partitionLayout(c.pods[0].Cfg.NATS)
	for i := range 10000 {
		if co := fmt.Sprintf("co%d", i); l.PartitionOf(co, "a1") == p {
			return co
		}
	}
	t.Fatalf("no company in partition %d", p)
	return ""
}

// A 4th pod joins mid-series: about a quarter of the partitions move to
// it, one of them carrying a company under test; every socket still gets
// every event once, in order.
func TestPartitions_PodJoinsMidSeries_NothingLostOrReordered(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 3, nil)
	newID := freeAddr(t)
	var members []string
	for _, p := range c.pods {
		members = append(members, p.Cfg.Server.PodID)
	}
	after := session.AssignPartitions(c.pods[0].Cfg.NATS.Partitions, append(members, newID))
	moving, staying := -1, -1
	owners := map[int]string{}
	for p := range after {
		o, err := c.leases().Owner(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		owners[p] = o
		switch {
		case after[p] == newID && moving < 0:
			moving = p
		case after[p] == o && staying < 0:
			staying = p
		}
	}
	if moving < 0 || staying < 0 {
		t.Fatalf("assignment moves no partition to the new pod (%d) or keeps none (%d)", moving, staying)
	}
	var cos []*seriesCompany
	for _, p := range []int{moving, staying} {
		co := &seriesCompany{name: companyIn(t, c, p)}
		for k, pod := range c.pods {
			co.socks = append(co.socks, c.userSock(pod, co.name, "a1", fmt.Sprintf("u%d", k)))
		}
		reader := c.userSock(c.pods[0], co.name, "a1", "reader")
		selectChat(t, pub, reader, co.name, "a1", "x1")
		co.chatty = []*sock{reader}
		cos = append(cos, co)
	}
	var joined *App
	publishSeries(t, pub, cos, 1500, 1000, func(i int) {
		if i == 500 {
			joined = c.addAs(newID)
		}
	})
	expectSeries(t, pub, cos)
	eventuallyT(t, 10*time.Second, "the new pod owns the moving partition", func() bool {
		return slices.Contains(joined.OwnedPartitions(), moving)
	})
	t.Logf("partition %d moved from %s to the new pod %s mid-series; %v duplicates dropped", moving, owners[moving], newID,
		metric(t, c.pods[0], "dws_drops_total", `reason="duplicate"`))
}

// A pod drains mid-series: it hands its partitions over before its
// consumers stop; the sockets on the other pods get every event once, in
// order. (Its own sockets are closed 1001 and reconnect elsewhere; resume
// fills their gap, SPEC §5a.)
func TestPartitions_PodDrainsMidSeries_StayingSocketsLoseNothing(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 3, nil)
	leaving := c.pods[2]
	co := &seriesCompany{name: c.companyOwnedBy(leaving.Cfg.Server.PodID, "a1")}
	for k, pod := range c.pods[:2] {
		co.socks = append(co.socks, c.userSock(pod, co.name, "a1", fmt.Sprintf("u%d", k)))
	}
	reader := c.userSock(c.pods[1], co.name, "a1", "reader")
	selectChat(t, pub, reader, co.name, "a1", "x1")
	co.chatty = []*sock{reader}
	c.userSock(leaving, co.name, "a1", "on-the-leaving-pod")

	drained := make(chan error, 1)
	publishSeries(t, pub, []*seriesCompany{co}, 1500, 1000, func(i int) {
		if i == 500 {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				drained <- leaving.Shutdown(ctx)
			}()
		}
	})
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	expectSeries(t, pub, []*seriesCompany{co})
	if v := metric(t, c.pods[0], "dws_partitions_owned") + metric(t, c.pods[1], "dws_partitions_owned"); v != float64(c.pods[0].Cfg.NATS.Partitions) {
		t.Errorf("after the drain the two staying pods own %v partitions", v)
	}
}

// Acks withheld on purpose: the only other pod in the route is frozen, so
// every forward to it waits out its timeout and the consuming pod cannot
// ack; with ack_wait 1 s JetStream redelivers each event while later ones
// were already delivered. No socket sees an event twice or out of order:
// the redeliveries are dropped per socket as duplicates.
func TestPartitions_AckWithheld_RedeliveryReachesNoSocketTwice(t *testing.T) {
	captureLogs(t)
	c, pub := newEventCluster(t, "127.0.0.1:6379", 1, map[string]string{
		"nats.ack_wait":     "1s",
		"grpc.call_timeout": "1500ms",
		// The frozen pod must stay in the route for the whole test.
		"session.refresh_interval": "3s",
		"session.ttl":              "10s",
		"route.ttl":                "10s",
	})
	p0 := c.pods[0]
	proc, port, frozen := c.startProcessPod()
	waitListening(t, frozen)
	waitConsumers(t, c, pub, 2)
	company := c.companyOwnedBy(p0.Cfg.Server.PodID, "a1")
	subject := "websocket." + company + ".a1.chats"
	s0 := c.userSock(p0, company, "a1", "u1")
	s1 := c.userSock(p0, company, "a1", "u2")
	openSock(t, "u3 on the frozen pod", replacePort(c.userURL(p0, company, "a1", "u3"), p0.WSPort(), port))
	if err := proc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Process.Signal(syscall.SIGCONT) })

	want := ids("held", 30)
	for _, id := range want {
		pub.publish(subject, id)
		time.Sleep(20 * time.Millisecond)
	}
	s0.waitAll(t, 10*time.Second, want)
	s1.waitAll(t, 10*time.Second, want)
	eventuallyT(t, 10*time.Second, "redeliveries dropped at the sockets", func() bool {
		return metric(t, p0, "dws_nats_redeliveries_total") > 0 && metric(t, p0, "dws_drops_total", `reason="duplicate"`) > 0
	})
	quiet()
	for _, s := range []*sock{s0, s1} {
		s.expectExactly(t, pub, want)
		if got := s.snapshot(); !slices.Equal(got, want) {
			t.Errorf("%s: %d inversions; first at %s", s.name, inversions(got), firstOutOfOrder(got, want))
		}
	}
	t.Logf("%v redeliveries, %v duplicates dropped at the sockets", metric(t, p0, "dws_nats_redeliveries_total"),
		metric(t, p0, "dws_drops_total", `reason="duplicate"`))
}

// startJetStreamAt runs a nats-server with JetStream on port, storing in
// dir, so a test can stop it and start another in its place.
func startJetStreamAt(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{ServerName: "dws-test", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatalf("embedded nats-server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded nats-server not ready after 10s")
	}
	return s
}

// NATS restarts between two halves of a series: the pods reconnect, the
// partition consumers keep their positions on the server, and the sockets
// that stayed get every event once, in order.
func TestPartitions_NATSRestart_OrderAndExactlyOnceHold(t *testing.T) {
	addr := freeAddr(t)
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	dir := t.TempDir()
	ns := startJetStreamAt(t, port, dir)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	})
	c, pub := newEventClusterOn(t, ns.ClientURL(), "127.0.0.1:6379", 2, nil)
	co := &seriesCompany{name: "acme"}
	for k, pod := range c.pods {
		co.socks = append(co.socks, c.userSock(pod, co.name, "a1", fmt.Sprintf("u%d", k)))
	}
	reader := c.userSock(c.pods[1], co.name, "a1", "reader")
	selectChat(t, pub, reader, co.name, "a1", "x1")
	co.chatty = []*sock{reader}

	publishSeries(t, pub, []*seriesCompany{co}, 300, 1000, nil)
	ns.Shutdown()
	ns.WaitForShutdown()
	stopped = true
	time.Sleep(500 * time.Millisecond) // pods see the disconnect
	ns = startJetStreamAt(t, port, dir)
	stopped = false
	eventuallyT(t, 10*time.Second, "pods reconnected", func() bool {
		return c.pods[0].events.nc.IsConnected() && c.pods[1].events.nc.IsConnected() && pub.nc.IsConnected()
	})
	second := &seriesCompany{name: co.name, prefix: "after-"}
	publishSeries(t, pub, []*seriesCompany{second}, 300, 1000, nil)
	co.chats, co.all = append(co.chats, second.chats...), append(co.all, second.all...)
	expectSeries(t, pub, []*seriesCompany{co})
}
