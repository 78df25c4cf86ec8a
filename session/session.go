// Package session decides who may connect and who owns what: the API-key
// guard, AES-GCM tokens, the single-session lock, the route registry and pod
// liveness. Each store is an interface with an in-memory implementation (the
// single-node default) and a Redis one (a fleet of pods).
//
// Everything here may block on the network: the reactor calls it from its
// worker pool, never from an event loop, except where a method says it is
// non-blocking.
package session

import (
	"context"
	"strings"
	"time"

	"github.com/dws-gateway/dws/codec"
)

// Kind tells user sockets from admin sockets.
type Kind uint8

const (
	// KindUser is a /ws/{company}/{agent} socket.
	KindUser Kind = iota
	// KindAdmin is a /ws/admin socket.
	KindAdmin
)

// String returns the metric label for k.
func (k Kind) String() string {
	if k == KindAdmin {
		return "admin"
	}
	return "user"
}

// Identity is what a valid token says about its bearer.
type Identity struct {
	Kind      Kind
	CompanyID string
	AgentID   string
	UserID    string
	// Admin fields (SPEC §3). After validation SubscribedCompanyID is the
	// effective subscription: a token's company_id_restriction, when
	// present, has been folded into it (see restrict), so filtering agent
	// events on SubscribedCompanyID alone honours the restriction.
	AdminID              string
	SubscribedCompanyID  string
	SubscribedAgentID    string
	CompanyIDRestriction string
	ExpiresAt            time.Time
	IssuedAt             time.Time
	JTI                  string
}

// SessionKey returns the single-session key suffix: "{C}:{A}:{U}" for users,
// "admin:{id}" for admins. The Redis key is "session:" + this (see keys.go).
// The user id comes last and may hold ':' (and any other printable
// character): the suffix stays unambiguous as long as company and agent ids
// have no ':', which the reactor's path check guarantees. Nothing splits
// the suffix; it is used verbatim in keys and channel names, never in a
// glob pattern.
//
// An admin id is escaped (':' → "/c", '/' → "/s"; ids without either are
// unchanged), or admin "x:y" would share "admin:x:y" with user y of agent
// x in a company named "admin", and each would close the other's socket.
// Escaped, an admin suffix holds exactly one ':', a user suffix at least
// two.
func (id *Identity) SessionKey() string {
	if id.Kind == KindAdmin {
		return "admin:" + escapeAdminID(id.AdminID)
	}
	return id.CompanyID + ":" + id.AgentID + ":" + id.UserID
}

var adminIDEscaper = strings.NewReplacer("/", "/s", ":", "/c")

func escapeAdminID(id string) string {
	if !strings.ContainsAny(id, ":/") {
		return id // the common case: no allocation, the key as before
	}
	return adminIDEscaper.Replace(id)
}

// Auth failure reasons: the Details of an InvalidToken error and the
// `reason` label of dws_auth_failures_total. A closed set, so metric label
// cardinality stays bounded.
const (
	ReasonMissing     = "missing"
	ReasonMalformed   = "malformed"
	ReasonDecrypt     = "undecryptable"
	ReasonExpired     = "expired"
	ReasonNotYetValid = "not_yet_valid"
	ReasonTooOld      = "too_old"
	ReasonMismatch    = "mismatch"
	ReasonReplay      = "replay"
	// ReasonOutsideRestriction: an admin token whose
	// subscribed_company_id is not its company_id_restriction.
	ReasonOutsideRestriction = "outside_restriction"
	ReasonAPIKey             = "api_key"
)

// TokenValidator checks tokens (SPEC §3). It may consult a Redis cache:
// call it off the event loop.
type TokenValidator interface {
	// ValidateUser checks a user token and that it names company, agent
	// and user. Failure: *codec.Error InvalidToken with a Reason* detail.
	ValidateUser(ctx context.Context, token, company, agent, user string) (Identity, *codec.Error)
	// ValidateAdmin checks an admin token (its own AES key).
	ValidateAdmin(ctx context.Context, token string) (Identity, *codec.Error)
}

// Takeover says how a lock was obtained, for dws_session_takeovers_total.
type Takeover uint8

const (
	// TakeoverNone: the lock was free.
	TakeoverNone Takeover = iota
	// TakeoverLocal: this pod already held it; the caller replaces its own
	// older socket.
	TakeoverLocal
	// TakeoverRemote: another pod released it after a kill notice.
	TakeoverRemote
	// TakeoverDeadPod: the holder's pod lease had lapsed.
	TakeoverDeadPod
	// TakeoverForced: the holder was alive but silent past the retry window.
	TakeoverForced
)

// String returns the metric label for t.
func (t Takeover) String() string {
	return [...]string{"none", "local", "remote", "dead_pod", "forced"}[t]
}

// Acquired reports how a session lock was obtained.
type Acquired struct {
	Takeover Takeover
	// Degraded is set when the shared store was unreachable and the lock
	// holds for this pod only (session.on_store_down = accept_local).
	Degraded bool
}

// Locker is the single-session lock of SPEC §4: newest connection wins.
type Locker interface {
	// Acquire makes this pod the owner of key (Identity.SessionKey),
	// telling an older holder on another pod to close its socket and
	// waiting (bounded) until it has. Blocking. Errors are *codec.Error:
	// SessionConflict (409) or ServiceUnavailable (503, store down and
	// degradation off).
	Acquire(ctx context.Context, key string) (Acquired, error)
	// Release gives key up if this pod still owns it (compare-and-delete).
	// Non-blocking: safe on an event loop; the store completes it in the
	// background.
	Release(key string)
}

// Evictor closes this pod's local socket for a session key, when another
// pod takes the session over or a refresh finds another owner. The reactor
// implements it. Safe for concurrent use; must not block.
type Evictor interface {
	Evict(key string)
}

// RouteKind is the kind of a route (SPEC §5).
type RouteKind uint8

const (
	// RouteChats: every user socket of (company, agent).
	RouteChats RouteKind = iota
	// RouteMessages: user sockets of (company, agent) that selected Chat.
	RouteMessages
	// RouteAdmin: admin sockets; Company/Agent, when set, filter by the
	// admin's subscription at delivery; the registry key ignores them.
	RouteAdmin
)

// String returns the metric label for k (also the subject kind).
func (k RouteKind) String() string {
	return [...]string{"chats", "messages", "agents"}[k]
}

// Route names a set of sockets; comparable, so it keys maps directly.
type Route struct {
	Kind    RouteKind
	Company string
	Agent   string
	Chat    string
}

// Key is the route as the registry and the loops' member lists key it:
// every admin event shares one key (route:admin) whatever its company and
// agent, because admin subscriptions are matched per socket at delivery;
// other routes are their own key. The one place that normalises it.
func (r Route) Key() Route {
	if r.Kind == RouteAdmin {
		return Route{Kind: RouteAdmin}
	}
	return r
}

// Routes is the route registry: which pods hold sockets for a route.
type Routes interface {
	// Join counts one more local socket on r; when it is the first, this
	// pod is registered under r before Join returns, so an event published
	// after Join is routed here. Blocking.
	Join(ctx context.Context, r Route) error
	// Leave counts one local socket less on r; the last one deregisters
	// this pod in the background. Non-blocking: safe on an event loop.
	Leave(r Route)
	// Pods lists the live pods registered under r (this pod included when
	// it is registered).
	Pods(ctx context.Context, r Route) ([]string, error)
}
