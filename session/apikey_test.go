package session

import (
	"fmt"
	"strings"
	"testing"
)

func TestAPIKeyGuard_Semantics(t *testing.T) {
	const userKey, adminKey = "user-secret-0123456789", "admin-secret-abcdef"
	tests := []struct {
		name              string
		user, admin       string // configured
		given             string
		wantUser, wantAdm bool
	}{
		{"user key accepted for users", userKey, adminKey, userKey, true, false},
		{"admin key accepted for admins", userKey, adminKey, adminKey, false, true},
		{"missing key refused", userKey, adminKey, "", false, false},
		{"prefix refused", userKey, adminKey, userKey[:len(userKey)-1], false, false},
		{"key plus suffix refused", userKey, adminKey, userKey + "x", false, false},
		{"case differs", userKey, adminKey, strings.ToUpper(userKey), false, false},
		{"much longer candidate refused", userKey, adminKey, strings.Repeat(userKey, 100), false, false},
		{"no user key: users need none", "", adminKey, "anything", true, false},
		{"no user key, empty given", "", adminKey, "", true, false},
		{"no admin key: admins need the user key", userKey, "", userKey, true, true},
		{"no admin key: other keys still refused", userKey, "", "guess", false, false},
		{"no keys at all: everything accepted", "", "", "whatever", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewAPIKeyGuard(tt.user, tt.admin)
			if got := g.CheckUser(tt.given); got != tt.wantUser {
				t.Errorf("CheckUser = %v, want %v", got, tt.wantUser)
			}
			if got := g.CheckAdmin(tt.given); got != tt.wantAdm {
				t.Errorf("CheckAdmin = %v, want %v", got, tt.wantAdm)
			}
		})
	}
}

func TestAPIKeyGuard_KeepsNoKeyInMemoryOrPrint(t *testing.T) {
	g := NewAPIKeyGuard("user-secret", "admin-secret")
	for _, s := range []string{fmt.Sprintf("%v", g), fmt.Sprintf("%+v", *g), fmt.Sprintf("%#v", g)} {
		if strings.Contains(s, "secret") {
			t.Fatalf("guard prints its key: %s", s)
		}
	}
}

// The check runs on the event loop for every handshake: it must not
// allocate, whatever the candidate's length.
func TestAPIKeyGuard_Check_DoesNotAllocate(t *testing.T) {
	g := NewAPIKeyGuard("user-secret", "admin-secret")
	long := strings.Repeat("k", 300)
	allocs := testing.AllocsPerRun(100, func() {
		g.CheckUser("user-secret")
		g.CheckAdmin(long)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per check", allocs)
	}
}

func BenchmarkAPIKeyGuard_CheckUser(b *testing.B) {
	g := NewAPIKeyGuard("0123456789abcdef0123456789abcdef", "")
	b.ReportAllocs()
	for b.Loop() {
		g.CheckUser("0123456789abcdef0123456789abcdeX")
	}
}
