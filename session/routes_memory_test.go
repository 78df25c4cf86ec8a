package session

import (
	"slices"
	"sync"
	"testing"
)

func pods(t *testing.T, m *MemoryRoutes, r Route) []string {
	t.Helper()
	p, err := m.Pods(t.Context(), r)
	if err != nil {
		t.Fatalf("Pods: %v", err)
	}
	return p
}

func TestMemoryRoutes_ListedWhileASocketRemains(t *testing.T) {
	m := NewMemoryRoutes("10.0.0.1:50051")
	r := Route{Kind: RouteChats, Company: "c1", Agent: "a1"}
	if got := pods(t, m, r); len(got) != 0 {
		t.Fatalf("empty registry lists %v", got)
	}
	for range 2 {
		if err := m.Join(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if got := pods(t, m, r); !slices.Equal(got, []string{"10.0.0.1:50051"}) {
		t.Fatalf("Pods = %v", got)
	}
	m.Leave(r)
	if got := pods(t, m, r); len(got) != 1 {
		t.Fatal("deregistered while a socket remains")
	}
	m.Leave(r)
	if got := pods(t, m, r); len(got) != 0 {
		t.Fatalf("still listed after the last Leave: %v", got)
	}
	m.Leave(r) // stray Leave ignored
	if err := m.Join(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if got := pods(t, m, r); len(got) != 1 {
		t.Fatal("a stray Leave made the count negative")
	}
}

func TestMemoryRoutes_KeysMatchTheRegistryKeys(t *testing.T) {
	tests := []struct {
		name       string
		join, ask  Route
		wantListed bool
	}{
		{"admin route ignores the subscription",
			Route{Kind: RouteAdmin, Company: "c1", Agent: "a1"}, Route{Kind: RouteAdmin}, true},
		{"admin routes of different subscriptions are one",
			Route{Kind: RouteAdmin, Company: "c1"}, Route{Kind: RouteAdmin, Company: "c2", Agent: "x"}, true},
		{"chats route ignores the chat",
			Route{Kind: RouteChats, Company: "c1", Agent: "a1", Chat: "x"}, Route{Kind: RouteChats, Company: "c1", Agent: "a1"}, true},
		{"messages routes differ by chat",
			Route{Kind: RouteMessages, Company: "c1", Agent: "a1", Chat: "x"}, Route{Kind: RouteMessages, Company: "c1", Agent: "a1", Chat: "y"}, false},
		{"messages route is not the chats route",
			Route{Kind: RouteMessages, Company: "c1", Agent: "a1", Chat: "x"}, Route{Kind: RouteChats, Company: "c1", Agent: "a1"}, false},
		{"agents differ",
			Route{Kind: RouteChats, Company: "c1", Agent: "a1"}, Route{Kind: RouteChats, Company: "c1", Agent: "a2"}, false},
		{"companies differ",
			Route{Kind: RouteChats, Company: "c1", Agent: "a1"}, Route{Kind: RouteChats, Company: "c2", Agent: "a1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMemoryRoutes("pod")
			if err := m.Join(t.Context(), tt.join); err != nil {
				t.Fatal(err)
			}
			if got := len(pods(t, m, tt.ask)) == 1; got != tt.wantListed {
				t.Fatalf("listed = %v, want %v", got, tt.wantListed)
			}
			m.Leave(tt.ask)
			if tt.wantListed && len(pods(t, m, tt.join)) != 0 {
				t.Fatal("Leave by the equivalent route did not deregister")
			}
		})
	}
}

func TestMemoryRoutes_PodsResultCannotBeCorruptedByCaller(t *testing.T) {
	m := NewMemoryRoutes("pod")
	r := Route{Kind: RouteAdmin}
	_ = m.Join(t.Context(), r)
	p := pods(t, m, r)
	_ = append(p, "intruder")
	if got := pods(t, m, r); !slices.Equal(got, []string{"pod"}) {
		t.Fatalf("Pods = %v after a caller appended", got)
	}
}

func TestMemoryRoutes_ConcurrentJoinLeave_CountsBalance(t *testing.T) {
	m := NewMemoryRoutes("pod")
	r := Route{Kind: RouteMessages, Company: "c", Agent: "a", Chat: "x"}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 200 {
				_ = m.Join(t.Context(), r)
				_, _ = m.Pods(t.Context(), r)
				m.Leave(r)
			}
		})
	}
	_ = m.Join(t.Context(), r) // one socket that stays
	wg.Wait()
	if len(pods(t, m, r)) != 1 {
		t.Fatal("the remaining socket's route was dropped")
	}
	m.Leave(r)
	if len(pods(t, m, r)) != 0 {
		t.Fatal("listed after every socket left")
	}
}
