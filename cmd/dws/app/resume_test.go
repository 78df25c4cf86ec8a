package app

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dws-gateway/dws/session"
)

// Issue 11 end to end (SPEC §5a): real pods, one JetStream and one Redis
// prefix per test, real WebSocket clients that drop and come back with
// since.

// maxSeq is the highest seq the socket received: what a client resumes
// from.
func (s *sock) maxSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m uint64
	for _, v := range s.lastSeq {
		m = max(m, v)
	}
	return m
}

// resumeURL adds since, epoch and chat_id to a socket URL.
func resumeURL(u string, since uint64, epoch, chat string) string {
	q := url.Values{"since": {strconv.FormatUint(since, 10)}, "epoch": {epoch}}
	if chat != "" {
		q.Set("chat_id", chat)
	}
	return u + "&" + q.Encode()
}

// closeNow drops the client side of s, as a browser losing its network.
func (s *sock) closeNow() {
	_ = s.conn.Close()
	<-s.done
}

// checkResumed asserts that what a client saw over its two sockets is
// exactly want, once each, in order.
func checkResumed(t *testing.T, pub *publisher, before, after *sock, want []string) {
	t.Helper()
	got := slices.Concat(before.snapshot(), after.snapshot())
	if !slices.Equal(got, want) {
		seen := map[string]int{}
		for _, id := range got {
			seen[id]++
		}
		var missing, dup []string
		for _, id := range want {
			switch seen[id] {
			case 0:
				missing = append(missing, id)
			case 1:
			default:
				dup = append(dup, id)
			}
		}
		t.Fatalf("client saw %d events, want %d: %d missing (first %v), %d twice (first %v), %d inversions",
			len(got), len(want), len(missing), missing[:min(3, len(missing))], len(dup), dup[:min(3, len(dup))], inversions(got))
	}
	before.expectExactly(t, pub, before.snapshot())
	after.expectExactly(t, pub, after.snapshot())
}

// One pod: the client is away 2 s while 500 events/s flow on its chats and
// its chat; it comes back with since and chat_id and misses nothing.
// Both ways a pod reads a replay: the block cache a reconnect storm shares
// (the default) and a consumer per replay (resume.cache_bytes 0).
func TestResume_OnePod_AwayTwoSeconds_EveryEventOnceInOrder(t *testing.T) {
	for _, tc := range []struct{ name, cacheBytes string }{{"cache", "33554432"}, {"consumer", "0"}} {
		t.Run(tc.name, func(t *testing.T) { testResumeAwayTwoSeconds(t, tc.cacheBytes) })
	}
}

func testResumeAwayTwoSeconds(t *testing.T, cacheBytes string) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 1, map[string]string{"resume.cache_bytes": cacheBytes})
	p := c.pods[0]
	base := c.userURL(p, "acme", "a1", "u1")
	first := openSock(t, "u1 before", base+"&chat_id=x1")
	selectChat(t, pub, first, "acme", "a1", "x1") // probes prove the route; not in want
	var want []string
	var back *sock
	tick := time.NewTicker(2 * time.Millisecond) // 500/s
	defer tick.Stop()
	const n = 2000
	var awayAt time.Time
	for i := range n {
		<-tick.C
		switch i {
		case 500:
			first.closeNow()
			awayAt = time.Now()
		case 1500:
			back = openSock(t, "u1 back", resumeURL(base, first.maxSeq(), first.epoch, "x1"))
			t.Logf("back after %v with since=%d", time.Since(awayAt).Round(time.Millisecond), first.maxSeq())
		}
		id := fmt.Sprintf("ev-%05d", i)
		if i%4 == 3 {
			pub.publish("websocket.acme.a1.messages.x1", id)
		} else {
			pub.publish("websocket.acme.a1.chats", id)
		}
		want = append(want, id)
	}
	back.waitAll(t, 10*time.Second, want[len(first.snapshot()):])
	quiet()
	checkResumed(t, pub, first, back, want)
	t.Logf("replayed %v events; %v duplicates dropped at the socket",
		metric(t, p, "dws_deliveries_total", `path="replayed"`), metric(t, p, "dws_drops_total", `reason="duplicate"`))
}

