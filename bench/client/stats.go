package client

import (
	"maps"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Error kinds: the keys of Stats.Errors. A closed set (plus "http_<status>")
// so a report can be read at a glance and compared between runs.
const (
	// ErrConnectRefused: connect() failed with ECONNREFUSED (nothing
	// listening, or the listen backlog overflowed with tcp_abort_on_overflow).
	ErrConnectRefused = "connect_refused"
	// ErrConnectTimeout: the kernel gave up on the SYN (ETIMEDOUT).
	ErrConnectTimeout = "connect_timeout"
	// ErrNoSourcePort: the source address has no free ephemeral port left
	// towards the server (EADDRNOTAVAIL): add source addresses.
	ErrNoSourcePort = "no_source_port"
	// ErrTooManyFiles: the process or system file limit was hit
	// (EMFILE/ENFILE): add worker processes.
	ErrTooManyFiles = "too_many_files"
	// ErrConnect: any other socket, bind or connect failure.
	ErrConnect = "connect_error"
	// ErrTimeoutConnect, ErrTimeoutUpgrade, ErrTimeoutReady: the handshake
	// timeout expired while connecting, while waiting for the 101, or while
	// waiting for {"type":"ready"} after it.
	ErrTimeoutConnect = "timeout_connect"
	ErrTimeoutUpgrade = "timeout_upgrade"
	ErrTimeoutReady   = "timeout_ready"
	// ErrHTTPPrefix prefixes the status of a response that was not 101:
	// "http_403".
	ErrHTTPPrefix = "http_"
	// ErrBadHandshake: the 101 was malformed, too long, or carried a wrong
	// Sec-WebSocket-Accept.
	ErrBadHandshake = "bad_handshake"
	// ErrBadProtocol: the 101 did not select the offered sub-protocol (a
	// browser fails such a connection).
	ErrBadProtocol = "bad_protocol"
	// ErrNotReady: the first frame after the 101 was not {"type":"ready"}.
	ErrNotReady = "not_ready"
	// ErrClosedHandshake: the server sent a close frame before ready (its
	// code is in CloseCodes).
	ErrClosedHandshake = "closed_handshake"
	// ErrEOFHandshake: the server closed the TCP connection before ready.
	ErrEOFHandshake = "eof_handshake"
	// ErrEOF: an open socket's TCP connection ended without a close frame
	// (recorded as close code 1006 too).
	ErrEOF = "eof"
	// ErrReset: the connection was reset (ECONNRESET, EPIPE).
	ErrReset = "reset"
	// ErrProtocol: the server broke RFC 6455 (masked frame, bad header,
	// reserved opcode).
	ErrProtocol = "protocol"
	// ErrFrameTooBig: a frame longer than Config.MaxFrame.
	ErrFrameTooBig = "frame_too_big"
	// ErrFragmented: a fragmented message; the engine does not reassemble
	// (dws sends whole frames) and skips it, keeping the socket.
	ErrFragmented = "fragmented"
	// ErrWrite: a write failed or was short (the kernel send buffer is
	// never expected to fill with the few bytes a bench client sends).
	ErrWrite = "write_error"
	// ErrCloseTimeout: a client-initiated close got no echo in time.
	ErrCloseTimeout = "close_timeout"
)

// Stats is a point-in-time copy of an engine's aggregates. The maps and
// histograms belong to the caller.
type Stats struct {
	// Dials counts connect attempts.
	Dials int64
	// Opened counts sockets that received {"type":"ready"}.
	Opened int64
	// Failed counts sockets that failed before ready (see Errors); a
	// handshake the caller aborted with Close is not a failure.
	Failed int64
	// Connected is the number of sockets open now.
	Connected int64
	// Closed counts open sockets that ended, for any reason.
	Closed int64
	// FramesIn counts frames received after the 101, all opcodes.
	FramesIn int64
	// Events counts {"type":"event"} frames; ErrorFrames {"type":"error"}
	// frames; OtherFrames any other text or binary frame.
	Events, ErrorFrames, OtherFrames int64
	// Pings counts server pings; PongsSent the pongs written back.
	Pings, PongsSent int64
	// BytesIn counts bytes read after connect.
	BytesIn int64
	// Errors counts failures by kind (the Err* constants).
	Errors map[string]int64
	// CloseCodes counts close codes: received in close frames, 1005 for
	// an empty close frame, 1006 for an open socket that dropped without one.
	CloseCodes map[uint16]int64
	// Handshake holds microseconds from connect() to {"type":"ready"}.
	Handshake *hdrhistogram.Histogram
	// EventLatency holds microseconds from an event payload's "ts" (unix
	// nanoseconds at publish) to its receipt.
	EventLatency *hdrhistogram.Histogram
}

// Histogram bounds: microseconds from 1 µs to 10 min at 3 significant
// digits (0.1 % error), enough for a handshake stuck in SYN retries and for a
// soak's worst event; the counts array stays under 200 KiB.
const (
	histMinUs  = 1
	histMaxUs  = 600_000_000
	histDigits = 3
)

// NewHistogram returns an empty latency histogram with the bounds every
// histogram of the bench suite uses, so they merge without loss.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinUs, histMaxUs, histDigits)
}

// recordUs records d nanoseconds as microseconds, clamped into range so an
// outlier is kept (at the bound) rather than dropped.
func recordUs(h *hdrhistogram.Histogram, ns int64) {
	us := ns / 1000
	if us < histMinUs {
		us = histMinUs
	} else if us > histMaxUs {
		us = histMaxUs
	}
	_ = h.RecordValue(us)
}

// loopStats are one loop's aggregates, written by the loop under its mutex.
type loopStats struct {
	dials, opened, failed, closed      int64
	framesIn, events, errFrames, other int64
	pings, pongs, bytesIn              int64
	errors                             map[string]int64
	closeCodes                         map[uint16]int64
	handshake, eventLatency            *hdrhistogram.Histogram
}

func newLoopStats() loopStats {
	return loopStats{
		errors:       make(map[string]int64),
		closeCodes:   make(map[uint16]int64),
		handshake:    NewHistogram(),
		eventLatency: NewHistogram(),
	}
}

// addTo merges s into out.
func (s *loopStats) addTo(out *Stats) {
	out.Dials += s.dials
	out.Opened += s.opened
	out.Failed += s.failed
	out.Closed += s.closed
	out.FramesIn += s.framesIn
	out.Events += s.events
	out.ErrorFrames += s.errFrames
	out.OtherFrames += s.other
	out.Pings += s.pings
	out.PongsSent += s.pongs
	out.BytesIn += s.bytesIn
	for k, v := range s.errors {
		out.Errors[k] += v
	}
	for k, v := range s.closeCodes {
		out.CloseCodes[k] += v
	}
	out.Handshake.Merge(s.handshake)
	out.EventLatency.Merge(s.eventLatency)
}

// Clone returns a deep copy of s.
func (s *Stats) Clone() Stats {
	c := *s
	c.Errors = maps.Clone(s.Errors)
	c.CloseCodes = maps.Clone(s.CloseCodes)
	if s.Handshake != nil {
		c.Handshake = s.Handshake.Clone()
	}
	if s.EventLatency != nil {
		c.EventLatency = s.EventLatency.Clone()
	}
	return c
}

// ErrorTotal is the sum of Errors.
func (s *Stats) ErrorTotal() int64 {
	var n int64
	for _, v := range s.Errors {
		n += v
	}
	return n
}
