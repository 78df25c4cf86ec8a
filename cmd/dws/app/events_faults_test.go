package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/session"
)

// Fault tests of issue 4: a pod killed mid-flow, a gRPC target alive but
// silent, Redis down. Helpers are in events_test.go.

// waitListening waits for a process pod's gRPC listener (its pod id).
// startProcessPod returns once the WebSocket port accepts, which is before
// the pod's gRPC server listens (App.Start opens the reactor first); a push
// in between is refused and the event skipped for that pod.
func waitListening(t *testing.T, podID string) {
	t.Helper()
	eventuallyT(t, 10*time.Second, "gRPC listener of "+podID, func() bool {
		conn, err := net.Dial("tcp", podID)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

// duplicates returns the ids that arrived more than once, with their counts.
func duplicates(s *sock) map[string]int {
	d := map[string]int{}
	for id, n := range s.counts() {
		if n > 1 {
			d[id] = n
		}
	}
	return d
}

func TestEvents_PodKilledWhileEventsFlow_SurvivorsMissNothing(t *testing.T) {
	captureLogs(t)
	// Survivors push to the frozen pod until its session lease lapses;
	// those pushes wait out the call timeout and hold their acks. The
	// timeout stays far above a loaded machine's worst healthy push, so no
	// live survivor is ever skipped as unreachable.
	c, pub := newEventCluster(t, "127.0.0.1:6379", 2, map[string]string{"grpc.call_timeout": "1s"})
	p0, p1 := c.pods[0], c.pods[1]
	proc, port, doomed := c.startProcessPod()
	waitListening(t, doomed)
	waitConsumers(t, c, pub, 3)
	// The events under test belong to a partition the doomed pod consumes,
	// so it surely dies holding some of them.
	company := c.companyOwnedBy(doomed, "a1")
	subject := "websocket." + company + ".a1.chats"
	s0 := c.userSock(p0, company, "a1", "u1")
	s1 := c.userSock(p1, company, "a1", "u2")
	// A socket on the doomed pod puts it in the route too.
	openSock(t, "u3 on the doomed pod", replacePort(c.userURL(p0, company, "a1", "u3"), p0.WSPort(), port))

	const n = 600
	want := ids("flow", n)
	published := make(chan struct{})
	t.Cleanup(func() { <-published }) // no publish may outlive the test
	go func() {
		defer close(published)
		for _, id := range want {
			pub.publishRaw(subject, id, payloadFor(subject, id), "req-"+id)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	// Freeze the pod first, then kill -9 it: frozen, it keeps its
	// partitions' events unsettled, so it surely dies holding some (a bare
	// kill may land between two events).
	time.Sleep(600 * time.Millisecond)
	if err := proc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = proc.Process.Wait()
	killed := time.Now()
	<-published

	// SPEC §5: a dead pod's partitions move within nats.failover (5 s),
	// and what it had pulled reaches the survivors within it too.
	s0.waitAll(t, 5*time.Second, want)
	s1.waitAll(t, 5*time.Second, want)
	t.Logf("all %d events at both survivors %v after the kill", n, time.Since(killed).Round(time.Millisecond))
	quiet()
	// Exactly once, in seq order, each frame carrying its stream seq.
	s0.expectExactly(t, pub, want)
	s1.expectExactly(t, pub, want)
	taken := metric(t, p0, "dws_partition_takeover_pending_total") + metric(t, p1, "dws_partition_takeover_pending_total")
	if taken == 0 {
		t.Fatalf("no survivor took over a partition with events pending: pod %s died holding nothing, the test proved nothing", doomed)
	}
	dups := metric(t, p0, "dws_drops_total", `reason="duplicate"`) + metric(t, p1, "dws_drops_total", `reason="duplicate"`)
	t.Logf("survivors took over %v pending events; %v duplicates dropped at the sockets", taken, dups)
}

func firstN(m map[string]int, n int) map[string]int {
	out := map[string]int{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if len(out) == n {
			break
		}
		out[k] = m[k]
	}
	return out
}

// syncBuffer is a log sink shared by every goroutine of the pods.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON log records written so far.
func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	data := bytes.Clone(s.b.Bytes())
	s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// captureLogs sends the process logger to a buffer for the rest of the
// test (fault tests log a warning per skipped or NAKed event) and prints
// the buffer's warnings and errors if the test fails. The logger is
// process-global: a test using this must not be parallel. Call it before
// starting pods, so the logger is restored after they stopped.
func captureLogs(t *testing.T) *syncBuffer {
	buf := &syncBuffer{}
	prev := logx.L()
	logx.SetDefault(logx.New(buf))
	t.Cleanup(func() {
		logx.SetDefault(prev)
		if !t.Failed() {
			return
		}
		for _, l := range buf.lines() {
			if l["level"] != "DEBUG" {
				b, _ := json.Marshal(l)
				t.Log(string(b))
			}
		}
	})
	return buf
}

func TestEvents_GRPCTargetSilent_BreakerOpensOthersUnaffected(t *testing.T) {
	logs := captureLogs(t) // first: restored after every pod has stopped
	// Long enough that a healthy push never times out on a loaded machine
	// (the healthy sockets must get every event), short for the test.
	const callTimeout = 500 * time.Millisecond
	c, pub := newEventCluster(t, "127.0.0.1:6379", 2, map[string]string{
		"grpc.call_timeout":     callTimeout.String(),
		"grpc.breaker_failures": "2",
		"grpc.breaker_open":     "30s", // stays open for the whole test
		// A stopped pod's lease must outlive the test, or it would drop
		// out of the route and never be pushed to: lease = 3 × refresh.
		"session.refresh_interval": "3s",
		"session.ttl":              "10s",
		"route.ttl":                "10s",
	})
	p0, p1 := c.pods[0], c.pods[1]

	// The silent target consumes from a NATS of its own (its embedded
	// one): it is only a gRPC target here, and frozen it must not sit on
	// a share of the test's events.
	saved := maps.Clone(c.flags)
	c.flags["nats.url"], c.flags["nats.embedded_port"] = "", "-1"
	proc, port, silent := c.startProcessPod()
	c.flags = saved
	waitListening(t, silent)

	s0 := c.userSock(p0, "acme", "a1", "u1")
	s1 := c.userSock(p1, "acme", "a1", "u2")
	s3 := openSock(t, "u3 on the silent pod", replacePort(c.userURL(p0, "acme", "a1", "u3"), p0.WSPort(), port))
	pods, err := p0.routes.Pods(context.Background(), session.Route{Kind: session.RouteChats, Company: "acme", Agent: "a1"})
	if err != nil || !slices.Contains(pods, silent) {
		t.Fatalf("route pods %v (%v), want the silent pod %s among them", pods, err, silent)
	}

	// Warm up until both consuming pods have pushed to the target: their
	// gRPC connections to it are then established, so once it is frozen
	// every attempt waits out the call timeout (the retry included).
	// (One pod owns the partition of (acme, a1) and does all the pushing.)
	var warm []string
	eventuallyT(t, 10*time.Second, "the owner pushing to the target", func() bool {
		id := fmt.Sprintf("warm-%03d", len(warm))
		warm = append(warm, id)
		pub.publish("websocket.acme.a1.chats", id)
		s3.waitAll(t, 5*time.Second, warm)
		return len(warm) >= 3
	})
	if err := proc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	const n = 50
	want := ids("down", n)
	reqIDs := map[string]bool{}
	for i, id := range want {
		rid := "req-" + id
		reqIDs[rid] = true
		pub.publishRaw("websocket.acme.a1.chats", id, payloadFor("websocket.acme.a1.chats", id), rid)
		// Spread over 3 s: each failed push takes 2 × callTimeout, and each
		// pod needs grpc.breaker_failures of them before rejections show.
		if i < n-1 {
			time.Sleep(60 * time.Millisecond)
		}
	}
	// The healthy sockets get every event, once, while the target is down.
	all := slices.Concat(warm, want)
	s0.waitAll(t, 5*time.Second, all)
	s1.waitAll(t, 5*time.Second, all)
	// Settle: the last pushes to the silent pod finish (or hit the open
	// breaker) before the counters are read.
	time.Sleep(3 * callTimeout)
	s0.expectExactly(t, pub, all)
	s1.expectExactly(t, pub, all)

	var failed, opened, rejected float64
	for i, p := range []*App{p0, p1} {
		f := metric(t, p, "dws_grpc_forwards_total", `result="failed"`)
		o := metric(t, p, "dws_circuit_breaker_state_changes_total", `to="open"`)
		r := metric(t, p, "dws_grpc_forwards_total", `result="breaker_open"`)
		sum := metric(t, p, "dws_grpc_forward_duration_seconds_sum")
		t.Logf("pod %d: failed %v, breaker opened %v, rejected by breaker %v, push seconds %.3f", i, f, o, r, sum)
		// One retry: a failed batch waited out the call timeout, was
		// resent, and waited it out again. Batches queued behind it in the
		// stream's window time out with it, so the sum is at least one
		// timeout per failed batch (without the retry it would be about a
		// third of that); the histogram's fast healthy batches only add.
		if f > 0 && sum < 0.9*f*callTimeout.Seconds() {
			t.Errorf("pod %d: %v failed pushes took %.3fs in all; with one retry they need ≥ %.3fs", i, f, sum, 0.9*f*callTimeout.Seconds())
		}
		failed, opened, rejected = failed+f, opened+o, rejected+r
	}
	if failed < 2 || opened < 1 || rejected < 1 {
		t.Fatalf("want ≥ 2 failed pushes, a breaker opened and pushes rejected by it; got %v, %v, %v", failed, opened, rejected)
	}
	if skipped := metric(t, p0, "dws_nats_acks_total", `reason="pod_unreachable"`) + metric(t, p1, "dws_nats_acks_total", `reason="pod_unreachable"`); skipped == 0 {
		t.Error(`no message acked with reason="pod_unreachable"`)
	}

	// The consuming pods logged the skip with the event's request id.
	logged := 0
	for _, l := range logs.lines() {
		if l["msg"] != "pod unreachable; event skipped for it" || l["pod"] != silent {
			continue
		}
		rid, _ := l["request_id"].(string)
		if !reqIDs[rid] {
			t.Errorf("skip logged with request_id %q, not one published while the pod was down: %v", rid, l)
		}
		logged++
	}
	if logged == 0 {
		t.Fatal("no log line names the silent pod with a request id")
	}
	t.Logf("%d skip lines carry the published request ids", logged)
}

func TestEvents_RedisDown_EventsWaitAndAllArriveAfterward(t *testing.T) {
	captureLogs(t)
	rp := startRedis(t, "")
	c, pub := newEventCluster(t, "127.0.0.1:"+rp.port, 2, nil)
	p0, p1 := c.pods[0], c.pods[1]
	s0 := c.userSock(p0, "acme", "a1", "u1")
	s1 := c.userSock(p1, "acme", "a1", "u2")
	pub.publish("websocket.acme.a1.chats", "before")
	s0.waitAll(t, 5*time.Second, []string{"before"})
	s1.waitAll(t, 5*time.Second, []string{"before"})

	rp.kill()
	eventuallyT(t, 5*time.Second, "both pods degraded", func() bool {
		return metric(t, p0, "dws_degraded") == 1 && metric(t, p1, "dws_degraded") == 1
	})
	const n = 40
	want := ids("down", n)
	for _, id := range want {
		pub.publishRaw("websocket.acme.a1.chats", id, payloadFor("websocket.acme.a1.chats", id), "req-"+id)
		time.Sleep(10 * time.Millisecond)
	}
	// The partition leases live in the same Redis: both pods stop
	// consuming before their leases could lapse (store_unreachable), and
	// the events wait on the stream, in order, instead of being NAKed.
	eventuallyT(t, 5*time.Second, "consumption fenced on both pods", func() bool {
		return metric(t, p0, "dws_partitions_owned") == 0 && metric(t, p1, "dws_partitions_owned") == 0
	})
	time.Sleep(500 * time.Millisecond) // a delivery would show by now
	for _, s := range []*sock{s0, s1} {
		if got := len(s.snapshot()); got != 1 {
			t.Fatalf("%s: %d events delivered while the route registry was down; want them to wait", s.name, got-1)
		}
	}

	startRedis(t, rp.port) // same port, empty data set
	back := time.Now()
	s0.waitAll(t, 10*time.Second, want)
	s1.waitAll(t, 10*time.Second, want)
	t.Logf("all %d events at both sockets %v after Redis returned", n, time.Since(back).Round(time.Millisecond))
	quiet()
	// Exactly once and in publish order across the outage (SPEC §5).
	all := append([]string{"before"}, want...)
	for _, s := range []*sock{s0, s1} {
		s.expectExactly(t, pub, all)
		if got := s.snapshot(); !slices.Equal(got, all) {
			t.Errorf("%s: %d inversions; first at %s", s.name, inversions(got), firstOutOfOrder(got, all))
		}
	}
}
