package codec

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

func TestAppendUpgradeResponse_Bytes(t *testing.T) {
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	tests := []struct {
		name     string
		protocol string
		want     string
	}{
		{
			name: "no protocol",
			want: "HTTP/1.1 101 Switching Protocols\r\n" +
				"Upgrade: websocket\r\n" +
				"Connection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" +
				"\r\n",
		},
		{
			name:     "json.v1",
			protocol: "json.v1",
			want: "HTTP/1.1 101 Switching Protocols\r\n" +
				"Upgrade: websocket\r\n" +
				"Connection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" +
				"Sec-WebSocket-Protocol: json.v1\r\n" +
				"\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AppendUpgradeResponse([]byte("x"), key, tt.protocol); string(got) != "x"+tt.want {
				t.Errorf(
					"got\n%q\nwant\n%q",
					got, "x"+tt.want)
			}
		})
	}
	dst := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { _ = AppendUpgradeResponse(dst[:0], key, "json.v1") }); n != 0 {
		t.Errorf("AppendUpgradeResponse: %v allocs", n)
	}
}

// readResponse parses b with net/http, the reference HTTP/1.1 reader.
func readResponse(t *testing.T, b []byte) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatalf(
			"http.ReadResponse: %v\n%s",
			err, b)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf(
			"body: %v",
			err)
	}
	return resp, body
}

func TestAppendHTTPError_Bytes(t *testing.T) {
	e := NewError(CodeUpgradeRequired, "unsupported Sec-WebSocket-Version")
	got := AppendHTTPError(nil, e, "Sec-WebSocket-Version: 13")
	body := `{"code":"UpgradeRequired","message":"unsupported Sec-WebSocket-Version"}`
	want := "HTTP/1.1 426 Upgrade Required\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: 72\r\n" +
		"Connection: close\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		"\r\n" + body
	if len(body) != 72 {
		t.Fatalf("test body is %d bytes", len(body))
	}
	if string(got) != want {
		t.Errorf(
			"got\n%q\nwant\n%q",
			got, want)
	}
}

func TestAppendHTTPError_EveryCode_ParsesAsHTTP(t *testing.T) {
	long := string(bytes.Repeat([]byte("é\"\n"), 200)) // spills the body buffer
	for code := range codeTable {
		e := NewError(code, "msg").WithDetails(long)
		b := AppendHTTPError([]byte("keep"), e, "Allow: GET", "X-Extra: 1")
		if !bytes.HasPrefix(b, []byte("keep")) {
			t.Fatalf("prefix lost")
		}
		resp, body := readResponse(t, b[4:])
		wantStatus := code.HTTPStatus()
		if wantStatus == 0 {
			wantStatus = 500
		}
		if resp.StatusCode != wantStatus || resp.Close != true ||
			resp.Header.Get("Content-Type") != "application/json" ||
			resp.Header.Get("Allow") != "GET" || resp.Header.Get("X-Extra") != "1" {
			t.Errorf(
				"%s: status %d, header %v",
				code, resp.StatusCode, resp.Header)
		}
		var got Error
		if err := json.Unmarshal(body, &got); err != nil || got != *e {
			t.Errorf(
				"%s: body %s (%v)",
				code, body, err)
		}
	}
}

func TestAppendHTTPErrorStatus_OverridesStatus(t *testing.T) {
	e := NewError(CodeInternalServerError, "draining")
	resp, _ := readResponse(t, AppendHTTPErrorStatus(nil, 503, e))
	if resp.StatusCode != 503 {
		t.Errorf("status %d", resp.StatusCode)
	}
}

func TestAppendHTTPResponse_Healthz(t *testing.T) {
	got := AppendHTTPResponse(nil, 200, "text/plain; charset=utf-8", []byte("ok\n"))
	want := "HTTP/1.1 200 OK\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: 3\r\n" +
		"Connection: close\r\n" +
		"\r\n" +
		"ok\n"
	if string(got) != want {
		t.Errorf(
			"got\n%q\nwant\n%q",
			got, want)
	}
	tests := []struct {
		status      int
		contentType string
		body        string
		wantStatus  int
	}{
		{status: 204, wantStatus: 204},
		{status: 503, contentType: "application/json", body: `{"status":"draining"}`, wantStatus: 503},
		{status: 0, wantStatus: 500},
		{status: 599, wantStatus: 599},
	}
	for _, tt := range tests {
		resp, body := readResponse(t, AppendHTTPResponse(nil, tt.status, tt.contentType, []byte(tt.body)))
		if resp.StatusCode != tt.wantStatus || string(body) != tt.body || !resp.Close ||
			resp.Header.Get("Content-Type") != tt.contentType {
			t.Errorf(
				"status %d: got %d %q %v",
				tt.status, resp.StatusCode, body, resp.Header)
		}
	}
}
