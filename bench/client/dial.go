package client

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// openSocket starts a non-blocking connect from src (unspecified = let the
// kernel choose) to dst and returns the socket, or the error kind; rcvbuf > 0
// sets SO_RCVBUF (before connect, so the window scale matches it). The
// sockaddrs are the caller's scratch: x/sys writes its raw form into them,
// so each loop passes its own.
func openSocket(src netip.Addr, srcSa, dst *unix.SockaddrInet4, rcvbuf int) (int, string) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, connectKind(err)
	}
	// Pongs and close frames are a few bytes each and answer the server:
	// they must not wait for Nagle.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if rcvbuf > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if src.IsValid() && !src.IsUnspecified() {
		// Without IP_BIND_ADDRESS_NO_PORT, bind(port 0) reserves a port for
		// the source address alone, capping it at the ~28k ephemeral ports
		// whatever the destination; with it the port is chosen at connect
		// time per 4-tuple (Linux ≥ 4.2).
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		srcSa.Addr = src.As4()
		if err := unix.Bind(fd, srcSa); err != nil {
			unix.Close(fd)
			return -1, connectKind(err)
		}
	}
	if err := unix.Connect(fd, dst); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return -1, connectKind(err)
	}
	return fd, ""
}

// connectKind maps a socket, bind or connect errno to its error kind.
func connectKind(err error) string {
	switch {
	case errors.Is(err, unix.ECONNREFUSED):
		return ErrConnectRefused
	case errors.Is(err, unix.ETIMEDOUT):
		return ErrConnectTimeout
	case errors.Is(err, unix.EADDRNOTAVAIL), errors.Is(err, unix.EADDRINUSE):
		return ErrNoSourcePort
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		return ErrTooManyFiles
	case errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.EPIPE):
		return ErrReset
	}
	return ErrConnect
}

// readKind maps a read or write errno on an established socket.
func readKind(err error) string {
	if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
		return ErrReset
	}
	return ErrWrite
}
