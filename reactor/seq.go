package reactor

import "hash/maphash"

// Exactly-once per socket (SPEC §5): every event carries its seq in
// nats.stream, and a socket never writes an event whose seq is not newer
// than the last one written on the same subscription. Redeliveries and the
// overlap of a partition handover are dropped here, per socket, and
// counted as drops{reason="duplicate"}.
//
// A user socket has two subscriptions, its chats and its selected chat's
// messages; both come from one (company, agent) partition in stream order,
// but they are kept apart so that a replay of a newly selected chat's
// earlier messages (SPEC §5a) is not mistaken for a duplicate of chats
// already written. An admin socket sees agent events of many (company,
// agent) pairs, each in its own order: it keeps a small table per pair.

// userSeqs are the last seqs written to a user socket.
type userSeqs struct {
	chats    uint64
	messages uint64 // of the chat selected now; reset by select_chat
}

// An admin socket's table is bounded (adminSeqSets × adminSeqWays slots
// of 16 B, 4 KiB) whatever the number of pairs an admin watches. It is
// set-associative: a pair is kept in one of adminSeqWays slots of its set,
// and a new pair evicts the entry with the lowest seq, the pair that has
// been quiet longest (seqs are one stream's sequence). Duplicates come
// from redeliveries and hand-over overlaps, within seconds of the
// original, so only a pair quiet while adminSeqWays busier pairs of its set
// moved on could see one slip by; a new event is never dropped.
const (
	adminSeqSets  = 64
	adminSeqWays  = 4
	adminSeqSlots = adminSeqSets * adminSeqWays
)

// adminSeqs is an admin socket's last seq per (company, agent), keyed by a
// 64-bit hash of the pair.
type adminSeqs struct {
	keys [adminSeqSlots]uint64
	seqs [adminSeqSlots]uint64
}

var seqSeed = maphash.MakeSeed()

// pairHash is the table key of (company, agent); never 0, so an empty
// slot is never mistaken for a pair.
func pairHash(company, agent string) uint64 {
	var h maphash.Hash
	h.SetSeed(seqSeed)
	h.WriteString(company)
	h.WriteByte(0)
	h.WriteString(agent)
	return h.Sum64() | 1
}

// admit reports whether seq is newer than the last one written for the
// pair, and records it when so. seq 0 (unknown: a publisher path without
// sequence numbers) is always admitted and not recorded.
func (a *adminSeqs) admit(pair, seq uint64) bool {
	if seq == 0 {
		return true
	}
	base := int(pair%adminSeqSets) * adminSeqWays
	victim := base
	for i := base; i < base+adminSeqWays; i++ {
		if a.keys[i] == pair {
			if seq <= a.seqs[i] {
				return false
			}
			a.seqs[i] = seq
			return true
		}
		if a.seqs[i] < a.seqs[victim] {
			victim = i // empty slots have seq 0 and go first
		}
	}
	a.keys[victim], a.seqs[victim] = pair, seq
	return true
}

// admitSeq is the user-socket rule for one subscription's last seq.
func admitSeq(last *uint64, seq uint64) bool {
	if seq == 0 {
		return true
	}
	if seq <= *last {
		return false
	}
	*last = seq
	return true
}