// A client that drops before its first event still has a since: the
// ready frame names the stream's position (at most positionInterval old),
// and coming back with it replays everything published while it was away.
func TestResume_NoEventBeforeDrop_ReadySeqIsTheSince(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 1, nil)
	p := c.pods[0]
	base := c.userURL(p, "acme", "a1", "u1")
	pub.publish("websocket.acme.a1.chats", "ev-before") // the stream is not empty
	time.Sleep(2 * positionInterval)                    // the ready frame has caught up
	first := openSock(t, "u1 before", base)
	if first.readySeq == 0 {
		t.Fatal("ready frame without the stream position")
	}
	first.closeNow()
	var want []string
	for i := range 50 {
		id := fmt.Sprintf("ev-%03d", i)
		pub.publish("websocket.acme.a1.chats", id)
		want = append(want, id)
	}
	back := openSock(t, "u1 back", resumeURL(base, first.readySeq, first.epoch, ""))
	back.waitAll(t, 10*time.Second, want)
	quiet()
	checkResumed(t, pub, first, back, want)
}

// Two pods: the pod holding the socket is killed -9 mid-series; the client
// comes back on the other pod with its last seq and misses nothing.
func TestResume_PodKilled_ClientResumesOnAnotherPod(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 1, map[string]string{"grpc.call_timeout": "1s"})
	survivor := c.pods[0]
	proc, port, doomed := c.startProcessPod()
	waitListening(t, doomed)
	waitConsumers(t, c, pub, 2)
	company := c.companyOwnedBy(doomed, "a1") // its events die with it too
	onDoomed := replacePort(c.userURL(survivor, company, "a1", "u1"), survivor.WSPort(), port)
	first := openSock(t, "u1 on the doomed pod", onDoomed)
	subject := "websocket." + company + ".a1.chats"
	var want []string
	var back *sock
	var killed time.Time
	for i := range 1500 {
		time.Sleep(2 * time.Millisecond)
		if i == 500 {
			if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_, _ = proc.Process.Wait()
			killed = time.Now()
		}
		if i == 700 {
			<-first.done // the client notices
			back = openSock(t, "u1 back on the survivor",
				resumeURL(c.userURL(survivor, company, "a1", "u1"), first.maxSeq(), first.epoch, ""))
		}
		id := fmt.Sprintf("ev-%05d", i)
		pub.publishRaw(subject, id, payloadFor(subject, id), "")
		want = append(want, id)
	}
	back.waitAll(t, 10*time.Second, want[len(first.snapshot()):])
	t.Logf("caught up %v after the kill", time.Since(killed).Round(time.Millisecond))
	quiet()
	checkResumed(t, pub, first, back, want)
}

// Resume impossible: the client gets resync with the reason, then live
// events.
func TestResume_Impossible_ResyncReasons(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 1, map[string]string{"resume.max_events": "50"})
	p := c.pods[0]
	first := c.userSock(p, "acme", "a1", "u0")
	pub.publish("websocket.acme.a1.chats", "one")
	first.waitAll(t, 5*time.Second, []string{"one"})
	epoch, since := first.epoch, first.maxSeq()
	for i := range 60 {
		pub.publish("websocket.acme.a1.chats", fmt.Sprintf("many-%02d", i))
	}
	cases := []struct {
		name, user string
		since      uint64
		epoch      string
		reason     string
	}{
		{"wrong epoch", "u1", since, "not-the-epoch", "epoch_changed"},
		{"more than resume.max_events", "u2", since, epoch, "too_many"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openSock(t, tc.user, resumeURL(c.userURL(p, "acme", "a1", tc.user), tc.since, tc.epoch, ""))
			eventuallyT(t, 5*time.Second, "resync frame", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return len(s.others) > 0
			})
			s.mu.Lock()
			got := string(s.others[0])
			s.others = nil
			s.mu.Unlock()
			if want := `{"type":"resync","payload":{"reason":"` + tc.reason + `"}}`; got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
			pub.publish("websocket.acme.a1.chats", "live-"+tc.user)
			s.waitAll(t, 5*time.Second, []string{"live-" + tc.user})
		})
	}
}

