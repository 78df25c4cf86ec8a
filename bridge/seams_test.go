package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// The seams cmd/dws wires: the reactor is the Deliverer, the session
// package's stores are the route registry.
var (
	_ Deliverer      = (*reactor.Server)(nil)
	_ session.Routes = (*session.MemoryRoutes)(nil)
)

// The single-node default: the session package's in-memory registry, no
// Redis, one pod.
func TestBridge_SingleNodeMemoryRoutes_DeliversJoinedRoutesOnly(t *testing.T) {
	t.Parallel()
	_, url := startNATS(t)
	nc := connect(t, url)
	lis := startPod(t, nil, nil, defaultPodOptions()) // for a pod id and recorder
	routes := session.NewMemoryRoutes(lis.id)
	chats := session.Route{Kind: session.RouteChats, Company: "c", Agent: "a"}
	if err := routes.Join(context.Background(), chats); err != nil {
		t.Fatal(err)
	}
	lis.startBridge(t, nc, routes, defaultPodOptions())

	publish(t, nc, "websocket.c.a.messages.x", `"not selected"`, "")
	publish(t, nc, "websocket.c.a.chats", `"joined"`, "")
	got := lis.rec.waitN(t, 1, 5*time.Second)
	eventually(t, 5*time.Second, "the unselected chat's event dropped", func() bool {
		return counter(lis.m.Drops.WithLabelValues("no_route")) == 1
	})
	if got = lis.rec.snapshot(); len(got) != 1 || got[0].Payload != `"joined"` || got[0].Route != chats {
		t.Fatalf("deliveries %+v", got)
	}
}
