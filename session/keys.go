package session

import (
	"encoding/hex"
	"strings"
)

// keyspace builds every Redis key and channel of SPEC §3–5; no other file
// spells a key. The prefix (config redis.key_prefix) is prepended to every
// key and channel so tests, and several deployments sharing one Redis, stay
// isolated.
type keyspace struct {
	prefix string
}

// session is the single-session lock key (SPEC §4) for a suffix from
// Identity.SessionKey: "session:{C}:{A}:{U}" or "session:admin:{id}".
func (k keyspace) session(suffix string) string {
	return k.prefix + "session:" + suffix
}

// pod is the liveness lease of a pod (SPEC §4).
func (k keyspace) pod(podID string) string {
	return k.prefix + "pod:" + podID
}

// podPrefix is pod("") for Lua scripts, which append the pod id they read
// from a lock or route member.
func (k keyspace) podPrefix() string {
	return k.prefix + "pod:"
}

// registryAlive marks a data set the route registry has been written to
// since Redis last lost its data: a Redis restart (or flush) removes it,
// which is how every pod learns that the route sets and pod leases it reads
// are incomplete until each pod re-registers. Shared by all pods, so Close
// leaves it; a long TTL (registryAliveTTL) bounds it once no pod runs.
func (k keyspace) registryAlive() string {
	return k.prefix + "registry:alive"
}

// registryRecovering is set, with a TTL of one recovery window, while pods
// re-register after a Redis restart: route lookups fail (the dispatcher
// NAKs with a delay) as long as it exists.
func (k keyspace) registryRecovering() string {
	return k.prefix + "registry:recovering"
}

// route is the route registry key of SPEC §5.
func (k keyspace) route(r Route) string {
	switch r.Kind {
	case RouteAdmin:
		return k.prefix + "route:admin"
	case RouteMessages:
		return k.prefix + "route:" + r.Company + ":" + r.Agent + ":messages:" + r.Chat
	default:
		return k.prefix + "route:" + r.Company + ":" + r.Agent + ":chats"
	}
}

// partitions is the key base of one partition group (the pods consuming
// one partitioned stream; the group is the stream's name): every key of
// the group carries the hash tag {partitions:G}, so the scripts that
// touch several of them run on Redis Cluster too (one slot per group).
// The keys (docs/redis-keys.md):
//   - members: sorted set, pod id → expiry of its membership, Unix ms on
//     Redis's clock;
//   - owners: hash, partition → the pod holding its lease, which counts
//     only while that pod is a member or leaving;
//   - leaving: sorted set, pod id → expiry, of pods draining (no longer
//     assigned partitions, their leases still good until released).
type partitionKeys struct{ members, owners, leaving string }

func (k keyspace) partitions(group string) partitionKeys {
	base := k.prefix + "{partitions:" + group + "}:"
	return partitionKeys{members: base + "members", owners: base + "owners", leaving: base + "leaving"}
}

// killChannel is where a newcomer tells the holder of a session to let go
// (SPEC §4): "session_kill:" + the same suffix as the lock key.
func (k keyspace) killChannel(suffix string) string {
	return k.prefix + "session_kill:" + suffix
}

// killPattern matches every kill channel of this prefix, for the one
// PSUBSCRIBE each pod holds.
func (k keyspace) killPattern() string {
	return globEscape(k.prefix) + "session_kill:*"
}

// killProbe is the channel a pod publishes on to itself to check that its
// kill-notice subscription still hears the master (not matched by
// killPattern: other pods never see it).
func (k keyspace) killProbe(podID string) string {
	return k.prefix + "session_kill_probe:" + podID
}

// killSuffix returns the session suffix of a kill channel, or false when the
// channel is not one of ours.
func (k keyspace) killSuffix(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, k.prefix+"session_kill:")
	return rest, ok && rest != ""
}

// tokenCache is the cluster-wide cache of a validated token, keyed by the
// token's SHA-256 so the token itself never becomes a key (SPEC §3).
func (k keyspace) tokenCache(sum [32]byte) string {
	return k.prefix + "token_cache:" + hex.EncodeToString(sum[:])
}

// jti is the replay marker of a token id (SPEC §3, auth.reject_replay).
func (k keyspace) jti(jti string) string {
	return k.prefix + "jti:" + jti
}

// all matches every key under the prefix (SCAN in tests and tooling).
func (k keyspace) all() string {
	return globEscape(k.prefix) + "*"
}

// globEscape quotes the characters Redis glob patterns treat specially, so
// a prefix is matched literally.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
