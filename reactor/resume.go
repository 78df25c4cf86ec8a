package reactor

import (
	"context"
	"sync"
	"time"

	"github.com/dws-gateway/dws/codec"
	"github.com/dws-gateway/dws/internal/logx"
	"github.com/dws-gateway/dws/internal/safego"
	"github.com/dws-gateway/dws/session"
)

// The resume hand-over (SPEC §5a, DESIGN in docs/fleet.md "Resume"):
//
//  1. The socket joins its routes before the replay starts, so every event
//     published after the replay's snapshot of the stream reaches it live.
//  2. While the replay runs, live frames for the socket are held in
//     replayState (by reference, within the socket's ring caps), not
//     written.
//  3. The replay writes the missed events in seq order through the same
//     per-subscription seq rule (admit), paced by the socket's ring.
//  4. Then the held frames go through admit too: those the replay already
//     wrote are dropped as duplicates, the rest follow in order. No gap,
//     no duplicate.

// replayState is a socket's hold-back while its replay runs. On loop.
type replayState struct {
	held      []heldFrame
	heldBytes int
}

// heldFrame is a live frame waiting for the replay to finish.
type heldFrame struct {
	kind  session.RouteKind
	pair  uint64
	seq   uint64
	frame []byte
	fwd   bool
}

// hold keeps a live frame for a replaying socket. Held frames count
// against the ring's caps; past them the frame is dropped as for a slow
// consumer. On loop.
func (l *loop) hold(c *conn, t *task, pair uint64, lim *Limits) bool {
	r := c.ident.replay
	if len(r.held)+len(c.ring) >= lim.OutboundRingMessages ||
		r.heldBytes+c.ringBytes+c.gc.OutboundBuffered()+len(t.frame) > lim.OutboundRingBytes {
		l.srv.mx.dropSlow.Inc()
		l.overflow(c)
		return false
	}
	r.held = append(r.held, heldFrame{kind: t.route.Kind, pair: pair, seq: t.meta.Seq, frame: t.frame, fwd: t.meta.Forwarded})
	r.heldBytes += len(t.frame)
	return true
}

// parseResume reads the resume parameters of a handshake (SPEC §5a):
// since (a non-negative integer; it turns resume on), epoch (the one the
// client had since in) and chat_id (user sockets: a chat selected from
// the start). A bad value is a 400 BadRequest.
func parseResume(query func(string) string, hs *handshakeReq) *codec.Error {
	if v := query("since"); v != "" {
		since, e := codec.ParseSince(v)
		if e != nil {
			return e
		}
		hs.resume, hs.since = true, since
	}
	if v := query("epoch"); v != "" {
		if len(v) > maxIDLen || !validUserID(v) {
			return codec.NewError(codec.CodeBadRequest, "invalid epoch")
		}
		hs.epoch = v
	}
	if v := query("chat_id"); v != "" {
		if hs.kind == session.KindAdmin {
			return codec.NewError(codec.CodeBadRequest, "chat_id is for user sockets")
		}
		if e := codec.CheckChatID(v); e != nil {
			return e
		}
		hs.chat = v
	}
	return nil
}

// replayRequest is what socket c missed since seq since. On loop.
func replayRequest(c *conn, since uint64, epoch string) ReplayRequest {
	it := c.ident
	if c.kind == session.KindAdmin {
		return ReplayRequest{Admin: true, Company: it.subCompany, Agent: it.subAgent, Since: since, Epoch: epoch}
	}
	return ReplayRequest{Company: it.company, Agent: it.agent, Chat: it.chat, Since: since, Epoch: epoch}
}

// resumeJob is one socket waiting for its replay.
type resumeJob struct {
	c   *conn
	req ReplayRequest
}

// resumer runs replays on a fixed number of goroutines: a reconnect storm
// queues here (a few words per socket) instead of starting a goroutine,
// and a buffer, per socket.
type resumer struct {
	s      *Server
	ctx    context.Context
	cancel context.CancelFunc
	queue  *fifo[resumeJob]
}

func newResumer(s *Server, workers int) *resumer {
	ctx, cancel := context.WithCancel(context.Background())
	r := &resumer{s: s, ctx: ctx, cancel: cancel, queue: newFIFO[resumeJob]()}
	for range max(workers, 1) {
		safego.Go(ctx, "reactor.resume", r.run)
	}
	return r
}

func (r *resumer) submit(j resumeJob) {
	// A storm waits here (one replay per worker, resume.max_concurrent),
	// so this queue is what dws_resume_waiting must show.
	if _, ok := r.queue.push(j, 0); ok {
		r.s.m.ResumeWaiting.Inc()
	}
}

func (r *resumer) stop() {
	r.s.m.ResumeWaiting.Sub(float64(r.queue.close()))
	r.cancel()
}

func (r *resumer) run(ctx context.Context) {
	for {
		j, ok := r.queue.pop()
		if !ok {
			return
		}
		r.s.m.ResumeWaiting.Dec()
		r.s.replay(ctx, j)
	}
}

