package reactor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dws-gateway/dws/internal/metrics"
	"github.com/dws-gateway/dws/session"
)

// connMetrics caches the label children the loops touch on every socket, so
// the hot path does no label-map lookup.
type connMetrics struct {
	active        [2]prometheus.Gauge
	duration      [2]prometheus.Observer
	accepted      [2]prometheus.Counter
	localDeliver  prometheus.Counter
	fwdDeliver    prometheus.Counter
	replayDeliver prometheus.Counter
	dropSlow      prometheus.Counter
	dropClosing   prometheus.Counter
	dropControl   prometheus.Counter
	dropDup       prometheus.Counter
	dropLoop      prometheus.Counter
	ringBytes     prometheus.Gauge
	fanoutLatency prometheus.Observer
}

func newConnMetrics(m *metrics.Metrics) connMetrics {
	var x connMetrics
	for _, k := range []session.Kind{session.KindUser, session.KindAdmin} {
		x.active[k] = m.ConnectionsActive.WithLabelValues(k.String())
		x.duration[k] = m.ConnectionDuration.WithLabelValues(k.String())
		x.accepted[k] = m.ConnectionsTotal.WithLabelValues(k.String(), "accepted")
	}
	x.localDeliver = m.Deliveries.WithLabelValues("local")
	x.fwdDeliver = m.Deliveries.WithLabelValues("forwarded")
	x.replayDeliver = m.Deliveries.WithLabelValues("replayed")
	x.dropSlow = m.Drops.WithLabelValues("slow_consumer")
	x.dropClosing = m.Drops.WithLabelValues("socket_closing")
	x.dropControl = m.Drops.WithLabelValues("control_frame")
	x.dropDup = m.Drops.WithLabelValues("duplicate")
	x.dropLoop = m.Drops.WithLabelValues("loop_closed")
	x.ringBytes = m.OutboundRingBytes
	x.fanoutLatency = m.FanoutLatency
	return x
}
