package session

import (
	"crypto/sha256"
	"encoding/binary"
	"sync/atomic"
)

// doorkeeperSlots is the size of the doorkeeper: 32 768 fingerprints of 4
// bytes, 128 KiB whatever the number of sockets.
const doorkeeperSlots = 1 << 15

// doorkeeper admits a token to the validation cache on its second
// successful validation, TinyLFU's doorkeeper without the Bloom filter: a
// direct-mapped table of fingerprints of tokens seen once.
//
// Why: most tokens are presented once. A connect burst of N fresh tokens
// used to leave N cache entries (~700 B each with the LRU's bookkeeping)
// that live auth.token_cache_ttl and, with idle sockets allocating
// nothing, stay in the heap until a forced GC: at 10 000 sockets RSS grew
// 2 333 B per socket with the cache, 1 305 B without (dws-bench connect,
// same machine, one run each). A reconnecting token pays the decrypt once
// more (≈ 2 µs) and is cached from then on. A slot overwritten by another
// token in between only delays admission; a fingerprint collision (1 in
// 2^32) admits a token one sighting early. Safe for concurrent use.
type doorkeeper struct {
	slots [doorkeeperSlots]atomic.Uint32
}

// seenBefore records sum and reports whether it was already recorded.
func (d *doorkeeper) seenBefore(sum *[sha256.Size]byte) bool {
	slot := binary.LittleEndian.Uint32(sum[0:4]) & (doorkeeperSlots - 1)
	fp := binary.LittleEndian.Uint32(sum[4:8]) | 1 // 0 = empty slot
	return d.slots[slot].Swap(fp) == fp
}
