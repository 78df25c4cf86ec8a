package bench

import (
	"time"

	"github.com/dws-gateway/dws/session"
)

// tokenMinter mints SPEC §3 user tokens with the server's own Minter, so the
// bench and dws can never disagree on the format.
type tokenMinter struct {
	m *session.Minter
}

// newTokenMinter parses a 64-hex AES-256 key. Its errors never contain the
// key (session.ParseKey's promise).
func newTokenMinter(hexKey string) (*tokenMinter, error) {
	key, err := session.ParseKey(hexKey)
	if err != nil {
		return nil, err
	}
	m, err := session.NewMinter(key, nil)
	if err != nil {
		return nil, err
	}
	return &tokenMinter{m: m}, nil
}

// mintUser returns a token for (company, agent, user) valid until exp.
// issued_at is left out on purpose: tokens are minted once before the ramp
// and reused by every reconnect of a long soak, which auth.max_token_age
// would otherwise refuse. The Minter always adds a random jti (so
// auth.reject_replay can protect real tokens): a server under a churning
// bench must keep auth.reject_replay off, its default.
func (t *tokenMinter) mintUser(company, agent, user string, exp time.Time) (string, error) {
	return t.m.MintUser(session.UserClaims{CompanyID: company, AgentID: agent, UserID: user, ExpiresAt: exp})
}
