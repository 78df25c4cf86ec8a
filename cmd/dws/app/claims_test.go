package app

import (
	"time"

	"github.com/dws-gateway/dws/session"
)

func userClaims(c, a, u string) session.UserClaims {
	return session.UserClaims{CompanyID: c, AgentID: a, UserID: u, ExpiresAt: time.Now().Add(time.Hour)}
}
