// Package codec turns bytes into meaning and back for the dws gateway: the
// HTTP/1.1 upgrade request head (RFC 6455 §4, RFC 7230), WebSocket frame
// headers, masking and close payloads (RFC 6455 §5, §7), incremental UTF-8
// validation (RFC 6455 §8.1), the json.v1 envelopes and the one error shape
// of the service.
//
// codec does no I/O. Every decoder works on a byte slice that may hold only
// part of its input (the reactor parses straight from a non-blocking inbound
// buffer) and reports "need more bytes" instead of blocking. Every encoder
// appends to a caller-owned slice. The hot-path functions (DecodeHeader,
// AppendHeader, AppendFrame, Unmask, UTF8Validator.Write) do not allocate.
//
// Slices passed in are never retained; strings returned are copies, safe to
// keep after the input buffer is reused.
//
// All functions are safe for concurrent use; a UTF8Validator value is not.
package codec
