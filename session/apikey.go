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
// An empty configured key accepts nothing (SPEC §3: keys are mandatory
// outside dev mode), with one explicit exception, APIKeys.AllowNoAPIKey:
//   - user key empty: CheckUser refuses every candidate, unless
//     AllowNoAPIKey, when it accepts any (handshakes are then checked by
//     token only);
//   - admin key empty: admin requests fall back to the user key (SPEC §2:
//     admin sockets run "the same checks ... and (when configured) the admin
//     API key"), so an unset admin key never lets through a caller the user
//     key would have refused;
//   - issuer key empty: CheckIssuer refuses everything, whatever
//     AllowNoAPIKey says: minting is disabled (MintingEnabled is false and
//     the endpoints answer 403 "token minting disabled"). The issuer key is
//     never the user or admin key's fallback, nor the other way round: those
//     travel in browser URLs and must not mint tokens.
type APIKeyGuard struct {
	user, admin, issuer keyDigest
}

// APIKeys are the configured keys of an APIKeyGuard (config auth.*).
type APIKeys struct {
	// User is auth.api_key, needed by every user handshake (and by admin
	// handshakes when Admin is empty).
	User string
	// Admin is auth.admin_api_key; empty = admins present User.
	Admin string
	// Issuer is auth.issuer_api_key, needed by POST /generate-token and
	// POST /admin/generate-token; empty = minting disabled.
	Issuer string
	// AllowNoAPIKey is auth.allow_no_api_key, the explicit opt-out of the
	// mandatory API key: only with it does an empty User mean "handshakes
	// need no key". It never weakens a configured key, and never opens
	// the mint endpoints.
	AllowNoAPIKey bool
}

// keyDigest is a configured key reduced to its digest. The key itself is not
// kept, so a heap dump or a careless %v of the guard cannot show it.
type keyDigest struct {
	// mode says what an unset key means.
	mode keyMode
	sum  [sha256.Size]byte
}

type keyMode uint8

const (
	keyRefuseAll keyMode = iota // no key configured: nothing matches
	keyRequired                 // sum is the key's digest
	keyAcceptAll                // no key configured and explicitly allowed
)

func digestOf(key string) keyDigest {
	if key == "" {
		return keyDigest{mode: keyRefuseAll}
	}
	return keyDigest{mode: keyRequired, sum: sha256.Sum256([]byte(key))}
}

// NewAPIKeyGuardWith returns the guard for k; see APIKeyGuard for what an
// empty key means. The pod builds it from config as
//
//	NewAPIKeyGuardWith(APIKeys{User: cfg.Auth.APIKey, Admin: cfg.Auth.AdminAPIKey,
//		Issuer: cfg.Auth.IssuerAPIKey, AllowNoAPIKey: cfg.Auth.AllowNoAPIKey})
func NewAPIKeyGuardWith(k APIKeys) *APIKeyGuard {
	g := &APIKeyGuard{user: digestOf(k.User), admin: digestOf(k.Admin), issuer: digestOf(k.Issuer)}
	if g.user.mode == keyRefuseAll && k.AllowNoAPIKey {
		g.user.mode = keyAcceptAll
	}
	if k.Admin == "" {
		g.admin = g.user
	}
	return g
}

// NewAPIKeyGuard returns a guard for the general (user) key and the admin
// key, with no issuer key (minting disabled) and no opt-out: an empty user
// key refuses every handshake. Use NewAPIKeyGuardWith for the issuer key and
// auth.allow_no_api_key.
func NewAPIKeyGuard(userKey, adminKey string) *APIKeyGuard {
	return NewAPIKeyGuardWith(APIKeys{User: userKey, Admin: adminKey})
}

// CheckUser reports whether given is the general API key (anything, when no
// key is configured and AllowNoAPIKey was given). Constant time in the
// content of given.
func (g *APIKeyGuard) CheckUser(given string) bool {
	return g.user.match(given)
}

// CheckAdmin reports whether given is the admin API key (the general key's
// rule when no admin key is configured). Constant time in the content of
// given.
func (g *APIKeyGuard) CheckAdmin(given string) bool {
	return g.admin.match(given)
}

// CheckIssuer reports whether given is the issuer API key, which the mint
// endpoints require; always false when none is configured. Constant time in
// the content of given.
func (g *APIKeyGuard) CheckIssuer(given string) bool {
	return g.issuer.match(given)
}

// MintingEnabled reports whether an issuer key is configured: without one
// the mint endpoints answer 403 "token minting disabled" (SPEC §3) instead
// of 401, so an operator can tell a wrong key from a disabled feature.
func (g *APIKeyGuard) MintingEnabled() bool {
	return g.issuer.mode == keyRequired
}

func (k *keyDigest) match(given string) bool {
	switch k.mode {
	case keyAcceptAll:
		return true
	case keyRequired:
		sum := sha256.Sum256(stringBytes(given))
		return subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1
	}
	return false
}
