package bench

import (
	"net"
	"os"
	"testing"
)

const sampleStatus = `Name:	dws
Umask:	0022
State:	S (sleeping)
Tgid:	4242
VmPeak:	 1303460 kB
VmSize:	 1303460 kB
VmHWM:	   61232 kB
VmRSS:	   48920 kB
RssAnon:	   31000 kB
Threads:	9
`

func TestParseVmRSS(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"status of a running process", sampleStatus, 48920 << 10, false},
		{"kernel thread has no VmRSS", "Name:\tkthreadd\nState:\tS\n", 0, true},
		{"unexpected unit", "VmRSS:\t12 MB\n", 0, true},
		{"not a number", "VmRSS:\tlots kB\n", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVmRSS([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseVmRSS = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestReadRSS_OwnProcessIsResident(t *testing.T) {
	rss, err := ReadRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("ReadRSS(self) = %d, %v; want ≥ 1 MiB", rss, err)
	}
}

func TestParseProcStatCPU_CommandNameWithSpacesAndParens(t *testing.T) {
	// utime 250 and stime 50 ticks → 3 s.
	stat := "4242 (dws (worker) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0\n"
	got, err := ParseProcStatCPU([]byte(stat))
	if err != nil || got != 3 {
		t.Errorf("ParseProcStatCPU = %v, %v; want 3", got, err)
	}
	if _, err := ParseProcStatCPU([]byte("4242 (x) S 1")); err == nil {
		t.Error("short stat line parsed, want an error")
	}
}

func TestParseMachineCPU_IdleIncludesIOWait(t *testing.T) {
	stat := "cpu  100 5 50 800 40 0 5 0 7 0\ncpu0 50 2 25 400 20 0 2 0 0 0\n"
	m, err := ParseMachineCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if m.Total != 1000 || m.Idle != 840 {
		t.Errorf("got %+v, want total 1000 (guest excluded), idle 840", m)
	}
	later := MachineCPU{Total: 1200, Idle: 890}
	if got := IdleShare(m, later); got != 0.25 {
		t.Errorf("IdleShare = %v, want 0.25", got)
	}
}

func TestParseListenInodes_OnlyListeningSocketsOfThePort(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0200007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1
   3: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 100 0 0 10 0
`
	got := ParseListenInodes([]byte(table), 8080)
	if len(got) != 2 || got[0] != 111 || got[1] != 222 {
		t.Errorf("ParseListenInodes = %v, want [111 222] (gnet's SO_REUSEPORT listeners, not the established socket)", got)
	}
}

func TestFindListenerPID_FindsThisProcess(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pid, err := FindListenerPID(uint16(ln.Addr().(*net.TCPAddr).Port))
	if err != nil || pid != os.Getpid() {
		t.Errorf("FindListenerPID = %d, %v; want %d", pid, err, os.Getpid())
	}
}
