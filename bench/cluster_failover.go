package bench

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// ClusterFailover is what a kill during the cluster run showed.
type ClusterFailover struct {
	// Pod is the name of the pod killed (SIGKILL: no drain, no lease
	// release; its partitions wait for their leases to expire).
	Pod string `json:"pod"`
	// KilledAfter is the kill's time after the measured window started.
	KilledAfter float64 `json:"killed_after_seconds"`
	// Sockets were held by the killed pod's workers: they closed with it
	// and are out of the loss accounting (Loss.Excluded counts them).
	Sockets int64 `json:"sockets"`
	// Seconds is the failover time: the longest any event published
	// within Window of the kill (before or after it) took to reach the
	// sockets after the kill, or after its publish when that was later.
	// A pod's partitions that nobody consumes hold their events back until
	// a survivor takes them over, so this is that takeover as the clients
	// see it.
	Seconds float64 `json:"seconds"`
	// Window is the span either side of the kill whose events count.
	Window float64 `json:"window_seconds"`
	// Found is false when no event of the window reached any socket.
	Found bool `json:"found"`
	// Error is why the kill failed, if it did.
	Error string `json:"error,omitempty"`
}

// killer SIGKILLs one pod once, after a delay, and remembers when.
type killer struct {
	pod   *Pod
	timer *time.Timer
	done  chan struct{}
	mu    sync.Mutex
	at    time.Time
	err   error
}

// scheduleKill kills pod after d.
func scheduleKill(pod *Pod, d time.Duration) *killer {
	k := &killer{pod: pod, done: make(chan struct{})}
	k.timer = time.AfterFunc(d, k.fire)
	return k
}

func (k *killer) fire() {
	defer close(k.done)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.at = time.Now()
	if k.pod == nil || k.pod.cmd == nil || k.pod.cmd.Process == nil {
		k.err = errors.New("no process to kill")
		return
	}
	k.err = k.pod.cmd.Process.Signal(syscall.SIGKILL)
}

// result waits up to wait for the kill and returns its time; ok is false
// when it did not happen (the run ended first) or failed.
func (k *killer) result(wait time.Duration) (time.Time, error) {
	select {
	case <-k.done:
	case <-time.After(wait):
		if k.timer.Stop() {
			return time.Time{}, errors.New("the run ended before the kill")
		}
		<-k.done
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return k.at, fmt.Errorf("kill %s: %w", k.pod.Name, k.err)
	}
	return k.at, nil
}

// failoverTime reads an arrival profile (buckets of step publish time since
// T0) around a kill at kill (since T0): over the events published in
// [kill-window, kill+window], the longest wait from max(kill, publish) to
// receipt. An event published before the kill and received before it
// waited 0. A bucket straddling the kill counts both ways (receipt after
// the kill, and latency), which overstates by less than one bucket at
// most. found is false when the window holds no event.
func failoverTime(p *ArrivalProfile, step, kill, window time.Duration) (wait time.Duration, found bool) {
	if p == nil || step <= 0 {
		return 0, false
	}
	killUs := kill.Microseconds()
	for i, last := range p.LastUs {
		if last <= 0 {
			continue
		}
		start, end := time.Duration(i)*step, time.Duration(i+1)*step
		if end <= kill-window || start > kill+window {
			continue
		}
		found = true
		var lat int64
		if i < len(p.MaxLatencyUs) {
			lat = p.MaxLatencyUs[i]
		}
		var w int64
		switch {
		case end <= kill:
			w = last - killUs
		case start >= kill:
			w = lat
		default:
			w = max(last-killUs, lat)
		}
		wait = max(wait, time.Duration(w)*time.Microsecond)
	}
	return wait, found
}