// replayItem is what the loop needs of one replayed event.
type replayItem struct {
	frame     []byte
	seq, pair uint64
	kind      session.RouteKind
}

// itemsPool keeps the replays' item slices: grown one append at a time
// they cost ~6 KB of garbage per replay (77 MB in a 15 000-socket storm,
// the largest share of its allocations), and the GC cycles a storm
// triggers take a core from the loops.
var itemsPool = sync.Pool{New: func() any {
	s := make([]replayItem, 0, 64)
	return &s
}}

// replayPace is how often a replay whose socket's ring is over half full
// looks again: the replay waits for the client instead of growing memory.
const replayPace = 5 * time.Millisecond

// replay runs one socket's replay, then hands it over to live delivery.
// Off the loops.
func (s *Server) replay(ctx context.Context, j resumeJob) {
	c := j.c
	// items is what the loop needs of a batch, copied out of it so the
	// Replayer may reuse its batch once emit returns. It is reused for the
	// next batch: an emit that returns true has seen its loop work done,
	// and after one that returns false no other comes.
	ip := itemsPool.Get().(*[]replayItem)
	items := (*ip)[:0]
	emit := func(batch []ReplayEvent) bool {
		items = items[:0]
		for i := range batch {
			ev := &batch[i]
			it := replayItem{frame: ev.Frame, seq: ev.Seq, kind: ev.Route.Kind}
			if it.frame == nil {
				it.frame = codec.EventFrameSeq(ev.Seq, ev.Payload)
			}
			if ev.Route.Kind == session.RouteAdmin {
				it.pair = pairHash(ev.Route.Company, ev.Route.Agent)
			}
			items = append(items, it)
		}
		open, full := s.onLoop(ctx, c, func() (bool, bool) {
			if c.state != stOpen || c.ident.replay == nil {
				return false, false
			}
			lim := s.limits()
			c.lp.reserveRing(c, len(items))
			for i := range items {
				it := &items[i]
				if !c.admit(it.kind, it.pair, it.seq) {
					s.mx.dropDup.Inc()
					continue
				}
				if c.lp.push(c, it.frame, lim) {
					s.mx.replayDeliver.Inc()
				}
			}
			c.lp.releaseEmptyRing(c)
			return true, ringHalfFull(c, lim)
		})
		for open && full {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(replayPace):
			}
			open, full = s.onLoop(ctx, c, func() (bool, bool) {
				if c.state != stOpen || c.ident.replay == nil {
					return false, false
				}
				return true, ringHalfFull(c, s.limits())
			})
		}
		return open
	}
	resync, err := s.opts.Replayer.Replay(ctx, j.req, emit)
	if ctx.Err() == nil {
		// Every onLoop has returned its answer, so no loop task holds
		// items any more (after a cancel one might).
		clear(items)
		*ip = items[:0]
		itemsPool.Put(ip)
	}
	if err != nil {
		logx.L().Warn("resume failed; the socket continues with live events", "err", err.Error())
	}
	// On the lane, behind the batches it ends.
	c.lp.postLane(laneReplay, func(ok bool) {
		if ok {
			s.endReplay(c, resync)
		}
	})
}

// ringHalfFull reports whether c's outbound budget is over half used: a
// replay then waits for the client to read. On loop.
func ringHalfFull(c *conn, lim *Limits) bool {
	return len(c.ring) > lim.OutboundRingMessages/2 ||
		c.ringBytes+c.gc.OutboundBuffered() > lim.OutboundRingBytes/2
}

// onLoop runs fn on c's loop's replay lane and waits for its answer; open
// is false when the loop is gone or ctx ended.
func (s *Server) onLoop(ctx context.Context, c *conn, fn func() (open, full bool)) (open, full bool) {
	type answer struct{ open, full bool }
	done := make(chan answer, 1)
	if !c.lp.postLane(laneReplay, func(ok bool) {
		a := answer{}
		defer func() { done <- a }() // even if fn panics
		if ok {
			a.open, a.full = fn()
		}
	}) {
		return false, false
	}
	select {
	case a := <-done:
		return a.open, a.full
	case <-ctx.Done():
		return false, false
	}
}

// endReplay hands a socket over to live delivery: the resync frame when
// resume was impossible, then the frames held meanwhile, through the seq
// rule. On loop.
func (s *Server) endReplay(c *conn, resync string) {
	r := c.ident.replay
	c.ident.replay, c.replaying = nil, false
	if r == nil || c.state != stOpen {
		return
	}
	lim := s.limits()
	if resync != "" {
		c.lp.pushControl(c, codec.ResyncFrame(resync), lim)
	}
	n, fwd := 0, 0
	for i := range r.held {
		h := &r.held[i]
		if !c.admit(h.kind, h.pair, h.seq) {
			s.mx.dropDup.Inc()
			continue
		}
		if c.lp.push(c, h.frame, lim) {
			if h.fwd {
				fwd++
			} else {
				n++
			}
		}
		h.frame = nil
	}
	s.mx.localDeliver.Add(float64(n))
	s.mx.fwdDeliver.Add(float64(fwd))
}
