package session

import "testing"

func TestSessionKey_AdminAndUserNeverShareAKey(t *testing.T) {
	user := func(c, a, u string) Identity { return Identity{Kind: KindUser, CompanyID: c, AgentID: a, UserID: u} }
	admin := func(id string) Identity { return Identity{Kind: KindAdmin, AdminID: id} }
	for _, tc := range []struct {
		name string
		a, b Identity
		same bool
	}{
		{"admin x:y vs user y of agent x in company admin", admin("x:y"), user("admin", "x", "y"), false},
		{"admin x/cy vs admin x:y (escape is injective)", admin("x/cy"), admin("x:y"), false},
		{"admin x/y vs admin x:y", admin("x/y"), admin("x:y"), false},
		{"admin a:b:c vs user b:c of agent a in company admin", admin("a:b:c"), user("admin", "a", "b:c"), false},
		{"same admin", admin("root:1"), admin("root:1"), true},
		{"same user", user("c", "a", "u:1"), user("c", "a", "u:1"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ka, kb := tc.a.SessionKey(), tc.b.SessionKey()
			if (ka == kb) != tc.same {
				t.Fatalf("%q vs %q: same = %v, want %v", ka, kb, ka == kb, tc.same)
			}
		})
	}
}

func TestSessionKey_PlainAdminIDUnchanged(t *testing.T) {
	for id, want := range map[string]string{
		"42":         "admin:42",
		"ann@ex.com": "admin:ann@ex.com",
		"a:b":        "admin:a/cb",
		"a/b":        "admin:a/sb",
		"a/c":        "admin:a/sc",
		"":           "admin:",
		"x:/":        "admin:x/c/s",
	} {
		got := (&Identity{Kind: KindAdmin, AdminID: id}).SessionKey()
		if got != want {
			t.Errorf("admin %q: key %q, want %q", id, got, want)
		}
	}
}
