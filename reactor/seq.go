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

// adminSeqSlots bounds an admin socket's table (16 B a slot, 4 KiB):
// bounded memory per socket whatever the number of companies an admin
// watches. A collision evicts the other pair's entry, which can only let a
// duplicate through for it, never drop a new event.
const adminSeqSlots = 256

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
	i := pair % adminSeqSlots
	if a.keys[i] == pair && seq <= a.seqs[i] {
		return false
	}
	a.keys[i], a.seqs[i] = pair, seq
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
