package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// floorEnv, set to "1", makes the bench's test binary run the floor server
// (TestMain), as "dws-bench floor-server" does: tests then need no second
// build.
const floorEnv = "DWS_BENCH_FLOOR_SERVER"

// FloorPodOptions says how to start the floor server process.
type FloorPodOptions struct {
	// Command is the program and leading arguments; the listeners' flags
	// are appended. Default: this executable with "floor-server".
	Command []string
	// Env is added to the process's environment.
	Env []string
	// Loops is the floor's epoll loops; 0 = one per CPU.
	Loops int
	// LogDir receives floor.log; default the temp dir.
	LogDir string
}

// StartFloorPod starts the floor server (RunFloorProcess) on free loopback
// ports with its own embedded NATS, as StartPod starts dws, and waits for
// GET /ready. The result is a Pod: the scenarios watch, publish to and stop
// it as they do a dws pod.
func StartFloorPod(ctx context.Context, o FloorPodOptions) (*Pod, error) {
	if _, err := raiseFileLimit(); err != nil {
		return nil, fmt.Errorf("floor: raise file limit: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	cmd := o.Command
	if len(cmd) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd = []string{exe, "floor-server"}
	}
	p := &Pod{
		Name:    "floor",
		WS:      netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(ports[0])),
		Ops:     "127.0.0.1:" + strconv.Itoa(ports[1]),
		NATSURL: "nats://127.0.0.1:" + strconv.Itoa(ports[2]),
		done:    make(chan error, 1),
	}
	args := append(append([]string(nil), cmd[1:]...),
		"--ws-addr", p.WS.String(), "--ops-addr", p.Ops, "--nats-port", strconv.Itoa(ports[2]),
		"--loops", strconv.Itoa(o.Loops))
	if err := p.start(ctx, cmd[0], args, o.Env, o.LogDir, 20*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}
