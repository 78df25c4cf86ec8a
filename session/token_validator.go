package session

import (
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"sync/atomic"
	"time"

	"github.com/dws-gateway/dws/codec"
)

// ValidatorOptions are the token rules of SPEC §3 (auth.* config keys).
type ValidatorOptions struct {
	// ClockSkew is how far issued_at may lie in the future
	// (auth.clock_skew). Not applied to expires_at: SPEC §3 says
	// now ≤ expires_at.
	ClockSkew time.Duration
	// MaxTokenAge, when > 0, rejects tokens whose issued_at is older
	// (auth.max_token_age). Tokens without issued_at are not checked.
	MaxTokenAge time.Duration
	// RejectReplay rejects a jti already seen within its lifetime
	// (auth.reject_replay): a token carrying a jti opens ONE socket. The
	// second handshake with the same jti is refused (InvalidToken
	// "replay") even inside the cache TTL, on this pod or — with a shared
	// Replay — any other; a client reconnecting needs a fresh token.
	// The jti is spent by the first presentation that passes every token
	// check, even if the handshake then fails later (session conflict,
	// store down): the token cannot tell a retry from a thief. Every
	// token dws mints carries a jti; tokens without one (other issuers)
	// are not checked and stay cacheable.
	RejectReplay bool
	// Replay remembers jtis; nil with RejectReplay set means an in-process
	// MemoryReplayGuard (right for one pod; a fleet needs a shared one).
	Replay ReplayGuard
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Cache holds successful validations; nil disables caching.
	Cache TokenCache
	// CacheTTL bounds how long a validation is cached
	// (auth.token_cache_ttl); 0 disables caching. An entry never outlives
	// the token's expires_at.
	CacheTTL time.Duration
	// CacheOnRepeat caches a token on its second successful validation
	// only (see doorkeeper): a connect burst of fresh tokens leaves no
	// cache behind. Pods turn it on; off caches every success.
	CacheOnRepeat bool
}

// Validator checks user and admin tokens (SPEC §3); it implements
// TokenValidator. Safe for concurrent use.
//
// Checks run in this order, the first failure deciding the reason:
// missing → malformed (base64, length) → undecryptable (GCM) → malformed
// (JSON, required fields) → expired → not_yet_valid → too_old → mismatch
// (user tokens: company/agent/user vs the path) or outside_restriction
// (admin tokens) → replay. The replay check
// runs last so a token refused for another reason does not burn its jti.
//
// The cache saves the decrypt and parse only: on a hit the time checks and
// the path binding still run against the current clock and path. With
// RejectReplay on, tokens carrying a jti bypass the cache entirely — they
// are neither stored nor served from it, even when another pod without
// replay protection cached them — since their second presentation must
// fail; the replay set, kept until each token's expires_at, decides.
type Validator struct {
	user, admin cipher.AEAD // admin nil: no admin key configured
	// skew and maxAge are hot-reloadable (SetRules), hence atomic.
	skew, maxAge atomic.Int64
	now          func() time.Time
	replay       ReplayGuard // nil unless RejectReplay
	cache        TokenCache  // nil unless caching is on
	door         *doorkeeper // nil unless ValidatorOptions.CacheOnRepeat
	cacheTTL     time.Duration
}

var _ TokenValidator = (*Validator)(nil)

// NewValidator returns a Validator for the user key and, optionally, the
// admin key (nil: every admin token is refused as undecryptable). Keys come
// from ParseKey.
func NewValidator(userKey, adminKey []byte, opts ValidatorOptions) (*Validator, error) {
	if opts.ClockSkew < 0 || opts.MaxTokenAge < 0 || opts.CacheTTL < 0 {
		return nil, errors.New("token validator: negative duration")
	}
	user, err := newAEAD(userKey)
	if err != nil {
		return nil, err
	}
	v := &Validator{user: user, now: opts.Now}
	if adminKey != nil {
		if v.admin, err = newAEAD(adminKey); err != nil {
			return nil, errors.New("admin " + err.Error())
		}
	}
	if v.now == nil {
		v.now = time.Now
	}
	if opts.RejectReplay {
		v.replay = opts.Replay
		if v.replay == nil {
			v.replay = NewMemoryReplayGuard()
		}
	}
	if opts.Cache != nil && opts.CacheTTL > 0 {
		v.cache, v.cacheTTL = opts.Cache, opts.CacheTTL
		if opts.CacheOnRepeat {
			v.door = new(doorkeeper)
		}
	}
	v.SetRules(opts.ClockSkew, opts.MaxTokenAge)
	return v, nil
}

// SetRules changes auth.clock_skew and auth.max_token_age on a running
// validator (SIGHUP). Negative values count as zero. Safe for concurrent use.
func (v *Validator) SetRules(clockSkew, maxTokenAge time.Duration) {
	v.skew.Store(int64(max(clockSkew, 0)))
	v.maxAge.Store(int64(max(maxTokenAge, 0)))
}

// invalidToken is the InvalidToken error for one reason. The errors are
// shared: callers must not modify them (codec.Error.WithDetails copies).
func invalidToken(reason string) *codec.Error {
	return codec.NewError(codec.CodeInvalidToken, "invalid token").WithDetails(reason)
}

