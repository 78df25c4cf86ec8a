package bridge

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

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

// ForwardServer serves pod-to-pod Push and grpc.health.v1: every event
// received is handed to the local Deliverer (counted as
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
}

// NewForwardServer returns a server delivering to local; opts are extra
// gRPC server options. It authenticates nobody by itself: a pod passes
// Security.ServerOptions (token interceptors, TLS) here.
func NewForwardServer(local Deliverer, m *metrics.Metrics, opts ...grpc.ServerOption) *ForwardServer {
	s := &ForwardServer{
		local:   local,
		health:  health.NewServer(),
		bad:     m.Drops.WithLabelValues("bad_forward"),
		invalid: m.Drops.WithLabelValues(DropInvalidPayload),
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

// GracefulStop reports NOT_SERVING, then stops accepting and waits for
// in-flight Pushes to finish (SPEC §6: gRPC stops after the sockets close).
func (s *ForwardServer) GracefulStop() {
	s.health.Shutdown()
	s.srv.GracefulStop()
}

// Stop closes every connection at once.
func (s *ForwardServer) Stop() {
	s.health.Shutdown()
	s.srv.Stop()
}

// Shutdown is GracefulStop bounded by ctx, then Stop: in-flight Pushes get
// what is left of shutdown.timeout, and a stream a peer keeps open (a
// grpc.health.v1 Watch never ends by itself) cannot hold the process. It
// returns ctx's error when the graceful stop had to be cut short.
func (s *ForwardServer) Shutdown(ctx context.Context) error {
	s.health.Shutdown()
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
// fails its batch or the process.
func (s *ForwardServer) Push(ctx context.Context, req *forwardpb.PushRequest) (*forwardpb.PushResponse, error) {
	var mdIDs []string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		mdIDs = md.Get(MetadataRequestID)
	}
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
	return resp, nil
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
