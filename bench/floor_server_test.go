package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/dws-gateway/dws/codec"
)

// floorDial upgrades one socket to the floor the way the bench's clients
// upgrade to dws, and returns it with ready read.
func floorDial(t *testing.T, s *FloorServer, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	req := "GET " + path + "?user=u1&token=anything&x-api-key=whatever HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: json.v1\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read 101: %v", err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != codec.AcceptKey(key) || resp.Header.Get("Sec-WebSocket-Protocol") != "json.v1" {
		t.Fatalf("response %d %v: want 101 with the accept key and json.v1", resp.StatusCode, resp.Header)
	}
	if op, p := readServerFrame(t, br); op != ws.OpText || string(p) != `{"type":"ready"}` {
		t.Fatalf("first frame %v %q: want ready", op, p)
	}
	return c, br
}

func readServerFrame(t *testing.T, br *bufio.Reader) (ws.OpCode, []byte) {
	t.Helper()
	h, err := ws.ReadHeader(br)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	return h.OpCode, p
}

func TestFloorServer_UpgradesWithoutChecks_WritesEachEventToItsGroup_EchoesClose(t *testing.T) {
	s, err := StartFloorServer(FloorOptions{Addr: "127.0.0.1:0", Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Two sockets of group c1/a1 (spread over both loops, as the kernel
	// pleases) and one of c2/a2.
	a, ar := floorDial(t, s, "/ws/c1/a1")
	_, br := floorDial(t, s, "/ws/c1/a1")
	other, or := floorDial(t, s, "/ws/c2/a2")
	deadline := time.Now().Add(5 * time.Second)
	for s.Sockets() != 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.Sockets() != 3 {
		t.Fatalf("%d sockets held, want 3", s.Sockets())
	}
	if s.Publish("websocket.c9.a9.chats", []byte(`{}`)) {
		t.Error("Publish to a subject no socket joined reported a delivery")
	}
	for i, payload := range []string{`{"n":1}`, `{"n":2}`} {
		if !s.Publish("websocket.c1.a1.chats", []byte(payload)) {
			t.Fatalf("Publish %d: no group", i)
		}
	}
	want := []string{`{"type":"event","payload":{"n":1}}`, `{"type":"event","payload":{"n":2}}`}
	for _, r := range []*bufio.Reader{ar, br} {
		for _, w := range want {
			if op, p := readServerFrame(t, r); op != ws.OpText || string(p) != w {
				t.Errorf("frame %v %q, want %q", op, p, w)
			}
		}
	}
	// The other group got nothing: its next frame is the answer to a ping.
	ping := codec.AppendClientFrame(nil, ws.OpPing, true, [4]byte{1, 2, 3, 4}, []byte("hi"))
	if _, err := other.Write(ping); err != nil {
		t.Fatal(err)
	}
	if op, p := readServerFrame(t, or); op != ws.OpPong || string(p) != "hi" {
		t.Errorf("after a ping: %v %q, want the pong (and no event of another group)", op, p)
	}
	// A close is echoed with its code, then the socket is gone.
	body := binary.BigEndian.AppendUint16(nil, 1000)
	if _, err := a.Write(codec.AppendClientFrame(nil, ws.OpClose, true, [4]byte{9, 8, 7, 6}, body)); err != nil {
		t.Fatal(err)
	}
	if op, p := readServerFrame(t, ar); op != ws.OpClose || !bytes.Equal(p, body) {
		t.Errorf("close echo %v %v, want close 1000", op, p)
	}
	for s.Sockets() != 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.Sockets() != 2 {
		t.Errorf("%d sockets after a close, want 2", s.Sockets())
	}
	// The group's remaining socket still gets events.
	s.Publish("websocket.c1.a1.chats", []byte(`3`))
	if _, p := readServerFrame(t, br); string(p) != `{"type":"event","payload":3}` {
		t.Errorf("after the close: %q", p)
	}
}

func TestFloorServer_RefusesARequestOutsideTheWSPath(t *testing.T) {
	s, err := StartFloorServer(FloorOptions{Addr: "127.0.0.1:0", Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.Dial("tcp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "GET /elsewhere HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: k\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400 ") {
		t.Errorf("answer %q: want 400 and a close", b)
	}
}
