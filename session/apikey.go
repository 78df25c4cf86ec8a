package session

import (
	"crypto/sha256"
	"crypto/subtle"
)

// APIKeyGuard checks the API keys of SPEC §2 step 4 (handshakes) and of the
// token-minting endpoints (SPEC §3). It is immutable after construction: safe
// for concurrent use, and cheap enough to call on an event loop (no I/O, no
// allocation).
//
// Keys are compared as SHA-256 digests with crypto/subtle, so neither the
// position of the first wrong byte nor the configured key's length shows in
// the time a check takes: every candidate, whatever its length, is hashed
// and the two 32-byte digests are compared in constant time.
//
// An empty configured key means "no key required":
//   - userKey empty: CheckUser accepts anything (a single-node dev setup);
//   - adminKey empty: admin requests fall back to the user key (SPEC §2:
//     admin sockets run "the same checks ... and (when configured) the admin
//     API key"), so an unset admin key never opens the admin endpoints —
//     POST /admin/generate-token mints admin tokens — to callers the user
//     key would have refused. With both empty, CheckAdmin accepts anything.
type APIKeyGuard struct {
	user, admin keyDigest
}

// keyDigest is a configured key reduced to its digest; set is false when no
// key was configured. The key itself is not kept, so a heap dump or a
// careless %v of the guard cannot show it.
type keyDigest struct {
	set bool
	sum [sha256.Size]byte
}

func digestOf(key string) keyDigest {
	if key == "" {
		return keyDigest{}
	}
	return keyDigest{set: true, sum: sha256.Sum256([]byte(key))}
}

// NewAPIKeyGuard returns a guard for the general (user) key and the admin
// key; either may be empty (see APIKeyGuard for what that means).
func NewAPIKeyGuard(userKey, adminKey string) *APIKeyGuard {
	g := &APIKeyGuard{user: digestOf(userKey), admin: digestOf(adminKey)}
	if !g.admin.set {
		g.admin = g.user
	}
	return g
}

// CheckUser reports whether given is the general API key, or true when none
// is configured. Constant time in the content of given.
func (g *APIKeyGuard) CheckUser(given string) bool {
	return g.user.match(given)
}

// CheckAdmin reports whether given is the admin API key (the general key
// when no admin key is configured), or true when neither is configured.
// Constant time in the content of given.
func (g *APIKeyGuard) CheckAdmin(given string) bool {
	return g.admin.match(given)
}

func (k *keyDigest) match(given string) bool {
	if !k.set {
		return true
	}
	sum := sha256.Sum256(stringBytes(given))
	return subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1
}
