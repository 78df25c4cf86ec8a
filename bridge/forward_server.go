package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dws-gateway/dws/bridge/forwardpb"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/internal/safego"
	"github.com/dws-gateway/dws/reactor"
	"github.com/dws-gateway/dws/session"
)

// maxPushBytes is the largest Push a pod accepts: the client keeps batches
// near 1 MiB, and a single event may be as large as the NATS max_payload
// (1 MiB by default, configurable up to 64 MiB there; 16 MiB here is a
// deliberate cap on what one RPC may make us allocate).
const maxPushBytes = 16 << 20

// ForwardServiceName is the grpc.health.v1 service name reported SERVING
// while the Push service runs ("" reports the whole server as well).
const ForwardServiceName = "dws.forward.v1.Forward"

// ForwardServer serves pod-to-pod Push, PushStream and grpc.health.v1:
// every event received is handed to the local Deliverer (counted as
// dws_deliveries_total{path="forwarded"}).
type ForwardServer struct {
	forwardpb.UnimplementedForwardServer
	local  Deliverer
	srv    *grpc.Server
	health *health.Server
	bad    prometheus.Counter
	// invalid counts events whose payload is not UTF-8 JSON: a peer may
	// be hostile, so the sender's check is not trusted.
	invalid prometheus.Counter

	// draining is closed when a stop begins: a PushStream is long-lived,
	// so without it every peer's open stream would hold GracefulStop
	// until the shutdown deadline.
	draining  chan struct{}
	drainOnce sync.Once
}

// errDraining ends a PushStream when this pod stops. Unavailable, so the
// sender treats it like a pod going away: one resend on a fresh stream,
// which reaches a pod that is no longer listening and is skipped.
var errDraining = status.Error(codes.Unavailable, "pod is shutting down")

