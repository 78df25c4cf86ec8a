package bench

import (
	"time"

	"golang.org/x/sys/unix"
)

// selfCPU returns the CPU seconds (user + system) this process has used.
// In-process workers (tests) share one process, so theirs are process-wide.
func selfCPU() float64 {
	u, s := selfCPUSplit()
	return u + s
}

// selfCPUSplit returns user and system CPU seconds apart: on loopback most
// of a handshake's cost is kernel TCP work, some of it done on the server's
// behalf in the client's context, and the split shows it.
func selfCPUSplit() (user, sys float64) {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds()
}

// raiseFileLimit lifts the soft open-file limit to the hard one (this
// machine: 20 000) and returns the new soft limit. Each socket is a file.
func raiseFileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}
