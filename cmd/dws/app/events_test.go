package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/session"
)

// End-to-end tests of issue 4 (SPEC §5): real pods, one embedded
// nats-server with JetStream per test (so stream and consumer never collide
// with another test), real Redis under the cluster's per-test key prefix,
// real WebSocket clients. Fault tests live in events_faults_test.go.

// startJetStream runs a nats-server with JetStream for one test and returns
// its client URL; it outlives the test's pods (cleanups run last-in
// first-out).
func startJetStream(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "dws-test",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		t.Fatalf("embedded nats-server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded nats-server not ready after 10s")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// newEventCluster starts n pods sharing one fresh JetStream and the Redis at
// redisAddr; extra flags override the cluster's. It returns the cluster and
// a publisher on the same JetStream.
func newEventCluster(t *testing.T, redisAddr string, n int, extra map[string]string) (*cluster, *publisher) {
	t.Helper()
	return newEventClusterOn(t, startJetStream(t), redisAddr, n, extra)
}

// newEventClusterOn is newEventCluster on a JetStream the test started.
func newEventClusterOn(t *testing.T, natsURL, redisAddr string, n int, extra map[string]string) (*cluster, *publisher) {
	t.Helper()
	c := newCluster(t, redisAddr, 0)
	c.flags["nats.url"] = natsURL
	// Seconds, not the default 30 s: tests that kill a pod wait out the
	// redelivery of what it held.
	c.flags["nats.ack_wait"] = "2s"
	c.flags["nats.nak_delay"] = "200ms"
	for k, v := range extra {
		c.flags[k] = v
	}
	for i := 0; i < n; i++ {
		c.add()
	}
	t.Cleanup(func() { c.logCounters() })
	nc, err := nats.Connect(natsURL, nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("connect to the test's nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	pub := &publisher{t: t, nc: nc}
	// Every pod pulls before the test publishes, so none misses its share.
	waitConsumers(t, c, pub, n)
	return c, pub
}

// logCounters prints, when the test failed, each in-process pod's event-path
// counters: where a missing event went is usually visible there (dropped,
// skipped pod, NAKed).
func (c *cluster) logCounters() {
	if !c.t.Failed() {
		return
	}
	for i, p := range c.pods {
		var lines []string
		for _, name := range []string{"dws_nats_messages_received_total", "dws_nats_acks_total", "dws_drops_total",
			"dws_deliveries_total", "dws_grpc_forwards_total", "dws_circuit_breaker_state_changes_total"} {
			lines = append(lines, seriesOf(c.t, p, name)...)
		}
		c.t.Logf("pod %d (%s) counters:\n  %s", i, p.Cfg.Server.PodID, strings.Join(lines, "\n  "))
	}
}

// waitConsumers waits until n pods share the partitions, each its share
// ± 1 (read from the leases in Redis), and every partition's consumer has
// a pull waiting: every pod is consuming its share.
func waitConsumers(t *testing.T, c *cluster, pub *publisher, n int) {
	t.Helper()
	cfg := c.pods[0].Cfg.NATS
	l := bridge.PartitionLayout{Source: cfg.Stream, Consumer: cfg.Consumer, Partitions: cfg.Partitions}
	js, err := jetstream.New(pub.nc)
	if err != nil {
		t.Fatal(err)
	}
	eventuallyT(t, 15*time.Second, fmt.Sprintf("%d pods consuming %d partitions", n, l.Partitions), func() bool {
		owners := c.partitionOwners()
		if len(owners) != n {
			return false
		}
		total := 0
		for _, k := range owners {
			total += k
			if k < l.Partitions/n || k > (l.Partitions+n-1)/n {
				return false
			}
		}
		if total != l.Partitions {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, l.Stream())
		if err != nil {
			return false
		}
		pulling := 0
		cs := s.ListConsumers(ctx)
		for ci := range cs.Info() {
			if ci.NumWaiting > 0 {
				pulling++
			}
		}
		return cs.Err() == nil && pulling == l.Partitions
	})
}

// companyOwnedBy returns a company whose (company, agent) partition the
// pod holds the lease of, so a test can aim its events at that pod.
func (c *cluster) companyOwnedBy(pod, agent string) string {
	c.t.Helper()
	return c.companiesOwnedBy(pod, agent, 1)[0]
}

// companiesOwnedBy returns n companies in n different partitions the pod
// holds the lease of.
func (c *cluster) companiesOwnedBy(pod, agent string, n int) []string {
	c.t.Helper()
	cfg := c.pods[0].Cfg.NATS
	l := bridge.PartitionLayout{Source: cfg.Stream, Consumer: cfg.Consumer, Partitions: cfg.Partitions}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var companies []string
	taken := map[int]bool{}
	for i := 0; i < 1000 && len(companies) < n; i++ {
		company := "co" + strconv.Itoa(i)
		p := l.PartitionOf(company, agent)
		if taken[p] {
			continue
		}
		owner, err := c.leases().Owner(ctx, p)
		if err == nil && owner == pod {
			companies = append(companies, company)
			taken[p] = true
		}
	}
	if len(companies) < n {
		c.t.Fatalf("%d companies of agent %s in different partitions of %s, want %d", len(companies), agent, pod, n)
	}
	return companies
}

// leases reads the cluster's partition leases.
func (c *cluster) leases() *session.RedisPartitionLeases {
	return session.NewRedisPartitionLeases(c.rdb, c.prefix, partitionLayout(c.pods[0].Cfg.NATS).Stream())
}

// partitionOwners counts the partitions each pod holds a lease on.
func (c *cluster) partitionOwners() map[string]int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n := map[string]int{}
	for p := 0; p < c.pods[0].Cfg.NATS.Partitions; p++ {
		owner, err := c.leases().Owner(ctx, p)
		if err == nil && owner != "" {
			n[owner]++
		}
	}
	return n
}

// publisher publishes test events through bridge.Publish, the same path as
// `dws publish`.
type publisher struct {
	t  *testing.T
	nc *nats.Conn
	mu sync.Mutex
	// sent maps event id → payload bytes, to check frames byte for byte;
	// seqs → its sequence in the stream, which the frame must carry.
	sent map[string][]byte
	seqs map[string]uint64
}

func (p *publisher) publishRaw(subject, eventID string, payload []byte, requestID string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pub, err := bridge.Publish(ctx, p.nc, subject, payload, requestID)
	if err != nil {
		p.t.Errorf("publish %s: %v", subject, err)
		return
	}
	p.record(eventID, payload, pub.Sequence)
}

// record notes a stored event's payload and stream sequence, which its
// frames must carry.
func (p *publisher) record(eventID string, payload []byte, seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sent == nil {
		p.sent, p.seqs = map[string][]byte{}, map[string]uint64{}
	}
	p.sent[eventID] = payload
	p.seqs[eventID] = seq
}

// publish sends a well-formed EnrichedEventPayload with id on subject.
func (p *publisher) publish(subject, id string) {
	p.t.Helper()
	p.publishRaw(subject, id, payloadFor(subject, id), "")
}

func (p *publisher) payload(id string) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[id]
}

func (p *publisher) seq(id string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seqs[id]
}

// payloadFor builds the event JSON the upstream CDC service would publish
// on subject.
func payloadFor(subject, id string) []byte {
	r, _ := bridge.ParseSubject(subject)
	return fmt.Appendf(nil, `{"event_id":%q,"event_time":%q,"company_id":%q,"agent_id":%q,"chat_id":%q,"row_data":{"id":%q}}`,
		id, time.Now().UTC().Format(time.RFC3339Nano), r.Company, r.Agent, r.Chat, id)
}

// probePrefix marks events a test publishes only to learn that a route is
// in place; sockets record them apart from the events under test.
const probePrefix = "probe-"

// sock is a client socket whose frames a goroutine records as they come.
type sock struct {
	name string
	conn net.Conn
	done chan struct{}

	mu     sync.Mutex
	ids    []string            // event ids in arrival order (probes excluded)
	at     []time.Time         // when each of ids arrived
	frames map[string][][]byte // raw frames per event id
	probes map[string]bool
	others [][]byte // non-event frames (errors)
	err    error    // why the reader stopped
	// SPEC §5 order: the last seq per subscription (company/agent/chat of
	// the payload; chat "" = the chats or agents events), and the frames
	// that arrived with a seq not above it.
	lastSeq   map[string]uint64
	reordered []string
	epoch     string
	readySeq  uint64 // the stream position the ready frame named
}

// openSock dials url, reads the ready frame and starts recording.
func openSock(t *testing.T, name, u string) *sock {
	t.Helper()
	conn := wsDial(t, u)
	msg, err := wsutil.ReadServerText(conn)
	var ready struct {
		Type, Epoch string
		Seq         uint64
	}
	if err != nil || json.Unmarshal(msg, &ready) != nil || ready.Type != "ready" {
		t.Fatalf("%s: want ready, got %q %v", name, msg, err)
	}
	// The reader runs for the whole test; Cleanup closes the socket.
	_ = conn.SetDeadline(time.Time{})
	s := &sock{name: name, conn: conn, done: make(chan struct{}), frames: map[string][][]byte{}, probes: map[string]bool{},
		lastSeq: map[string]uint64{}, epoch: ready.Epoch, readySeq: ready.Seq}
	go s.read()
	t.Cleanup(func() { _ = conn.Close(); <-s.done })
	return s
}

func (s *sock) read() {
	defer close(s.done)
	for {
		msg, err := wsutil.ReadServerText(s.conn)
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		var env struct {
			Type    string `json:"type"`
			Seq     uint64 `json:"seq"`
			Payload struct {
				EventID string `json:"event_id"`
				Company string `json:"company_id"`
				Agent   string `json:"agent_id"`
				Chat    string `json:"chat_id"`
			} `json:"payload"`
		}
		_ = json.Unmarshal(msg, &env)
		s.mu.Lock()
		if env.Type == "event" && env.Seq != 0 { // 0: pushed without a seq (gRPC tests)
			sub := env.Payload.Company + "/" + env.Payload.Agent + "/" + env.Payload.Chat
			if env.Seq <= s.lastSeq[sub] {
				s.reordered = append(s.reordered, fmt.Sprintf("%s seq %d after %d", env.Payload.EventID, env.Seq, s.lastSeq[sub]))
			} else {
				s.lastSeq[sub] = env.Seq
			}
		}
		switch id := env.Payload.EventID; {
		case env.Type != "event" || id == "":
			s.others = append(s.others, msg)
		case strings.HasPrefix(id, probePrefix):
			s.probes[id] = true
		default:
			s.ids = append(s.ids, id)
			s.at = append(s.at, time.Now())
			s.frames[id] = append(s.frames[id], msg)
		}
		s.mu.Unlock()
	}
}

// snapshot returns the event ids received so far, in arrival order.
func (s *sock) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// counts returns how many times each event id arrived.
func (s *sock) counts() map[string]int {
	m := map[string]int{}
	for _, id := range s.snapshot() {
		m[id]++
	}
	return m
}

func (s *sock) sawProbe(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.probes[id]
}

// waitAll waits until every id in want arrived at least once.
func (s *sock) waitAll(t *testing.T, d time.Duration, want []string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := s.counts()
		var missing []string
		for _, id := range want {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.mu.Lock()
			err := s.err
			s.mu.Unlock()
			t.Fatalf("%s: %d of %d events missing after %v (first %v; reader: %v)", s.name, len(missing), len(want), d, missing[:min(5, len(missing))], err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectExactly checks that s received each id of want exactly once and
// nothing else, and that every frame is the json.v1 envelope around the
// payload exactly as published.
func (s *sock) expectExactly(t *testing.T, p *publisher, want []string) {
	t.Helper()
	got := s.counts()
	wantSet := map[string]bool{}
	for _, id := range want {
		wantSet[id] = true
		if got[id] != 1 {
			t.Errorf("%s: event %s arrived %d times, want once", s.name, id, got[id])
		}
	}
	for id, n := range got {
		if !wantSet[id] {
			t.Errorf("%s: event %s arrived %d times, want never", s.name, id, n)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reordered) > 0 {
		t.Errorf("%s: %d frames not in increasing seq (first: %s)", s.name, len(s.reordered), s.reordered[0])
	}
	for id, frames := range s.frames {
		want := `{"type":"event","payload":` + string(p.payload(id)) + `}`
		if seq := p.seq(id); seq != 0 {
			want = `{"type":"event","seq":` + strconv.FormatUint(seq, 10) + `,"payload":` + string(p.payload(id)) + `}`
		}
		for _, f := range frames {
			if string(f) != want {
				t.Errorf("%s: frame for %s is\n%s\nwant\n%s", s.name, id, f, want)
			}
		}
	}
	if len(s.others) > 0 {
		t.Errorf("%s: unexpected frames %q", s.name, s.others)
	}
}

// selectChat sends select_chat and waits until the socket is on the
// chat's route, by publishing probe events until one arrives: select_chat
// has no acknowledgement on the wire.
func selectChat(t *testing.T, p *publisher, s *sock, company, agent, chat string) {
	t.Helper()
	if err := wsutil.WriteClientText(s.conn, fmt.Appendf(nil, `{"type":"select_chat","chat_id":%q}`, chat)); err != nil {
		t.Fatalf("%s: select_chat: %v", s.name, err)
	}
	subject := fmt.Sprintf("websocket.%s.%s.messages.%s", company, agent, chat)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		id := probePrefix + uuid.NewString()
		p.publish(subject, id)
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if s.sawProbe(id) {
				return
			}
		}
	}
	t.Fatalf("%s: select_chat %s never took effect", s.name, chat)
}

// quiet lets events that should not arrive get the chance to.
func quiet() { time.Sleep(300 * time.Millisecond) }

func (c *cluster) userSock(p *App, company, agent, user string) *sock {
	c.t.Helper()
	return openSock(c.t, user+"@"+company+"/"+agent, c.userURL(p, company, agent, user))
}

// adminSock opens an admin socket subscribed to company/agent ("" = all).
func (c *cluster) adminSock(p *App, id, company, agent string) *sock {
	c.t.Helper()
	tok, err := p.Minter.MintAdmin(session.AdminClaims{AdminID: id, ExpiresAt: time.Now().Add(time.Hour),
		SubscribedCompanyID: company, SubscribedAgentID: agent})
	if err != nil {
		c.t.Fatal(err)
	}
	q := url.Values{"token": {tok}, "x-api-key": {"cluster-key"}}
	return openSock(c.t, "admin "+id, fmt.Sprintf("ws://127.0.0.1:%d/ws/admin?%s", p.WSPort(), q.Encode()))
}

// seriesOf returns the exposition lines of name on a pod's /metrics.
func seriesOf(t *testing.T, a *App, name string) []string {
	resp, err := http.Get("http://" + a.OpsAddr() + "/metrics")
	if err != nil {
		return []string{err.Error()}
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), name) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// metric sums the series of name on a pod's /metrics whose labels include
// every one of labels (`k="v"`), as an operator's scrape would see them.
func metric(t *testing.T, a *App, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.OpsAddr() + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", a.OpsAddr(), err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		metricName, lbls, _ := strings.Cut(series, "{")
		if metricName != name {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(lbls, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func TestEvents_OnePod_EachKindReachesExactlyItsSockets(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 1, nil)
	p := c.pods[0]
	u1 := c.userSock(p, "acme", "a1", "u1")
	u2 := c.userSock(p, "acme", "a1", "u2")
	u3 := c.userSock(p, "acme", "a1", "u3")
	otherAgent := c.userSock(p, "acme", "a2", "u4")
	otherCompany := c.userSock(p, "other", "a1", "u5")
	admin := c.adminSock(p, "adm1", "", "")

	selectChat(t, pub, u1, "acme", "a1", "x1")
	selectChat(t, pub, u2, "acme", "a1", "x2")

	// The first payload is deliberately odd JSON (spacing, escapes, key
	// order, number forms): it must come out exactly as published.
	odd := []byte(`{ "row_data" : {"b":1.50e0,"a":"\u00e9 ü \"q\"","n":null},"event_id":"chat-odd",  "company_id":"acme"}`)
	pub.publishRaw("websocket.acme.a1.chats", "chat-odd", odd, "")
	chats := append([]string{"chat-odd"}, ids("chat", 4)...)
	for _, id := range chats[1:] {
		pub.publish("websocket.acme.a1.chats", id)
	}
	x1, x2 := ids("x1", 3), ids("x2", 3)
	for i := range x1 {
		pub.publish("websocket.acme.a1.messages.x1", x1[i])
		pub.publish("websocket.acme.a1.messages.x2", x2[i])
	}
	pub.publish("websocket.acme.a1.messages.x3", "x3-unselected")
	pub.publish("websocket.acme.a2.messages.x1", "a2-x1-unselected")
	pub.publish("websocket.other.a1.chats", "other-chat")

	// Chat-list events keep flowing after select_chat (the old service's
	// bug): u1 and u2 get every chats event besides their chat's messages.
	u1.waitAll(t, 5*time.Second, append(slices.Clone(chats), x1...))
	u2.waitAll(t, 5*time.Second, append(slices.Clone(chats), x2...))
	u3.waitAll(t, 5*time.Second, chats)
	otherCompany.waitAll(t, 5*time.Second, []string{"other-chat"})
	quiet()
	u1.expectExactly(t, pub, append(slices.Clone(chats), x1...))
	u2.expectExactly(t, pub, append(slices.Clone(chats), x2...))
	u3.expectExactly(t, pub, chats)
	otherAgent.expectExactly(t, pub, nil)
	otherCompany.expectExactly(t, pub, []string{"other-chat"})
	admin.expectExactly(t, pub, nil)

	// Switching chats moves delivery: u1 leaves x1 for x2, chats stay.
	selectChat(t, pub, u1, "acme", "a1", "x2")
	pub.publish("websocket.acme.a1.messages.x1", "x1-after-switch")
	pub.publish("websocket.acme.a1.messages.x2", "x2-after-switch")
	pub.publish("websocket.acme.a1.chats", "chat-after-switch")
	u1.waitAll(t, 5*time.Second, []string{"x2-after-switch", "chat-after-switch"})
	u2.waitAll(t, 5*time.Second, []string{"x2-after-switch", "chat-after-switch"})
	u3.waitAll(t, 5*time.Second, []string{"chat-after-switch"})
	quiet()
	u1.expectExactly(t, pub, append(slices.Concat(chats, x1), "x2-after-switch", "chat-after-switch"))
	u2.expectExactly(t, pub, append(slices.Concat(chats, x2), "x2-after-switch", "chat-after-switch"))
	u3.expectExactly(t, pub, append(slices.Clone(chats), "chat-after-switch"))
	otherAgent.expectExactly(t, pub, nil)
	admin.expectExactly(t, pub, nil)
}

// SPEC §5 ordered delivery across the fleet (issue 10): 3 pods, each the
// owner of one company's partition; every company has a socket on every
// pod and one more with a chat selected; 2 000 events at 1 000/s, chats
// and messages interleaved. Every socket gets every event it should, once,
// in publish order (strictly increasing seq), whichever pod consumed it.
func TestEvents_ThreePods_EveryEventOnceInPublishOrder(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 3, nil)
	type company struct {
		name   string
		socks  []*sock // one per pod: chats only
		chatty *sock   // chats and messages of x1
	}
	var cos []*company
	for i, owner := range c.pods {
		co := &company{name: c.companyOwnedBy(owner.Cfg.Server.PodID, "a1")}
		for k, p := range c.pods {
			co.socks = append(co.socks, c.userSock(p, co.name, "a1", fmt.Sprintf("u%d", k)))
		}
		co.chatty = c.userSock(c.pods[(i+1)%3], co.name, "a1", "reader")
		selectChat(t, pub, co.chatty, co.name, "a1", "x1")
		cos = append(cos, co)
	}

	const n, rate = 2000, 1000
	chats := make([][]string, len(cos))
	all := make([][]string, len(cos)) // chats and messages, publish order
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		k := i % len(cos)
		id := fmt.Sprintf("ev-%05d", i)
		if i%5 == 2 { // 5 is coprime with the company count: each gets both kinds
			pub.publish("websocket."+cos[k].name+".a1.messages.x1", id)
		} else {
			pub.publish("websocket."+cos[k].name+".a1.chats", id)
			chats[k] = append(chats[k], id)
		}
		all[k] = append(all[k], id)
	}
	for k, co := range cos {
		for _, s := range co.socks {
			s.waitAll(t, 10*time.Second, chats[k])
		}
		co.chatty.waitAll(t, 10*time.Second, all[k])
	}
	quiet()
	for k, co := range cos {
		for _, s := range co.socks {
			s.expectExactly(t, pub, chats[k])
			if got := s.snapshot(); !slices.Equal(got, chats[k]) {
				t.Errorf("%s: %d inversions; first at %s", s.name, inversions(got), firstOutOfOrder(got, chats[k]))
			}
		}
		co.chatty.expectExactly(t, pub, all[k])
		if got := co.chatty.snapshot(); !slices.Equal(got, all[k]) {
			t.Errorf("%s: %d inversions; first at %s", co.chatty.name, inversions(got), firstOutOfOrder(got, all[k]))
		}
	}
	// Every ready frame named the stream's epoch, the same on every pod.
	for _, co := range cos {
		for _, s := range append(slices.Clone(co.socks), co.chatty) {
			if s.epoch == "" || s.epoch != cos[0].socks[0].epoch {
				t.Errorf("%s: ready epoch %q, want %q on every pod", s.name, s.epoch, cos[0].socks[0].epoch)
			}
		}
	}
	// Every pod consumed its company's partition and forwarded to the
	// others: both paths ran on every pod.
	for i, p := range c.pods {
		if v := metric(t, p, "dws_nats_messages_received_total"); v == 0 {
			t.Errorf("pod %d consumed no message", i)
		}
		if v := metric(t, p, "dws_deliveries_total", `path="forwarded"`); v == 0 {
			t.Errorf(`pod %d: dws_deliveries_total{path="forwarded"} is 0`, i)
		}
		t.Logf("pod %d: consumed %v, delivered local %v forwarded %v, owns %d partitions", i,
			metric(t, p, "dws_nats_messages_received_total"), metric(t, p, "dws_deliveries_total", `path="local"`),
			metric(t, p, "dws_deliveries_total", `path="forwarded"`), len(p.OwnedPartitions()))
	}
}

func TestEvents_ThreePods_AdminEventsReachMatchingAdminsOnEveryPod(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 3, nil)
	a, b, cc := c.pods[0], c.pods[1], c.pods[2]
	all := c.adminSock(a, "adm-all", "", "")
	acme := c.adminSock(b, "adm-acme", "acme", "")
	other := c.adminSock(cc, "adm-other", "other", "")
	acmeA2 := c.adminSock(cc, "adm-acme-a2", "acme", "a2")
	allOnC := c.adminSock(cc, "adm-all-c", "", "")
	user := c.userSock(a, "acme", "a1", "u1")

	acmeEvents, otherEvents := ids("acme-a1", 30), ids("other-a5", 30)
	for i := range acmeEvents {
		pub.publish("websocket.acme.a1.agents", acmeEvents[i])
		pub.publish("websocket.other.a5.agents", otherEvents[i])
	}
	both := slices.Concat(acmeEvents, otherEvents)
	all.waitAll(t, 10*time.Second, both)
	allOnC.waitAll(t, 10*time.Second, both)
	acme.waitAll(t, 10*time.Second, acmeEvents)
	other.waitAll(t, 10*time.Second, otherEvents)
	quiet()
	all.expectExactly(t, pub, both)
	allOnC.expectExactly(t, pub, both)
	acme.expectExactly(t, pub, acmeEvents)
	other.expectExactly(t, pub, otherEvents)
	acmeA2.expectExactly(t, pub, nil) // subscribed to agent a2 only
	user.expectExactly(t, pub, nil)   // agents events are for admins
}

func TestEvents_Order_OneSubjectArrivesInPublishOrder(t *testing.T) {
	const n = 500
	t.Run("one consuming pod", func(t *testing.T) {
		c, pub := newEventCluster(t, "127.0.0.1:6379", 1, nil)
		s := c.userSock(c.pods[0], "acme", "a1", "u1")
		want := ids("seq", n)
		for _, id := range want {
			pub.publish("websocket.acme.a1.chats", id)
		}
		s.waitAll(t, 10*time.Second, want)
		quiet()
		s.expectExactly(t, pub, want)
		if got := s.snapshot(); !slices.Equal(got, want) {
			t.Fatalf("order broken: %d inversions; first at %s", inversions(got), firstOutOfOrder(got, want))
		}
	})
	t.Run("two consuming pods", func(t *testing.T) {
		// One pod owns the partition of (acme, a1) and consumes all of
		// it in order; a socket on either pod sees publish order.
		c, pub := newEventCluster(t, "127.0.0.1:6379", 2, nil)
		s0 := c.userSock(c.pods[0], "acme", "a1", "u1")
		s1 := c.userSock(c.pods[1], "acme", "a1", "u2")
		want := ids("seq", n)
		for _, id := range want {
			pub.publish("websocket.acme.a1.chats", id)
		}
		for _, s := range []*sock{s0, s1} {
			s.waitAll(t, 10*time.Second, want)
		}
		quiet()
		for _, s := range []*sock{s0, s1} {
			s.expectExactly(t, pub, want)
			if got := s.snapshot(); !slices.Equal(got, want) {
				t.Fatalf("%s: order broken: %d inversions; first at %s", s.name, inversions(got), firstOutOfOrder(got, want))
			}
		}
	})
}

// inversions counts neighbours that arrived out of publish order (ids are
// zero-padded sequence numbers, so string order is publish order).
func inversions(got []string) int {
	n := 0
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			n++
		}
	}
	return n
}

func firstOutOfOrder(got, want []string) string {
	for i := range got {
		if i >= len(want) || got[i] != want[i] {
			return fmt.Sprintf("position %d: got %s", i, got[i])
		}
	}
	return "none"
}
