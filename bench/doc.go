// Package bench is the dws load and soak suite as a library: scenarios that
// drive the epoll client engine of bench/client from one or more worker
// processes, aggregate what the workers measured (HDR histograms, per-100 ms
// handshake timelines, error and close-code counts), watch the server from
// /proc, and write a JSON report and a Markdown summary.
//
// Scenario "connect" (RunConnect) ramps to N authenticated sockets, holds
// them, optionally churns them, and reports handshakes per second, handshake
// latency and the server's RSS growth per socket. The parent and its workers
// talk JSON lines over the workers' stdin and stdout (protocol.go), so a
// worker is the same code whether it is a re-executed process or, in tests,
// a goroutine.
package bench