// NewForwardServer returns a server delivering to local; opts are extra
// gRPC server options. It authenticates nobody by itself: a pod passes
// Security.ServerOptions (token interceptors, TLS) here.
func NewForwardServer(local Deliverer, m *metrics.Metrics, opts ...grpc.ServerOption) *ForwardServer {
	s := &ForwardServer{
		local:    local,
		health:   health.NewServer(),
		bad:      m.Drops.WithLabelValues("bad_forward"),
		invalid:  m.Drops.WithLabelValues(DropInvalidPayload),
		draining: make(chan struct{}),
	}
	s.srv = grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(maxPushBytes)}, opts...)...)
	forwardpb.RegisterForwardServer(s.srv, s)
	healthpb.RegisterHealthServer(s.srv, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(ForwardServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// Serve accepts connections on lis until GracefulStop or Stop; it returns
// nil after a stop.
func (s *ForwardServer) Serve(lis net.Listener) error {
	if err := s.srv.Serve(lis); err != nil && err != grpc.ErrServerStopped {
		return err
	}
	return nil
}

// GracefulStop reports NOT_SERVING, ends every PushStream after the batch
// it is delivering, then stops accepting and waits for in-flight Pushes to
// finish (SPEC §6: gRPC stops after the sockets close).
func (s *ForwardServer) GracefulStop() {
	s.drain()
	s.srv.GracefulStop()
}

// Stop closes every connection at once.
func (s *ForwardServer) Stop() {
	s.drain()
	s.srv.Stop()
}

// drain reports NOT_SERVING and tells every PushStream to end.
func (s *ForwardServer) drain() {
	s.health.Shutdown()
	s.drainOnce.Do(func() { close(s.draining) })
}

// Shutdown is GracefulStop bounded by ctx, then Stop: in-flight Pushes get
// what is left of shutdown.timeout, and a stream a peer keeps open (a
// grpc.health.v1 Watch never ends by itself) cannot hold the process. It
// returns ctx's error when the graceful stop had to be cut short.
func (s *ForwardServer) Shutdown(ctx context.Context) error {
	s.drain()
	done := make(chan struct{})
	go func() { // plain goroutine: GracefulStop does not panic
		s.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.srv.Stop()
		<-done
		return ctx.Err()
	}
}

// Push delivers each event to this pod's sockets and answers per event how
// many accepted it. A malformed event (bad route, payload not UTF-8 JSON)
// is answered 0, counted and logged, and its neighbours still go; a panic
// while delivering one is recovered and answered 0, so one bad event never
// fails its batch or the process. Request ids come from Event.request_id,
// else from the x-request-id metadata (senders before the field existed).
func (s *ForwardServer) Push(ctx context.Context, req *forwardpb.PushRequest) (*forwardpb.PushResponse, error) {
	var mdIDs []string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		mdIDs = md.Get(MetadataRequestID)
	}
	return s.deliverBatch(ctx, req, mdIDs), nil
}

// PushStream serves one sender's long-lived stream: each request is a batch
// handled exactly as by Push (same validation, drop counters and per-event
// answers) and answered by one response, in order. Request ids come from
// Event.request_id only: the stream's metadata is sent once, not per batch.
//
// Memory is bounded per stream: the next request is read only after the
// previous one is answered, and grpc.MaxRecvMsgSize(maxPushBytes) caps one
// request; what the sender pipelines beyond that waits in HTTP/2 flow
// control. On a stop the stream ends with Unavailable after the batch being
// delivered is answered; batches read after that are never delivered (the
// sender resends or skips them).
func (s *ForwardServer) PushStream(ss forwardpb.Forward_PushStreamServer) error {
	select {
	case <-s.draining:
		return errDraining
	default:
	}
	// Recv cannot be interrupted, so it runs on its own goroutine and this
	// one waits for it or for a stop; returning from the handler is what
	// ends a stream blocked in Recv (grpc-go cancels it). The reader does
	// the whole Recv → deliver → Send cycle itself, so a batch costs no
	// extra goroutine hand-off.
	var gate sync.Mutex // held while a batch is delivered and answered
	stopped := false    // guarded by gate: the handler has returned
	done := make(chan error, 1)
	safego.Go(ss.Context(), "forward_push_stream", func(ctx context.Context) {
		err := errors.New("forward: push stream reader panicked")
		defer func() { done <- err }()
		err = s.serveStream(ctx, ss, &gate, &stopped)
	})
	select {
	case err := <-done:
		if errors.Is(err, io.EOF) { // the sender closed its side
			return nil
		}
		return err
	case <-s.draining:
		gate.Lock()
		stopped = true
		gate.Unlock()
		return errDraining
	}
}

// serveStream reads, delivers and answers batches until the stream ends or
// the handler stopped.
func (s *ForwardServer) serveStream(ctx context.Context, ss forwardpb.Forward_PushStreamServer, gate *sync.Mutex, stopped *bool) error {
	for {
		req, err := ss.Recv()
		if err != nil {
			return err
		}
		gate.Lock()
		if *stopped {
			gate.Unlock()
			return errDraining
		}
		err = ss.Send(s.deliverBatch(ctx, req, nil))
		gate.Unlock()
		if err != nil {
			return err
		}
	}
}

// deliverBatch is Push and PushStream's common body: it validates and
// delivers each event of req and answers per event how many sockets
// accepted it. mdIDs are the request ids from metadata, used for events
// that carry none.
func (s *ForwardServer) deliverBatch(ctx context.Context, req *forwardpb.PushRequest, mdIDs []string) *forwardpb.PushResponse {
	resp := &forwardpb.PushResponse{Accepted: make([]uint32, len(req.GetEvents()))}
	for i, ev := range req.GetEvents() {
		id := ev.GetRequestId()
		if id == "" && i < len(mdIDs) {
			id = mdIDs[i]
		}
		ectx := logx.WithRequestID(ctx, id)
		r, ok := eventRoute(ev)
		if !ok {
			s.bad.Inc()
			logx.From(ectx).Warn("forwarded event with an invalid route dropped",
				slog.Int("kind", int(ev.GetKind())), slog.String("company", ev.GetCompany()))
			continue
		}
		if !ValidPayload(ev.GetPayload()) {
			s.invalid.Inc()
			logx.From(ectx).Warn("forwarded event with a payload that is not UTF-8 JSON dropped",
				slog.String("company", ev.GetCompany()), slog.Int("bytes", len(ev.GetPayload())))
			continue
		}
		meta := reactor.Meta{RequestID: id, Forwarded: true, Seq: ev.GetSeq()}
		if ns := ev.GetPublishedUnixNano(); ns != 0 {
			meta.PublishedAt = time.Unix(0, ns)
		}
		var n int
		safego.Run(ectx, "forward_push", func() { n = s.local.Deliver(r, ev.GetPayload(), meta) })
		resp.Accepted[i] = uint32(n)
	}
	return resp
}

// eventRoute validates ev's routing target.
func eventRoute(ev *forwardpb.Event) (session.Route, bool) {
	r := session.Route{Company: ev.GetCompany(), Agent: ev.GetAgent(), Chat: ev.GetChat()}
	switch ev.GetKind() {
	case forwardpb.Kind_KIND_CHATS:
		r.Kind = session.RouteChats
	case forwardpb.Kind_KIND_MESSAGES:
		r.Kind = session.RouteMessages
		if r.Chat == "" {
			return r, false
		}
	case forwardpb.Kind_KIND_AGENTS:
		// Admin events filter by subscription; company/agent may be any.
		r.Kind = session.RouteAdmin
		return r, true
	default:
		return r, false
	}
	return r, r.Company != "" && r.Agent != ""
}

// kindToProto maps a route kind to its wire enum.
func kindToProto(k session.RouteKind) forwardpb.Kind {
	switch k {
	case session.RouteChats:
		return forwardpb.Kind_KIND_CHATS
	case session.RouteMessages:
		return forwardpb.Kind_KIND_MESSAGES
	case session.RouteAdmin:
		return forwardpb.Kind_KIND_AGENTS
	}
	return forwardpb.Kind_KIND_UNSPECIFIED
}
