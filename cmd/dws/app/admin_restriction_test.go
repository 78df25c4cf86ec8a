package app

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/dws-gateway/dws/session"
)

// TestEvents_AdminRestriction_SeesOnlyItsCompany (issue 9, finding 8): an
// admin token with company_id_restriction and no subscription gets agent
// events of that company only, while an unrestricted admin on the same pod
// gets both companies'.
func TestEvents_AdminRestriction_SeesOnlyItsCompany(t *testing.T) {
	c, pub := newEventCluster(t, "127.0.0.1:6379", 1, nil)
	p := c.pods[0]
	tok, err := p.Minter.MintAdmin(session.AdminClaims{AdminID: "adm-restricted", ExpiresAt: time.Now().Add(time.Hour),
		CompanyIDRestriction: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"token": {tok}, "x-api-key": {"cluster-key"}}
	restricted := openSock(t, "restricted admin", fmt.Sprintf("ws://127.0.0.1:%d/ws/admin?%s", p.WSPort(), q.Encode()))
	all := c.adminSock(p, "adm-all", "", "")

	acme, other := ids("acme-agents", 20), ids("other-agents", 20)
	for i := range acme {
		pub.publish("websocket.acme.a1.agents", acme[i])
		pub.publish("websocket.other.a1.agents", other[i])
	}
	all.waitAll(t, 10*time.Second, append(append([]string(nil), acme...), other...))
	restricted.waitAll(t, 10*time.Second, acme)
	quiet()
	restricted.expectExactly(t, pub, acme)
}
