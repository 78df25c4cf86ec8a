package session

import (
	"errors"
	"time"

	"github.com/bytedance/sonic"
)

// UserClaims are what a user token says (SPEC §3). Zero IssuedAt and empty
// JTI are absent from the token.
type UserClaims struct {
	CompanyID string
	AgentID   string
	UserID    string
	ExpiresAt time.Time
	IssuedAt  time.Time
	JTI       string
}

// AdminClaims are what an admin token says (SPEC §3). Empty optional fields
// are absent from the token; empty subscriptions mean "all".
type AdminClaims struct {
	AdminID              string
	ExpiresAt            time.Time
	SubscribedCompanyID  string
	SubscribedAgentID    string
	CompanyIDRestriction string
	IssuedAt             time.Time
	JTI                  string
}

// userWire and adminWire are the plaintext JSON of SPEC §3, field names
// kept from the earlier service so its tokens stay valid. Times travel as
// RFC 3339 strings and are parsed by time.Parse, whose RFC 3339 fast path
// does not allocate.
type userWire struct {
	CompanyID string `json:"company_id"`
	AgentID   string `json:"agent_id"`
	UserID    string `json:"user_id"`
	ExpiresAt string `json:"expires_at"`
	IssuedAt  string `json:"issued_at,omitempty"`
	JTI       string `json:"jti,omitempty"`
}

type adminWire struct {
	AdminID              string `json:"admin_id"`
	ExpiresAt            string `json:"expires_at"`
	SubscribedCompanyID  string `json:"subscribed_company_id,omitempty"`
	SubscribedAgentID    string `json:"subscribed_agent_id,omitempty"`
	CompanyIDRestriction string `json:"company_id_restriction,omitempty"`
	IssuedAt             string `json:"issued_at,omitempty"`
	JTI                  string `json:"jti,omitempty"`
}

// claimsJSON decodes claims. CopyString is off, so decoded strings point
// into the plaintext (openToken hands over a buffer nothing else touches);
// ValidateString rejects invalid UTF-8 and raw control characters, which
// have no business in ids that end up in Redis keys and log lines.
var claimsJSON = sonic.Config{ValidateString: true}.Froze()

// errClaims is the minting error for claims the validator would refuse.
var errClaims = errors.New("token: company_id, agent_id, user_id (or admin_id) and expires_at are required, times within years 0000-9999")

// formatTime writes t as RFC 3339 in UTC to the second ("" for zero). It
// refuses years RFC 3339 cannot spell (four digits), which would mint a
// token its own validator cannot read.
func formatTime(t time.Time) (string, bool) {
	if t.IsZero() {
		return "", true
	}
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y < 0 || y > 9999 {
		return "", false
	}
	return t.Format(time.RFC3339), true
}

func encodeUserClaims(c *UserClaims) ([]byte, error) {
	exp, okExp := formatTime(c.ExpiresAt)
	iss, okIss := formatTime(c.IssuedAt)
	if c.CompanyID == "" || c.AgentID == "" || c.UserID == "" || exp == "" || !okExp || !okIss {
		return nil, errClaims
	}
	return claimsJSON.Marshal(&userWire{
		CompanyID: c.CompanyID,
		AgentID:   c.AgentID,
		UserID:    c.UserID,
		ExpiresAt: exp,
		IssuedAt:  iss,
		JTI:       c.JTI,
	})
}

func encodeAdminClaims(c *AdminClaims) ([]byte, error) {
	exp, okExp := formatTime(c.ExpiresAt)
	iss, okIss := formatTime(c.IssuedAt)
	if c.AdminID == "" || exp == "" || !okExp || !okIss {
		return nil, errClaims
	}
	return claimsJSON.Marshal(&adminWire{
		AdminID:              c.AdminID,
		ExpiresAt:            exp,
		SubscribedCompanyID:  c.SubscribedCompanyID,
		SubscribedAgentID:    c.SubscribedAgentID,
		CompanyIDRestriction: c.CompanyIDRestriction,
		IssuedAt:             iss,
		JTI:                  c.JTI,
	})
}

// parseTimes parses the two timestamps; issued may be empty (absent).
func parseTimes(expires, issued string) (exp, iss time.Time, ok bool) {
	exp, err := time.Parse(time.RFC3339, expires)
	if err != nil {
		return exp, iss, false
	}
	if issued != "" {
		if iss, err = time.Parse(time.RFC3339, issued); err != nil {
			return exp, iss, false
		}
	}
	return exp, iss, true
}

// decodeUserClaims parses a user token's plaintext; false when it is not
// JSON of the right shape or a required field is missing or empty. plain
// must never be written afterwards: the Identity's strings alias it.
func decodeUserClaims(plain []byte) (Identity, bool) {
	var w userWire
	if claimsJSON.UnmarshalFromString(bytesString(plain), &w) != nil {
		return Identity{}, false
	}
	if w.CompanyID == "" || w.AgentID == "" || w.UserID == "" {
		return Identity{}, false
	}
	exp, iss, ok := parseTimes(w.ExpiresAt, w.IssuedAt)
	if !ok {
		return Identity{}, false
	}
	return Identity{
		Kind:      KindUser,
		CompanyID: w.CompanyID,
		AgentID:   w.AgentID,
		UserID:    w.UserID,
		ExpiresAt: exp,
		IssuedAt:  iss,
		JTI:       w.JTI,
	}, true
}

// decodeAdminClaims is decodeUserClaims for admin tokens.
func decodeAdminClaims(plain []byte) (Identity, bool) {
	var w adminWire
	if claimsJSON.UnmarshalFromString(bytesString(plain), &w) != nil {
		return Identity{}, false
	}
	if w.AdminID == "" {
		return Identity{}, false
	}
	exp, iss, ok := parseTimes(w.ExpiresAt, w.IssuedAt)
	if !ok {
		return Identity{}, false
	}
	return Identity{
		Kind:                 KindAdmin,
		AdminID:              w.AdminID,
		SubscribedCompanyID:  w.SubscribedCompanyID,
		SubscribedAgentID:    w.SubscribedAgentID,
		CompanyIDRestriction: w.CompanyIDRestriction,
		ExpiresAt:            exp,
		IssuedAt:             iss,
		JTI:                  w.JTI,
	}, true
}

// ErrOutsideRestriction is returned by MintAdmin for claims whose
// subscribed_company_id names a company other than company_id_restriction:
// the validator would refuse such a token, so it is not minted (a mint
// endpoint answers it as a bad request).
var ErrOutsideRestriction = errors.New("token: subscribed_company_id outside company_id_restriction")

// restrict enforces an admin token's company_id_restriction (SPEC §3: it
// limits the socket to agent events of that company). The reactor filters
// admin sockets on SubscribedCompanyID alone (empty = every company), so
// the restriction is folded into it: an empty subscription becomes the
// restricted company; a subscription to that company stands; one to
// another company contradicts the restriction and the token is refused
// (false). Tokens without a restriction are untouched.
func restrict(id *Identity) bool {
	r := id.CompanyIDRestriction
	switch {
	case r == "" || id.SubscribedCompanyID == r:
		return true
	case id.SubscribedCompanyID == "":
		id.SubscribedCompanyID = r
		return true
	}
	return false
}
