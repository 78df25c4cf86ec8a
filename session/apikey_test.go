package session

import (
	"fmt"
	"strings"
	"testing"
)

func TestAPIKeyGuard_Semantics(t *testing.T) {
	const userKey, adminKey, issuerKey = "user-secret-0123456789", "admin-secret-abcdef", "issuer-secret-42"
	tests := []struct {
		name                   string
		keys                   APIKeys // configured
		given                  string
		wantUser, wantAdm, iss bool
	}{
		{"user key accepted for users", APIKeys{User: userKey, Admin: adminKey}, userKey, true, false, false},
		{"admin key accepted for admins", APIKeys{User: userKey, Admin: adminKey}, adminKey, false, true, false},
		{"missing key refused", APIKeys{User: userKey, Admin: adminKey}, "", false, false, false},
		{"prefix refused", APIKeys{User: userKey, Admin: adminKey}, userKey[:len(userKey)-1], false, false, false},
		{"key plus suffix refused", APIKeys{User: userKey, Admin: adminKey}, userKey + "x", false, false, false},
		{"case differs", APIKeys{User: userKey, Admin: adminKey}, strings.ToUpper(userKey), false, false, false},
		{"much longer candidate refused", APIKeys{User: userKey, Admin: adminKey}, strings.Repeat(userKey, 100), false, false, false},
		{"no admin key: admins need the user key", APIKeys{User: userKey}, userKey, true, true, false},
		{"no admin key: other keys still refused", APIKeys{User: userKey}, "guess", false, false, false},
		// Finding 2 of issue 9: an empty key used to accept anything.
		{"no user key: users refused", APIKeys{Admin: adminKey}, "anything", false, false, false},
		{"no user key, empty given: refused", APIKeys{Admin: adminKey}, "", false, false, false},
		{"no keys at all: everything refused", APIKeys{}, "whatever", false, false, false},
		{"no keys at all, empty given: refused", APIKeys{}, "", false, false, false},
		{"allow_no_api_key: users need none", APIKeys{AllowNoAPIKey: true}, "", true, true, false},
		{"allow_no_api_key: any key passes", APIKeys{AllowNoAPIKey: true}, "whatever", true, true, false},
		{"allow_no_api_key keeps a configured admin key", APIKeys{Admin: adminKey, AllowNoAPIKey: true}, "whatever", true, false, false},
		{"allow_no_api_key does not weaken a configured user key", APIKeys{User: userKey, AllowNoAPIKey: true}, "whatever", false, false, false},
		{"allow_no_api_key never opens minting", APIKeys{AllowNoAPIKey: true}, issuerKey, true, true, false},
		{"issuer key mints", APIKeys{User: userKey, Admin: adminKey, Issuer: issuerKey}, issuerKey, false, false, true},
		{"user key does not mint", APIKeys{User: userKey, Admin: adminKey, Issuer: issuerKey}, userKey, true, false, false},
		{"admin key does not mint", APIKeys{User: userKey, Admin: adminKey, Issuer: issuerKey}, adminKey, false, true, false},
		{"no issuer key: minting refused", APIKeys{User: userKey, Admin: adminKey}, "", false, false, false},
		{"issuer key prefix refused", APIKeys{Issuer: issuerKey}, issuerKey[:len(issuerKey)-1], false, false, false},
		{"issuer key opens no socket", APIKeys{User: userKey, Issuer: issuerKey}, issuerKey, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewAPIKeyGuardWith(tt.keys)
			if got := g.CheckUser(tt.given); got != tt.wantUser {
				t.Errorf("CheckUser = %v, want %v", got, tt.wantUser)
			}
			if got := g.CheckAdmin(tt.given); got != tt.wantAdm {
				t.Errorf("CheckAdmin = %v, want %v", got, tt.wantAdm)
			}
			if got := g.CheckIssuer(tt.given); got != tt.iss {
				t.Errorf("CheckIssuer = %v, want %v", got, tt.iss)
			}
			if got, want := g.MintingEnabled(), tt.keys.Issuer != ""; got != want {
				t.Errorf("MintingEnabled = %v, want %v", got, want)
			}
		})
	}
}

// The two-key constructor other packages already call must fail safe: an
// empty key refuses, it does not open the door.
func TestNewAPIKeyGuard_EmptyKeysRefuse(t *testing.T) {
	g := NewAPIKeyGuard("", "")
	for _, given := range []string{"", "x", "anything at all"} {
		if g.CheckUser(given) || g.CheckAdmin(given) || g.CheckIssuer(given) {
			t.Fatalf("empty keys accepted %q", given)
		}
	}
	if g.MintingEnabled() {
		t.Fatal("minting enabled without an issuer key")
	}
	g = NewAPIKeyGuard("u", "")
	if !g.CheckUser("u") || !g.CheckAdmin("u") || g.CheckIssuer("u") {
		t.Fatal("NewAPIKeyGuard(u, \"\") must accept u for users and admins and never mint")
	}
}

func TestAPIKeyGuard_KeepsNoKeyInMemoryOrPrint(t *testing.T) {
	g := NewAPIKeyGuardWith(APIKeys{User: "user-secret", Admin: "admin-secret", Issuer: "issuer-secret"})
	for _, s := range []string{fmt.Sprintf("%v", g), fmt.Sprintf("%+v", *g), fmt.Sprintf("%#v", g)} {
		if strings.Contains(s, "secret") {
			t.Fatalf("guard prints its key: %s", s)
		}
	}
}

// The check runs on the event loop for every handshake: it must not
// allocate, whatever the candidate's length.
func TestAPIKeyGuard_Check_DoesNotAllocate(t *testing.T) {
	g := NewAPIKeyGuardWith(APIKeys{User: "user-secret", Admin: "admin-secret", Issuer: "issuer-secret"})
	long := strings.Repeat("k", 300)
	allocs := testing.AllocsPerRun(100, func() {
		g.CheckUser("user-secret")
		g.CheckAdmin(long)
		g.CheckIssuer(long)
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
