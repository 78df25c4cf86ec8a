package session

import (
	"strings"
	"testing"
)

func TestKeys_MatchSpecPatterns(t *testing.T) {
	k := keyspace{prefix: "p:"}
	var sum [32]byte
	sum[0], sum[31] = 0xab, 0x01
	tests := []struct {
		name, got, want string
	}{
		{"user session", k.session((&Identity{CompanyID: "acme", AgentID: "a1", UserID: "u7"}).SessionKey()), "p:session:acme:a1:u7"},
		{"admin session", k.session((&Identity{Kind: KindAdmin, AdminID: "root"}).SessionKey()), "p:session:admin:root"},
		{"pod lease", k.pod("10.0.0.1:50051"), "p:pod:10.0.0.1:50051"},
		{"chats route", k.route(Route{Kind: RouteChats, Company: "acme", Agent: "a1"}), "p:route:acme:a1:chats"},
		{"messages route", k.route(Route{Kind: RouteMessages, Company: "acme", Agent: "a1", Chat: "x9"}), "p:route:acme:a1:messages:x9"},
		{"admin route ignores filters", k.route(Route{Kind: RouteAdmin, Company: "acme"}), "p:route:admin"},
		{"kill channel", k.killChannel("acme:a1:u7"), "p:session_kill:acme:a1:u7"},
		{"kill pattern", k.killPattern(), "p:session_kill:*"},
		{"token cache", k.tokenCache(sum), "p:token_cache:ab" + strings.Repeat("00", 30) + "01"},
		{"jti", k.jti("j-1"), "p:jti:j-1"},
		{"registry alive marker", k.registryAlive(), "p:registry:alive"},
		{"registry recovering marker", k.registryRecovering(), "p:registry:recovering"},
		{"scan all", k.all(), "p:*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestKeys_NoPrefix_KeysAreBare(t *testing.T) {
	k := keyspace{}
	if got := k.session("admin:1"); got != "session:admin:1" {
		t.Fatalf("got %q", got)
	}
	if got := k.killPattern(); got != "session_kill:*" {
		t.Fatalf("got %q", got)
	}
}

func TestKeys_KillSuffix_OnlyOwnChannels(t *testing.T) {
	k := keyspace{prefix: "p:"}
	tests := []struct {
		channel, suffix string
		ok              bool
	}{
		{"p:session_kill:acme:a1:u7", "acme:a1:u7", true},
		{"p:session_kill:admin:root", "admin:root", true},
		{"q:session_kill:acme:a1:u7", "", false},
		{"p:session_kill:", "", false},
	}
	for _, tt := range tests {
		got, ok := k.killSuffix(tt.channel)
		if ok != tt.ok || (ok && got != tt.suffix) {
			t.Errorf("killSuffix(%q) = %q, %v; want %q, %v", tt.channel, got, ok, tt.suffix, tt.ok)
		}
	}
}

func TestKeys_GlobCharsInPrefix_MatchedLiterally(t *testing.T) {
	k := keyspace{prefix: "a*b?[c]\\:"}
	if got, want := k.killPattern(), `a\*b\?\[c\]\\:session_kill:*`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// User ids may contain '.', ':', '@' and glob metacharacters (issue 9: any
// printable non-space character). The user is the last component of
// {C}:{A}:{U}, so with colon-free company and agent ids (the reactor's
// path check) a colon in U cannot make two sessions share a key; ids never
// reach a pattern (PSUBSCRIBE, SCAN), only literal keys and channels.
func TestKeys_UserIdsWithPunctuationAndGlobChars_StayLiteral(t *testing.T) {
	k := keyspace{prefix: "p:"}
	ids := []string{"ann.lee@example.com", "a:b", "x*y", "q?[z]", `back\slash`, "a:b:c", ":", "é@x.y"}
	seen := map[string]string{}
	for _, u := range ids {
		id := Identity{CompanyID: "acme", AgentID: "a1", UserID: u}
		suffix := id.SessionKey()
		if want := "acme:a1:" + u; suffix != want {
			t.Fatalf("SessionKey(%q) = %q, want %q", u, suffix, want)
		}
		if got, want := k.session(suffix), "p:session:acme:a1:"+u; got != want {
			t.Fatalf("session key %q, want %q", got, want)
		}
		// The first two colons end company and agent; the rest is the
		// user, verbatim.
		if parts := strings.SplitN(suffix, ":", 3); parts[0] != "acme" || parts[1] != "a1" || parts[2] != u {
			t.Fatalf("suffix %q splits into %q", suffix, parts)
		}
		ch := k.killChannel(suffix)
		if got, ok := k.killSuffix(ch); !ok || got != suffix {
			t.Fatalf("killSuffix(%q) = %q, %v; want %q", ch, got, ok, suffix)
		}
		if prev, dup := seen[suffix]; dup {
			t.Fatalf("users %q and %q share session key %q", prev, u, suffix)
		}
		seen[suffix] = u
	}
	// Patterns are built from the prefix alone; a glob character of an id
	// never reaches one.
	if got := k.killPattern(); got != "p:session_kill:*" {
		t.Fatalf("kill pattern %q", got)
	}
	if got := k.route(Route{Kind: RouteMessages, Company: "acme", Agent: "a1", Chat: "x*y:z"}); got != "p:route:acme:a1:messages:x*y:z" {
		t.Fatalf("messages route %q", got)
	}
}
