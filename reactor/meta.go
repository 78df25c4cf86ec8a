package reactor

import "time"

// Meta travels with an event from the bridge to the socket write: the
// request id for logs and the publish time for the fan-out latency
// histogram.
type Meta struct {
	RequestID   string
	PublishedAt time.Time
	// Forwarded marks an event another pod consumed and pushed here over
	// gRPC: dws_deliveries_total counts it under path="forwarded".
	Forwarded bool
	// Seq is the event's sequence in nats.stream (SPEC §5): written in the
	// frame as "seq" and checked per socket subscription so a redelivery
	// or a handover overlap never reaches a socket twice. 0 = unknown
	// (frame without seq, no check).
	Seq uint64
}
