package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/{pid}/stat times: 100 on every
// Linux architecture Go supports (the kernel fixes it for userspace ABI).
const clockTicks = 100

// ParseVmRSS returns the VmRSS line of a /proc/{pid}/status text, in bytes.
func ParseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want \"<n> kB\"", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", bytes.TrimSpace(line), err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS line (kernel thread or exited process?)")
}

// ReadRSS returns the resident set size of pid in bytes.
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return ParseVmRSS(b)
}

// ParseProcStatCPU returns utime+stime, in seconds, from a /proc/{pid}/stat
// line. The command name (field 2) may hold spaces and parentheses, so
// fields are counted after its closing parenthesis.
func ParseProcStatCPU(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := bytes.Fields(stat[i+1:])
	// After ")": state is field 3, utime field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("stat: too few fields")
	}
	u, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	s, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("stat: bad utime/stime")
	}
	return float64(u+s) / clockTicks, nil
}

// ReadProcCPU returns the CPU seconds pid has used.
func ReadProcCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return ParseProcStatCPU(b)
}

// MachineCPU is the aggregate "cpu" line of /proc/stat, in clock ticks.
type MachineCPU struct {
	Total, Idle uint64
}

// ParseMachineCPU reads the first line of a /proc/stat text. Idle counts
// idle and iowait.
func ParseMachineCPU(stat []byte) (MachineCPU, error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 5 || string(f[0]) != "cpu" {
		return MachineCPU{}, errors.New("/proc/stat: no aggregate cpu line")
	}
	var m MachineCPU
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
		// guest and guest_nice (fields 9, 10) are already in user/nice.
		if i >= 8 {
			break
		}
		m.Total += n
		if i == 3 || i == 4 {
			m.Idle += n
		}
	}
	return m, nil
}

// ReadMachineCPU reads /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	return ParseMachineCPU(b)
}

// IdleShare returns the idle fraction of the machine between a and b.
func IdleShare(a, b MachineCPU) float64 {
	if b.Total <= a.Total {
		return 0
	}
	return float64(b.Idle-a.Idle) / float64(b.Total-a.Total)
}

// ParseListenInodes returns the socket inodes listening on port in a
// /proc/net/tcp or tcp6 table. gnet listens with SO_REUSEPORT, one socket
// per loop, so there may be several.
func ParseListenInodes(table []byte, port uint16) []uint64 {
	var out []uint64
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != "0A" || !strings.HasSuffix(f[1], want) {
			continue
		}
		if ino, err := strconv.ParseUint(f[9], 10, 64); err == nil && ino != 0 {
			out = append(out, ino)
		}
	}
	return out
}

// FindListenerPID returns the pid of the process holding a socket listening
// on TCP port: the listening inodes from /proc/net/tcp{,6}, then the process
// whose /proc/{pid}/fd links to one of them. It needs permission to read the
// other process's fd table (same user or root).
func FindListenerPID(port uint16) (int, error) {
	inodes := map[string]bool{}
	for _, t := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, ino := range ParseListenInodes(b, port) {
			inodes[fmt.Sprintf("socket:[%d]", ino)] = true
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no socket listening on port %d", port)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		fds, err := os.ReadDir(p + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(p + "/fd/" + fd.Name()); err == nil && inodes[link] {
				return strconv.Atoi(filepath.Base(p))
			}
		}
	}
	return 0, fmt.Errorf("port %d is listening but no readable /proc/*/fd holds it (run as the server's user or pass --server-pid)", port)
}
