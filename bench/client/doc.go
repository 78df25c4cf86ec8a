// Package client is the bench suite's WebSocket client engine: it holds tens
// of thousands of json.v1 sockets per process on a few epoll loops, with no
// goroutine per socket, so the load generator stays cheaper than the server
// it measures.
//
// Each loop owns an epoll instance, a slab of small per-socket structs and
// one read buffer shared by all its sockets. A socket goes
// connecting → upgrading (request sent, 101 being parsed) → waiting for
// {"type":"ready"} → open → closing. Connects are non-blocking and bound to
// an explicit 127.0.0.x source address with IP_BIND_ADDRESS_NO_PORT, so the
// ephemeral port is picked per 4-tuple at connect time and one process can
// hold more sockets than one source address has ports.
//
// Callers drive the engine with Dial and Close (safe for concurrent use; they
// only queue a command for the owning loop) and read aggregates with
// Snapshot; a Handler, when set, sees every open, event and close on the
// loop goroutine.
package client
