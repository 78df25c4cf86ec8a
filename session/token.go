package session

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unsafe"
)

// Token wire format (SPEC §3): base64url( nonce ‖ ciphertext ‖ tag ) with
// AES-256-GCM, the plaintext being the claims JSON of token_claims.go.
const (
	// KeySize is the AES-256 key length in bytes; the configured key is
	// twice as many hex characters.
	KeySize = 32
	// nonceSize is GCM's standard 96-bit nonce (NIST SP 800-38D §8.2).
	// Nonces are random: one key must not seal more than 2^32 tokens
	// (SP 800-38D §8.3), far beyond what a minting endpoint sees.
	nonceSize = 12
	// tagSize is GCM's full 128-bit tag.
	tagSize = 16
	// minTokenBytes is the shortest decoded token that could be genuine.
	minTokenBytes = nonceSize + tagSize
	// maxTokenLen bounds the encoded token we try to decode. A token
	// arrives in the request head, which websocket.max_handshake_bytes caps
	// at 8 KiB; half of that is far above any real token (~250 chars) and
	// keeps an attacker from making us decode or hash more.
	maxTokenLen = 4096
)

// tokenEncoding is the alphabet of minted tokens: URL-safe and unpadded, so
// a token sits in a query string without escaping. Strict rejects
// non-canonical trailing bits, so one token has exactly one spelling (bar
// the optional padding), which keeps the cache key of a token unique.
var tokenEncoding = base64.RawURLEncoding.Strict()

// ParseKey decodes a 64-hex-character AES-256 key (auth.token_aes_key,
// auth.admin_token_aes_key). It accepts exactly what config validation
// accepts — 64 characters of either case, nothing trimmed — so a key that
// passes `dws config check` is the key the pod runs with and the other way
// round: a trailing newline from a secrets file is refused here as it is
// there, instead of being fixed silently in one place only. The error
// never contains the key or any part of it, so it may be logged at
// start-up.
func ParseKey(s string) ([]byte, error) {
	if strings.ContainsFunc(s, unicode.IsSpace) {
		return nil, fmt.Errorf("token key: contains white space (a trailing newline?); want exactly %d hexadecimal characters", 2*KeySize)
	}
	if len(s) != 2*KeySize {
		return nil, fmt.Errorf("token key: want %d hexadecimal characters, got %d", 2*KeySize, len(s))
	}
	key := make([]byte, KeySize)
	if _, err := hex.Decode(key, []byte(s)); err != nil {
		// hex's own error quotes the offending character: a piece of
		// the secret.
		return nil, errors.New("token key: not hexadecimal")
	}
	return key, nil
}

// newAEAD builds the one AES-256-GCM instance used for a key; a
// cipher.AEAD is safe for concurrent use, so it is made once and shared by
// every handshake worker.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("token key: want %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return cipher.NewGCM(block)
}

// ErrNoAdminKey is returned by MintAdmin when the Minter has no admin key.
var ErrNoAdminKey = errors.New("token: no admin token key configured")

// Minter seals claims into tokens (POST /generate-token, POST
// /admin/generate-token, `dws token`). Safe for concurrent use.
type Minter struct {
	user, admin cipher.AEAD
}

// NewMinter returns a Minter for the user key and, optionally, the admin
// key (nil: MintAdmin returns ErrNoAdminKey). Keys come from ParseKey.
func NewMinter(userKey, adminKey []byte) (*Minter, error) {
	user, err := newAEAD(userKey)
	if err != nil {
		return nil, err
	}
	m := &Minter{user: user}
	if adminKey != nil {
		if m.admin, err = newAEAD(adminKey); err != nil {
			return nil, fmt.Errorf("admin %w", err)
		}
	}
	return m, nil
}

// MintUser returns a user token for c. It refuses claims the Validator
// would reject as malformed (an empty id, a zero ExpiresAt). Times are
// written in UTC to the second, so ExpiresAt and IssuedAt lose their
// fraction (rounding down: a token never lives longer than asked). An empty
// JTI is replaced by a fresh random one (newJTI), so auth.reject_replay
// protects every token dws mints: such a token opens one socket.
func (m *Minter) MintUser(c UserClaims) (string, error) {
	if c.JTI == "" {
		c.JTI = newJTI()
	}
	plain, err := encodeUserClaims(&c)
	if err != nil {
		return "", err
	}
	return seal(m.user, plain), nil
}

