package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dws-gateway/dws/internal/logx"
)

// On a JetStream cluster the partition stream's leader copies the source
// stream through an internal consumer that lives on the source stream's
// leader. When that node dies (kill -9, lost host) the consumer dies with
// it and nothing tells the copying side: nats-server notices only on its
// own stall check, every 10 s for a source silent for 10 s, so no event
// reaches any partition for 10 to 20 s after the kill, although the
// source's new leader takes events again 3 to 9 s after it (the issue 13
// test measured 14 to 15 s). The source watch notices the silence within
// a second of the source having a leader again and asks the partition
// stream's leader to step down: the new leader sets the source consumer up
// at once, from the position the stream stored, so nothing is copied twice
// or skipped (DESIGN "Where it runs at scale").

const (
	// sourceStallAfter is how long the source may be silent before the
	// watch acts: the source consumer heartbeats every second (nats-server
	// sourceHealthHB) even with no events, so three seconds is a stall, not
	// a slow node.
	sourceStallAfter = 3 * time.Second
	// sourceUnheardAfter is how long a leader that has not heard from the
	// source at all may stay so: setting the source consumer up takes it
	// a few hundred milliseconds, and one that asked while the source had
	// no leader waits 30 s for an answer that never comes.
	sourceUnheardAfter = time.Second
	// sourceWatchEvery paces the checks: one stream info a tick from one
	// pod of the fleet.
	sourceWatchEvery = 500 * time.Millisecond
	// sourceRestartMaxBackoff bounds the wait between restarts of a source
	// that stays silent after them (a source the stream cannot read at
	// all, say): each waits twice the previous one, from sourceStallAfter.
	sourceRestartMaxBackoff = time.Minute
)

// sourceWatch restarts the partition stream's copying of the source stream
// when it stalls. One pod of the fleet runs it at a time (active).
type sourceWatch struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	layout PartitionLayout
	// active reports whether this pod is the watcher now: the owner of
	// partition 0, so a fleet sends one step-down, not one per pod.
	active func() bool

	// restarts counts step-downs by result (stepped_down, refused); nil
	// in tests that only look at the timing.
	restarts *prometheus.CounterVec

	unheardSince time.Time // when a leader that had not heard from the source was first seen
	nextRestart  time.Time // no restart before
	backoff      time.Duration
}

func (w *sourceWatch) run(ctx context.Context) {
	t := time.NewTicker(sourceWatchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if w.active() {
				w.check(ctx, now)
			} else {
				w.unheardSince = time.Time{}
			}
		}
	}
}

// check looks at the partition stream's source once and restarts it when
// it stalled (silence) while the source stream has a leader. Errors are
// left to the next tick: without a partition stream leader there is
// nothing to step down (its election restarts the copying anyway), and
// without a source leader a new partition stream leader could not copy
// either — its failed attempt would only make the server back off.
func (w *sourceWatch) check(ctx context.Context, now time.Time) {
	opCtx, cancel := context.WithTimeout(ctx, 2*sourceWatchEvery)
	defer cancel()
	part, err := w.js.Stream(opCtx, w.layout.Stream())
	if err != nil {
		return
	}
	silent, stalled := w.silence(part.CachedInfo().Sources, now)
	if !w.due(stalled, now) {
		return
	}
	src, err := w.js.Stream(opCtx, w.layout.Source)
	if err != nil {
		return
	}
	if ci := src.CachedInfo().Cluster; ci == nil || ci.Leader == "" {
		return
	}
	w.restarted(now)
	if err := stepDown(opCtx, w.nc, w.layout.Stream()); err != nil {
		w.count("refused")
		logx.From(ctx).Warn("partition stream copy stalled; leader step-down refused", "stream", w.layout.Stream(),
			"silent", silent.String(), "err", err.Error())
		return
	}
	w.count("stepped_down")
	logx.From(ctx).Warn("partition stream copy stalled; its leader stepped down to restart it", "stream", w.layout.Stream(),
		"source", w.layout.Source, "silent", silent.String())
}

func (w *sourceWatch) count(result string) {
	if w.restarts != nil {
		w.restarts.WithLabelValues(result).Inc()
	}
}

// silence is how long the partition stream's leader has not heard from
// the source, and whether that is a stall: Active past sourceStallAfter,
// or, while the leader has not heard from the source at all (Active -1: a
// new leader setting its consumer up, or stuck asking), that state seen
// for sourceUnheardAfter.
func (w *sourceWatch) silence(sources []*jetstream.StreamSourceInfo, now time.Time) (time.Duration, bool) {
	for _, s := range sources {
		if s == nil || s.Name != w.layout.Source {
			continue
		}
		if s.Active >= 0 {
			w.unheardSince = time.Time{}
			return s.Active, s.Active >= sourceStallAfter
		}
		if w.unheardSince.IsZero() {
			w.unheardSince = now
		}
		unheard := now.Sub(w.unheardSince)
		return unheard, unheard >= sourceUnheardAfter
	}
	return 0, false // not reported: not a partition stream of this layout
}

// due reports whether a restart is due: the source stalled, and the
// backoff since the last restart over. A source heard again ends the
// backoff.
func (w *sourceWatch) due(stalled bool, now time.Time) bool {
	if !stalled {
		w.backoff, w.nextRestart = 0, time.Time{}
		return false
	}
	return !now.Before(w.nextRestart)
}

// restarted notes a restart asked for at now: while the source stays
// silent the next one waits twice as long as the last, from
// sourceStallAfter up to sourceRestartMaxBackoff.
func (w *sourceWatch) restarted(now time.Time) {
	w.backoff = min(max(2*w.backoff, sourceStallAfter), sourceRestartMaxBackoff)
	w.nextRestart = now.Add(w.backoff)
	w.unheardSince = time.Time{}
}

// stepDown asks stream's leader to hand the lead to another replica.
func stepDown(ctx context.Context, nc *nats.Conn, stream string) error {
	msg, err := nc.RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"STREAM.LEADER.STEPDOWN."+stream, nil)
	if err != nil {
		return err
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("step-down reply: %w", err)
	}
	if resp.Error != nil {
		return errors.New(resp.Error.Description)
	}
	if !resp.Success {
		return errors.New("step-down not done")
	}
	return nil
}
