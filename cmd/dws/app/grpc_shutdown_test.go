package app

import (
	"context"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A peer holding a grpc.health.v1 Watch open must not hold the pod's
// shutdown past shutdown.timeout (issue 9, finding 4: GracefulStop waited
// for it forever).
func TestGRPC_OpenHealthWatch_ShutdownReturnsWithinTimeout(t *testing.T) {
	a := startApp(t, nil)
	s := singleSock(t, a, "acme", "a1", "u1")
	w, err := healthpb.NewHealthClient(plainConn(t, a)).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := w.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch = %v, %v", resp, err)
	}

	// Leave time for the drain itself (close grace included) so the bound
	// measured is gRPC's, then assert the whole Shutdown fits in it.
	timeout := a.Cfg.Shutdown.CloseGrace + 2*time.Second
	const slack = 3 * time.Second
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		done <- a.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		took := time.Since(start)
		if err != nil {
			t.Fatalf("Shutdown = %v; an open peer stream is no failure of the drain", err)
		}
		if took > timeout+slack {
			t.Fatalf("Shutdown took %v, want within %v (+%v)", took, timeout, slack)
		}
		t.Logf("Shutdown with an open Watch took %v (timeout %v)", took, timeout)
	case <-time.After(timeout + slack):
		t.Fatalf("Shutdown still running %v after start with a health Watch open (timeout %v)", timeout+slack, timeout)
	}
	// The watcher was cut off, and the socket was closed 1001 on the way.
	for {
		if _, err := w.Recv(); err != nil {
			break
		}
	}
	<-s.done
}
