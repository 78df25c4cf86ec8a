package bridge

import (
	"testing"

	"github.com/dws-gateway/dws/session"
)

func TestParseSubject_SpecShapes_MapToRoutes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		subject string
		want    session.Route
	}{
		{"chats", "websocket.acme.a1.chats", session.Route{Kind: session.RouteChats, Company: "acme", Agent: "a1"}},
		{"messages", "websocket.acme.a1.messages.x9", session.Route{Kind: session.RouteMessages, Company: "acme", Agent: "a1", Chat: "x9"}},
		{"agents are admin events", "websocket.acme.a1.agents", session.Route{Kind: session.RouteAdmin, Company: "acme", Agent: "a1"}},
		{"uuid tokens", "websocket.6f1c-77.b2-ee.messages.chat-1_2", session.Route{Kind: session.RouteMessages, Company: "6f1c-77", Agent: "b2-ee", Chat: "chat-1_2"}},
		{"company named like a kind", "websocket.chats.agents.chats", session.Route{Kind: session.RouteChats, Company: "chats", Agent: "agents"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseSubject(tt.subject)
			if !ok || got != tt.want {
				t.Fatalf("ParseSubject(%q) = %+v, %v; want %+v, true", tt.subject, got, ok, tt.want)
			}
			back, ok := Subject(got)
			if !ok || back != tt.subject {
				t.Fatalf("Subject(%+v) = %q, %v; want %q", got, back, ok, tt.subject)
			}
		})
	}
}

func TestParseSubject_OtherShapes_Rejected(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"",
		"websocket",
		"websocket.",
		"websocket.acme",
		"websocket.acme.a1",
		"websocket.acme.a1.",
		"websocket.acme.a1.chat",
		"websocket.acme.a1.chats.extra",
		"websocket.acme.a1.messages",
		"websocket.acme.a1.messages.",
		"websocket.acme.a1.messages.x.y",
		"websocket.acme.a1.agents.x",
		"websocket..a1.chats",
		"websocket.acme..chats",
		"websocket.*.a1.chats",
		"websocket.acme.>.chats",
		"websocket.acme.a1.messages.*",
		"websocket.acme.a1.messages.>",
		"websocket.ac me.a1.chats",
		"Websocket.acme.a1.chats",
		"ws.acme.a1.chats",
		"xwebsocket.acme.a1.chats",
	} {
		if r, ok := ParseSubject(s); ok {
			t.Errorf("ParseSubject(%q) = %+v, true; want rejected", s, r)
		}
	}
}

func TestParseSubject_DoesNotAllocate(t *testing.T) {
	subjects := []string{"websocket.acme.a1.chats", "websocket.acme.a1.messages.x9", "websocket.acme.a1.agents", "websocket.bad"}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, s := range subjects {
			ParseSubject(s)
		}
	})
	if allocs != 0 {
		t.Fatalf("ParseSubject allocates %.1f times per run; want 0", allocs)
	}
}

func TestSubject_UnpublishableRoute_Rejected(t *testing.T) {
	t.Parallel()
	for _, r := range []session.Route{
		{Kind: session.RouteChats, Company: "", Agent: "a"},
		{Kind: session.RouteChats, Company: "a.b", Agent: "a"},
		{Kind: session.RouteMessages, Company: "c", Agent: "a"},
		{Kind: session.RouteMessages, Company: "c", Agent: "a", Chat: "*"},
		{Kind: session.RouteKind(9), Company: "c", Agent: "a"},
	} {
		if s, ok := Subject(r); ok {
			t.Errorf("Subject(%+v) = %q; want rejected", r, s)
		}
	}
}

// FuzzParseSubject: whatever parses must print back to the same subject,
// and the route must be one a subject can carry.
func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"websocket.acme.a1.chats", "websocket.acme.a1.messages.x9", "websocket.acme.a1.agents", "websocket.a..b", "websocket.*.>.chats"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := ParseSubject(s)
		if !ok {
			return
		}
		back, ok := Subject(r)
		if !ok || back != s {
			t.Fatalf("ParseSubject(%q) = %+v but Subject gives %q, %v", s, r, back, ok)
		}
	})
}

func BenchmarkParseSubject(b *testing.B) {
	b.ReportAllocs()
	subjects := []string{"websocket.6f1c2d3e.agent-42.chats", "websocket.6f1c2d3e.agent-42.messages.chat-123456", "websocket.6f1c2d3e.agent-42.agents"}
	for i := 0; b.Loop(); i++ {
		if _, ok := ParseSubject(subjects[i%3]); !ok {
			b.Fatal("rejected")
		}
	}
}
