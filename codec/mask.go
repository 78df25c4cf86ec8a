package codec

import "github.com/gobwas/ws"

// Unmask XORs p in place with mask (RFC 6455 §5.3), p being the bytes of a
// payload that start pos bytes into it, so a payload can be unmasked piece by
// piece as it arrives. It returns the offset of the byte after p, to pass as
// pos with the next piece. Masking and unmasking are the same operation.
// It does not allocate; ws.Cipher does the work with SIMD where available.
func Unmask(p []byte, mask [4]byte, pos int) int {
	ws.Cipher(p, mask, pos)
	return pos + len(p)
}