// resumingClient is a browser tab across reconnects: its sockets in order.
type resumingClient struct {
	user  string
	socks []*sock
}

func (r *resumingClient) last() *sock { return r.socks[len(r.socks)-1] }

// seen is every event the tab received, in order.
func (r *resumingClient) seen() []string {
	var all []string
	for _, s := range r.socks {
		all = append(all, s.snapshot()...)
	}
	return all
}

// reconnect opens a socket on pod resuming after the highest seq seen.
func (r *resumingClient) reconnect(t *testing.T, c *cluster, pod *App) {
	var since uint64
	for _, s := range r.socks {
		since = max(since, s.maxSeq())
	}
	r.socks = append(r.socks, openSock(t, fmt.Sprintf("%s #%d", r.user, len(r.socks)),
		resumeURL(c.userURL(pod, "acme", "a1", r.user), since, r.last().epoch, "")))
}

// A rolling restart of every pod in turn while events flow: each drained
// pod closes its sockets 1001, their clients come back on another pod with
// since, and no client misses an event or sees one twice.
func TestResume_RollingRestart_ZeroLoss(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 3, nil)
	live := slices.Clone(c.pods)
	clients := make([]*resumingClient, len(live))
	for i, p := range live {
		clients[i] = &resumingClient{user: fmt.Sprintf("u%d", i)}
		clients[i].socks = []*sock{c.userSock(p, "acme", "a1", clients[i].user)}
	}
	const n = 2000
	want := ids("roll", n)
	published := make(chan struct{})
	go func() {
		defer close(published)
		for _, id := range want {
			pub.publish("websocket.acme.a1.chats", id)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for i := range live {
		time.Sleep(500 * time.Millisecond)
		old := live[i]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := old.Shutdown(ctx); err != nil {
			t.Fatalf("drain pod %d: %v", i, err)
		}
		cancel()
		live[i] = c.add() // its replacement, never drained in this test
		<-clients[i].last().done
		clients[i].reconnect(t, c, live[i])
	}
	<-published
	for _, cl := range clients {
		cl.last().waitAll(t, 10*time.Second, want[len(cl.seen())-len(cl.last().snapshot()):])
	}
	quiet()
	for _, cl := range clients {
		if got := cl.seen(); !slices.Equal(got, want) {
			t.Errorf("%s over %d sockets: %d events, want %d; %d inversions; first difference %s",
				cl.user, len(cl.socks), len(got), n, inversions(got), firstOutOfOrder(got, want))
		}
		for _, s := range cl.socks {
			s.expectExactly(t, pub, s.snapshot())
		}
	}
}

// An admin socket resumes its agents events the same way, filtered by its
// subscription.
func TestResume_Admin_ReplaysItsSubscriptionOnly(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 1, nil)
	p := c.pods[0]
	first := c.adminSock(p, "adm", "acme", "")
	pub.publish("websocket.acme.a1.agents", "before")
	first.waitAll(t, 5*time.Second, []string{"before"})
	first.closeNow()
	var want []string
	for i := range 20 {
		id := fmt.Sprintf("away-%02d", i)
		pub.publish(fmt.Sprintf("websocket.acme.a%d.agents", i%3), id)
		want = append(want, id)
		pub.publish("websocket.other.a1.agents", "other-"+id) // not subscribed
	}
	tok, err := p.Minter.MintAdmin(session.AdminClaims{AdminID: "adm", ExpiresAt: time.Now().Add(time.Hour), SubscribedCompanyID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"token": {tok}, "x-api-key": {"cluster-key"}}
	back := openSock(t, "adm back", resumeURL(fmt.Sprintf("ws://127.0.0.1:%d/ws/admin?%s", p.WSPort(), q.Encode()), first.maxSeq(), first.epoch, ""))
	back.waitAll(t, 5*time.Second, want)
	quiet()
	back.expectExactly(t, pub, want)
	if got := back.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
}
