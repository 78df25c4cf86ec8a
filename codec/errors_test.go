package codec

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestErrorCode_Table_StatusAndCloseCode(t *testing.T) {
	tests := []struct {
		code   ErrorCode
		status int
		close  uint16
	}{
		{code: CodeInvalidAPIKey, status: 401, close: 4401},
		{code: CodeInvalidToken, status: 403, close: 4403},
		{code: CodeSessionConflict, status: 409, close: 4402},
		{code: CodeBadRequest, status: 400, close: 4400},
		{code: CodeRateLimitExceeded, status: 429, close: 4429},
		{code: CodeSlowConsumer, status: 0, close: 4408},
		{code: CodeSubscriptionFailure, status: 500, close: 1011},
		{code: CodeInternalServerError, status: 500, close: 1011},
		{code: CodeNotFound, status: 404, close: 4400},
		{code: CodeMethodNotAllowed, status: 405, close: 4400},
		{code: CodeForbidden, status: 403, close: 4403},
		{code: CodeHeaderTooLarge, status: 431, close: 4400},
		{code: CodeUpgradeRequired, status: 426, close: 4400},
		{code: CodeServiceUnavailable, status: 503, close: 1011},
		{code: ErrorCode("NoSuchCode"), status: 500, close: 1011},
	}
	if len(codeTable) != len(tests)-1 {
		t.Errorf("codeTable has %d rows, test covers %d", len(codeTable), len(tests)-1)
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			if got := tt.code.HTTPStatus(); got != tt.status {
				t.Errorf("HTTPStatus() = %d, want %d", got, tt.status)
			}
			if got := tt.code.CloseCode(); got != tt.close {
				t.Errorf("CloseCode() = %d, want %d", got, tt.close)
			}
			if got := NewError(tt.code, "m").HTTPStatus(); got != tt.status {
				t.Errorf("(*Error).HTTPStatus() = %d, want %d", got, tt.status)
			}
		})
	}
}

func TestError_Error_IncludesCodeMessageDetails(t *testing.T) {
	e := NewError(CodeBadRequest, "bad")
	if got, want := e.Error(), "BadRequest: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := e.WithDetails("why").Error(), "BadRequest: bad: why"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestError_WithDetails_ReturnsCopy(t *testing.T) {
	e := NewError(CodeInvalidToken, "expired")
	d := e.WithDetails("at 12:00")
	if e.Details != "" {
		t.Errorf("original changed: Details = %q", e.Details)
	}
	if d == e || d.Details != "at 12:00" || d.Code != e.Code || d.Message != e.Message {
		t.Errorf("WithDetails = %+v", d)
	}
}

func TestError_AppendJSON_Escaping(t *testing.T) {
	tests := []struct {
		name string
		err  Error
		want string
	}{
		{
			name: "details omitted when empty",
			err:  Error{Code: CodeBadRequest, Message: "invalid JSON"},
			want: `{"code":"BadRequest","message":"invalid JSON"}`,
		},
		{
			name: "details present",
			err:  Error{Code: CodeInvalidToken, Message: "m", Details: "d"},
			want: `{"code":"InvalidToken","message":"m","details":"d"}`,
		},
		{
			name: "quotes and backslash",
			err:  Error{Code: CodeBadRequest, Message: `say "hi" \ bye`},
			want: `{"code":"BadRequest","message":"say \"hi\" \\ bye"}`,
		},
		{
			name: "control characters",
			err:  Error{Code: CodeBadRequest, Message: "a\nb\rc\td\be\ff\x00g\x1fh\x7f"},
			want: `{"code":"BadRequest","message":"a\nb\rc\td\be\ff\u0000g\u001fh` + "\x7f" + `"}`,
		},
		{
			name: "non-ASCII passes through",
			err:  Error{Code: CodeBadRequest, Message: "héllo, 世界 🎉"},
			want: `{"code":"BadRequest","message":"héllo, 世界 🎉"}`,
		},
		{
			name: "invalid UTF-8 becomes U+FFFD",
			err:  Error{Code: CodeBadRequest, Message: "a\xffb\xc3"},
			want: `{"code":"BadRequest","message":"a\ufffdb\ufffd"}`,
		},
		{
			name: "line and paragraph separators escaped",
			err:  Error{Code: CodeBadRequest, Message: "a\u2028b\u2029c"},
			want: `{"code":"BadRequest","message":"a\u2028b\u2029c"}`,
		},
		{
			name: "HTML characters are not escaped",
			err:  Error{Code: CodeBadRequest, Message: "<a>&"},
			want: `{"code":"BadRequest","message":"<a>&"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.err.AppendJSON([]byte("prefix"))
			if string(got) != "prefix"+tt.want {
				t.Errorf("AppendJSON =\n%s\nwant\n%s", got, "prefix"+tt.want)
			}
			if want := stdJSON(t, &tt.err); string(got[len("prefix"):]) != want {
				t.Errorf("AppendJSON differs from encoding/json:\n%s\n%s", got[len("prefix"):], want)
			}
		})
	}
}

// stdJSON encodes v with encoding/json, HTML escaping off, as the reference.
func stdJSON(t testing.TB, v any) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf(
			"encoding/json: %v",
			err)
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "\x00\x1f\x7f", "é世🎉", "\xff\xc3", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := string(appendJSONString(nil, s))
		if want := stdJSON(t, s); got != want {
			t.Fatalf(
				"appendJSONString(%q) = %s, encoding/json = %s",
				s, got, want)
		}
	})
}