var (
	errTokenMissing     = invalidToken(ReasonMissing)
	errTokenMalformed   = invalidToken(ReasonMalformed)
	errTokenDecrypt     = invalidToken(ReasonDecrypt)
	errTokenExpired     = invalidToken(ReasonExpired)
	errTokenNotYetValid = invalidToken(ReasonNotYetValid)
	errTokenTooOld      = invalidToken(ReasonTooOld)
	errTokenMismatch    = invalidToken(ReasonMismatch)
	errTokenReplay      = invalidToken(ReasonReplay)
	// errTokenRestriction names the contradiction in its message: the
	// token is genuine, its claims are not coherent.
	errTokenRestriction = codec.NewError(codec.CodeInvalidToken,
		"subscribed_company_id outside company_id_restriction").WithDetails(ReasonOutsideRestriction)
	// errReplayStore fails closed: with replay protection on, a token
	// whose jti cannot be checked is not let through.
	errReplayStore = codec.NewError(codec.CodeServiceUnavailable, "token replay store unavailable")
)

// reasonError maps openToken's reasons to their shared errors.
func reasonError(reason string) *codec.Error {
	if reason == ReasonDecrypt {
		return errTokenDecrypt
	}
	return errTokenMalformed
}

// ValidateUser checks a user token and that it names company, agent and
// user. Failure: InvalidToken with a Reason* detail, or ServiceUnavailable
// when RejectReplay is on and the replay store fails. The returned error is
// shared: do not modify it.
func (v *Validator) ValidateUser(ctx context.Context, token, company, agent, user string) (Identity, *codec.Error) {
	id, st, err := v.open(ctx, KindUser, token)
	if err != nil {
		return Identity{}, err
	}
	// The binding runs on every call, cached or not: a token cached for
	// one path says nothing about another.
	if id.CompanyID != company || id.AgentID != agent || id.UserID != user {
		return Identity{}, errTokenMismatch
	}
	if err := v.finish(ctx, &id, st); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// ValidateAdmin checks an admin token against the admin key. Failures as
// ValidateUser (there is no path binding), plus InvalidToken
// ReasonOutsideRestriction for a subscription outside the token's
// company_id_restriction. The returned SubscribedCompanyID is the effective
// subscription, the restriction folded in (restrict).
func (v *Validator) ValidateAdmin(ctx context.Context, token string) (Identity, *codec.Error) {
	id, st, err := v.open(ctx, KindAdmin, token)
	if err != nil {
		return Identity{}, err
	}
	// On cache hits too: an entry another pod cached (an older build
	// during a rollout) may not have the restriction folded in. Before
	// the replay check, so a refused token does not burn its jti.
	if !restrict(&id) {
		return Identity{}, errTokenRestriction
	}
	if err := v.finish(ctx, &id, st); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// openState carries what open learned to finish.
type openState struct {
	now    time.Time
	sum    [sha256.Size]byte // cache key; valid when v.cache != nil
	cached bool              // id came from the cache
}

// open returns the token's identity after the token-intrinsic checks
// (everything but the binding and the replay set), from the cache when it
// may.
func (v *Validator) open(ctx context.Context, kind Kind, token string) (Identity, openState, *codec.Error) {
	st := openState{now: v.now()}
	if token == "" {
		return Identity{}, st, errTokenMissing
	}
	if v.cache != nil && len(token) <= maxTokenLen {
		st.sum = sha256.Sum256(stringBytes(token))
		// A hit of the other kind (user and admin share the cache) or
		// one carrying a jti under replay protection is ignored: the
		// full path decides.
		if id, ok := v.cache.Get(ctx, st.sum); ok && id.Kind == kind && !v.replayChecked(&id) {
			st.cached = true
			return id, st, v.checkTimes(&id, st.now)
		}
	}
	aead := v.user
	if kind == KindAdmin {
		aead = v.admin
		if aead == nil {
			return Identity{}, st, errTokenDecrypt
		}
	}
	plain, reason := openToken(aead, token)
	if reason != "" {
		return Identity{}, st, reasonError(reason)
	}
	var id Identity
	var ok bool
	if kind == KindAdmin {
		id, ok = decodeAdminClaims(plain)
	} else {
		id, ok = decodeUserClaims(plain)
	}
	if !ok {
		return Identity{}, st, errTokenMalformed
	}
	return id, st, v.checkTimes(&id, st.now)
}

// checkTimes applies expires_at, issued_at + skew and max age. It runs on
// cache hits too: a cached token expires, and ages past MaxTokenAge, like
// any other.
func (v *Validator) checkTimes(id *Identity, now time.Time) *codec.Error {
	if now.After(id.ExpiresAt) {
		return errTokenExpired
	}
	if !id.IssuedAt.IsZero() {
		if id.IssuedAt.After(now.Add(time.Duration(v.skew.Load()))) {
			return errTokenNotYetValid
		}
		if maxAge := time.Duration(v.maxAge.Load()); maxAge > 0 && now.Sub(id.IssuedAt) > maxAge {
			return errTokenTooOld
		}
	}
	return nil
}

// replayChecked reports whether id is subject to the replay set, which
// also keeps it out of the cache.
func (v *Validator) replayChecked(id *Identity) bool {
	return v.replay != nil && id.JTI != ""
}

// finish runs the replay check and caches a fresh success.
func (v *Validator) finish(ctx context.Context, id *Identity, st openState) *codec.Error {
	if st.cached {
		return nil
	}
	if v.replayChecked(id) {
		seen, err := v.replay.Seen(ctx, id.JTI, id.ExpiresAt)
		if err != nil {
			return errReplayStore
		}
		if seen {
			return errTokenReplay
		}
		return nil
	}
	if v.cache != nil && (v.door == nil || v.door.seenBefore(&st.sum)) {
		ttl := min(v.cacheTTL, id.ExpiresAt.Sub(st.now))
		if ttl > 0 {
			v.cache.Put(ctx, st.sum, *id, ttl)
		}
	}
	return nil
}