// MintAdmin returns an admin token for c, sealed with the admin key. Same
// rules as MintUser (a jti is added when c has none); claims subscribing to
// a company outside their CompanyIDRestriction are refused with
// ErrOutsideRestriction.
func (m *Minter) MintAdmin(c AdminClaims) (string, error) {
	if m.admin == nil {
		return "", ErrNoAdminKey
	}
	if c.CompanyIDRestriction != "" && c.SubscribedCompanyID != "" && c.SubscribedCompanyID != c.CompanyIDRestriction {
		return "", ErrOutsideRestriction
	}
	if c.JTI == "" {
		c.JTI = newJTI()
	}
	plain, err := encodeAdminClaims(&c)
	if err != nil {
		return "", err
	}
	return seal(m.admin, plain), nil
}

// jtiBytes is the entropy of a minted token id: 128 bits, so two tokens
// share one by chance with probability ~n²/2^129 — never, in practice — and
// replay rejection cannot refuse a genuine first use.
const jtiBytes = 16

// newJTI returns a random token id, base64url without padding (22
// characters): safe in a Redis key and a log line as it is.
func newJTI() string {
	var b [jtiBytes]byte
	// crypto/rand.Read never fails (see seal).
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// seal encrypts plain under a fresh random nonce and encodes the result.
func seal(aead cipher.AEAD, plain []byte) string {
	raw := make([]byte, nonceSize, nonceSize+len(plain)+tagSize)
	// crypto/rand.Read never fails (Go ≥ 1.24 crashes the program rather
	// than return short).
	_, _ = rand.Read(raw)
	raw = aead.Seal(raw, raw[:nonceSize], plain, nil)
	return tokenEncoding.EncodeToString(raw)
}

// openToken decodes and decrypts token with aead. It returns the plaintext
// — in one fresh buffer that nothing else references, so the caller may
// alias strings into it — or the failure reason.
func openToken(aead cipher.AEAD, token string) ([]byte, string) {
	if len(token) > maxTokenLen {
		return nil, ReasonMalformed
	}
	s, ok := trimPadding(token)
	if !ok || len(s)%4 == 1 {
		return nil, ReasonMalformed
	}
	n := tokenEncoding.DecodedLen(len(s))
	if n < minTokenBytes {
		return nil, ReasonMalformed
	}
	raw := make([]byte, n)
	// A short count means the decoder skipped '\r' or '\n' (which
	// encoding/base64 ignores); refuse, so a token has one spelling.
	if got, err := tokenEncoding.Decode(raw, stringBytes(s)); err != nil || got != n {
		return nil, ReasonMalformed
	}
	nonce, sealed := raw[:nonceSize], raw[nonceSize:]
	// Decrypt in place (dst = sealed[:0] overlaps sealed exactly, as
	// cipher.AEAD allows): the token costs this one allocation.
	plain, err := aead.Open(sealed[:0], nonce, sealed, nil)
	if err != nil {
		return nil, ReasonDecrypt
	}
	return plain, ""
}

// trimPadding strips the optional '=' padding (SPEC §3 accepts both
// spellings). Padded input must be a whole number of quanta, as padding
// only ever completes the last one (RFC 4648 §4).
func trimPadding(s string) (string, bool) {
	if !strings.HasSuffix(s, "=") {
		return s, true
	}
	if len(s)%4 != 0 {
		return "", false
	}
	s = s[:len(s)-1]
	if strings.HasSuffix(s, "=") {
		s = s[:len(s)-1]
	}
	return s, true
}

// stringBytes views s as bytes without copying. The result must only be
// read: it shares s's immutable memory. Used to feed the token to base64 and
// SHA-256, which only read, without a copy per handshake.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// bytesString views b as a string without copying. b must never be written
// again; openToken's plaintext qualifies (fresh, then only read), which lets
// the claims' strings point into it instead of being copied one by one.
func bytesString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
