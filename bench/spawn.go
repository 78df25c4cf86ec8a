package bench

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"

	"github.com/dws-gateway/dws/internal/safego"
)

// WorkerProc is a running worker as the parent sees it.
type WorkerProc struct {
	// In takes the config line and commands; closing it tells the
	// worker to stop.
	In io.WriteCloser
	// Out yields the worker's JSON lines.
	Out io.Reader
	// Wait waits for the worker to end.
	Wait func() error
	// Kill ends the worker at once.
	Kill func()
}

// Spawner starts workers.
type Spawner interface {
	Spawn(ctx context.Context, index int) (*WorkerProc, error)
}

// ExecSpawner re-executes a binary (normally the running dws-bench, with the
// hidden "worker" subcommand) once per worker, so each worker has its own
// file limit, heap and GC, and its own CPU figure.
type ExecSpawner struct {
	// Path is the binary; default os.Executable().
	Path string
	// Args are its arguments; default ["worker"].
	Args []string
	// Stderr receives the workers' logs; default os.Stderr.
	Stderr io.Writer
}

// Spawn implements Spawner.
func (s ExecSpawner) Spawn(ctx context.Context, _ int) (*WorkerProc, error) {
	path := s.Path
	if path == "" {
		p, err := os.Executable()
		if err != nil {
			return nil, err
		}
		path = p
	}
	args := s.Args
	if args == nil {
		args = []string{"worker"}
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stderr = s.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &WorkerProc{
		In: in, Out: out, Wait: cmd.Wait,
		Kill: func() { _ = cmd.Process.Kill() },
	}, nil
}

// InProcessSpawner runs each worker as goroutines of this process over
// pipes: the same protocol and code, for tests. CPU figures are then
// process-wide.
type InProcessSpawner struct{}

// Spawn implements Spawner.
func (InProcessSpawner) Spawn(ctx context.Context, _ int) (*WorkerProc, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	safego.Go(ctx, "bench.worker.inprocess", func(ctx context.Context) {
		err := RunWorker(ctx, inR, outW)
		inR.CloseWithError(errors.New("worker ended"))
		outW.Close()
		done <- err
	})
	return &WorkerProc{
		In: inW, Out: outR,
		Wait: func() error { defer cancel(); return <-done },
		Kill: cancel,
	}, nil
}
