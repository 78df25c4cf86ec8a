package bridge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

func TestValidPayload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		payload string
		want    bool
	}{
		{`{"event_id":"e1","row_data":{"n":1}}`, true},
		{`  {"a":"é ü \u00e9"}  `, true},
		{`[1,2,3]`, true},
		{`"text"`, true},
		{`42`, true},
		{`null`, true},
		{"{\"a\":\"\xff\"}", false},         // invalid UTF-8 inside a string
		{"{\"a\":\"\xc3\"}", false},         // truncated rune
		{"{\"a\":\"\xed\xa0\x80\"}", false}, // UTF-16 surrogate
		{``, false},
		{`   `, false},
		{`not json`, false},
		{`{"a":1`, false},
		{`{"a":1}}`, false},
		{`{} {}`, false},
		{`{'a':1}`, false},
	}
	for _, tt := range tests {
		if got := ValidPayload([]byte(tt.payload)); got != tt.want {
			t.Errorf("ValidPayload(%q) = %v, want %v", tt.payload, got, tt.want)
		}
	}
}

// Not parallel: it reads the process logger's output.
func TestDispatch_InvalidPayload_TerminatedCountedNextDelivered(t *testing.T) {
	logs := captureLogs(t)
	_, url := startNATS(t)
	nc := connect(t, url)
	routes := newMemRoutes()
	o := defaultPodOptions()
	remote := startPod(t, nil, routes, o) // would get a forward
	p := startPod(t, nc, routes, o)
	r := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	routes.add(r, p.id, remote.id)

	publish(t, nc, "websocket.c.a.chats", "{\"text\":\"\xff\xfe\"}", "req-bad-utf8")
	publish(t, nc, "websocket.c.a.chats", "not json at all", "req-not-json")
	publish(t, nc, "websocket.c.a.chats", `{"text":"ok"}`, "req-good")

	for name, q := range map[string]*pod{"consuming pod": p, "remote pod": remote} {
		got := q.rec.waitN(t, 1, 5*time.Second)
		time.Sleep(50 * time.Millisecond) // a late bad delivery would land by now
		if got = q.rec.snapshot(); len(got) != 1 || got[0].Payload != `{"text":"ok"}` || got[0].Meta.RequestID != "req-good" {
			t.Fatalf("%s got %+v; want only the valid event", name, got)
		}
	}
	eventually(t, 5*time.Second, "both invalid messages terminated", func() bool {
		return counter(p.m.Acks.WithLabelValues("term", DropInvalidPayload)) == 2
	})
	if v := counter(p.m.Drops.WithLabelValues(DropInvalidPayload)); v != 2 {
		t.Fatalf("drops{%s} = %v, want 2", DropInvalidPayload, v)
	}
	eventually(t, 5*time.Second, "all three settled on the server", func() bool {
		return allSettled(t, nc, o.nats)
	})
	out := logs.String()
	for _, id := range []string{"req-bad-utf8", "req-not-json"} {
		if !strings.Contains(out, `"request_id":"`+id+`"`) {
			t.Fatalf("log lacks the terminated message %s:\n%s", id, out)
		}
	}
}

func TestForwardServer_InvalidPayloads_DroppedValidNeighboursDelivered(t *testing.T) {
	t.Parallel()
	rec := newRecorder(1)
	events := []string{`{"i":0}`, "{\"i\":\"\xff\"}", `{"i":2}`, `plain text`, ``, `[3]`}
	req := &forwardpb.PushRequest{}
	for i, p := range events {
		ev := validEvent(p)
		ev.RequestId = fmt.Sprint("req-", i)
		req.Events = append(req.Events, ev)
	}
	// Through a real connection: the decoding path a hostile peer reaches.
	addr, _, sm := secureServer(t, Security{}, rec, nil)
	resp, err := forwardpb.NewForwardClient(rawConn(t, addr)).Push(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(resp.Accepted) != "[1 0 1 0 0 1]" {
		t.Fatalf("accepted = %v, want [1 0 1 0 0 1]", resp.Accepted)
	}
	got := rec.snapshot()
	if len(got) != 3 || got[0].Payload != `{"i":0}` || got[1].Payload != `{"i":2}` || got[2].Payload != `[3]` {
		t.Fatalf("deliveries %+v; want the three valid events in order", got)
	}
	if v := counter(sm.Drops.WithLabelValues(DropInvalidPayload)); v != 3 {
		t.Fatalf("drops{%s} = %v, want 3", DropInvalidPayload, v)
	}
}

// FuzzPushDecode feeds arbitrary bytes through the Push request decoding
// and the ingress checks a peer reaches: nothing may panic, and whatever
// is delivered has a valid route and a valid payload.
func FuzzPushDecode(f *testing.F) {
	seed := &forwardpb.PushRequest{Events: []*forwardpb.Event{
		validEvent(`{"a":1}`),
		{Kind: forwardpb.Kind_KIND_MESSAGES, Company: "c", Agent: "a", Chat: "x", Payload: []byte("\xff")},
		{Kind: forwardpb.Kind_KIND_AGENTS, Payload: []byte(`[]`), PublishedUnixNano: -1},
		{Kind: 99},
	}}
	b, err := proto.Marshal(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x05, 0x2a, 0x03, 0xff, 0xfe, 0xfd})
	rec := newRecorder(1)
	s := NewForwardServer(rec, metrics.New())
	f.Fuzz(func(t *testing.T, data []byte) {
		var req forwardpb.PushRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		before := len(rec.snapshot())
		resp, err := s.Push(context.Background(), &req)
		if err != nil {
			t.Fatalf("Push returned %v", err)
		}
		if len(resp.Accepted) != len(req.Events) {
			t.Fatalf("%d answers for %d events", len(resp.Accepted), len(req.Events))
		}
		for _, d := range rec.snapshot()[before:] {
			if !ValidPayload([]byte(d.Payload)) {
				t.Fatalf("delivered an invalid payload %q", d.Payload)
			}
		}
		rec.mu.Lock()
		rec.got = rec.got[:0]
		rec.mu.Unlock()
	})
}
