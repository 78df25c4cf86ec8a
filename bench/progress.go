package bench

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// progressLine prints the live line of a long run: one line per second,
// rewritten in place on a terminal, appended otherwise (logs, CI).
type progressLine struct {
	last       time.Time
	lastOpened int64
	lastCPU    float64
	lastEvents int64
	tty, dirty bool
	checked    bool
}

func (p *progressLine) print(w io.Writer, now, t0 time.Time, phase string, target int, agg *Progress, rss int64) {
	if !p.checked {
		p.checked = true
		if f, ok := w.(*os.File); ok {
			_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
			p.tty = err == nil
		}
	}
	var rate, cores, evRate float64
	if !p.last.IsZero() {
		dt := now.Sub(p.last).Seconds()
		rate = float64(agg.Opened-p.lastOpened) / dt
		cores = (agg.CPUSeconds - p.lastCPU) / dt
		evRate = float64(agg.Events-p.lastEvents) / dt
	}
	p.last, p.lastOpened, p.lastCPU, p.lastEvents = now, agg.Opened, agg.CPUSeconds, agg.Events
	var elapsed time.Duration
	if !t0.IsZero() {
		elapsed = now.Sub(t0)
	}
	line := fmt.Sprintf("[%6.1fs] %-12s sockets %d/%d  hs/s %.0f  hs p99 %.1fms  errors %d  client cpu %.2f cores",
		elapsed.Seconds(), phase, agg.Connected, target, rate, float64(agg.HandshakeP99Us)/1000, agg.Errors, cores)
	if agg.Events > 0 {
		line += fmt.Sprintf("  msg/s %.0f  msg p99 %.1fms (cumulative)", evRate, float64(agg.EventP99Us)/1000)
	}
	if rss > 0 {
		line += fmt.Sprintf("  server rss %.1f MiB", float64(rss)/(1<<20))
	}
	if p.tty {
		fmt.Fprintf(w, "\r\033[K%s", line)
		p.dirty = true
	} else {
		fmt.Fprintln(w, line)
	}
}

// start sets the baseline of the first rates: no socket open at t0, and
// the workers' CPU so far (token minting) left out.
func (p *progressLine) start(t0 time.Time, cpu float64) {
	p.last, p.lastOpened, p.lastCPU = t0, 0, cpu
}

// finish ends a line rewritten in place.
func (p *progressLine) finish(w io.Writer) {
	if p.dirty {
		fmt.Fprintln(w)
	}
}
