package session

import "testing"

func TestRoute_Key(t *testing.T) {
	for _, tc := range []struct{ in, want Route }{
		{Route{Kind: RouteAdmin, Company: "c", Agent: "a"}, Route{Kind: RouteAdmin}},
		{Route{Kind: RouteAdmin}, Route{Kind: RouteAdmin}},
		{Route{Kind: RouteChats, Company: "c", Agent: "a"}, Route{Kind: RouteChats, Company: "c", Agent: "a"}},
		{Route{Kind: RouteMessages, Company: "c", Agent: "a", Chat: "x"}, Route{Kind: RouteMessages, Company: "c", Agent: "a", Chat: "x"}},
	} {
		if got := tc.in.Key(); got != tc.want {
			t.Errorf("%+v.Key() = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
