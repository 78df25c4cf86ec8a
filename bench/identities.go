package bench

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"
)

// Identity layout of the bench: socket i is user "u{i}" of company "c{g}"
// and agent "a{g}" with g = i mod groups. Users are distinct per socket, so
// the single-session rule never closes a bench socket; groups spread the
// sockets over (company, agent) routes the way a fanout scenario publishes
// to them.
//
// DWS_BENCH_USER_PREFIX (default "u") renames the users, so a second run can
// add sockets beside a first one without replacing its sessions: that is how
// perf/connect.md measures the marginal memory of a socket.
func identity(i, groups int) (company, agent, user string) {
	g := strconv.Itoa(i % groups)
	return "c" + g, "a" + g, userPrefix + strconv.Itoa(i)
}

var userPrefix = func() string {
	if p := os.Getenv("DWS_BENCH_USER_PREFIX"); p != "" {
		return p
	}
	return "u"
}()

// buildTargets mints a token for every socket id in [from, to) and returns
// the request targets, indexed by id-from. All minting happens here, before
// the ramp, so it never slows the ramp.
func buildTargets(from, to, groups int, tokenKey, apiKey string, exp time.Time) ([]string, error) {
	m, err := newTokenMinter(tokenKey)
	if err != nil {
		return nil, err
	}
	key := url.QueryEscape(apiKey)
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		c, a, u := identity(i, groups)
		tok, err := m.mintUser(c, a, u, exp)
		if err != nil {
			return nil, fmt.Errorf("mint token: %w", err)
		}
		out = append(out, "/ws/"+c+"/"+a+"?user="+u+"&token="+tok+"&x-api-key="+key)
	}
	return out, nil
}
