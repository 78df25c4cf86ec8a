// Package forwardpb is the generated gRPC code for pod-to-pod forwarding
// (forward.proto): the long-lived PushStream senders use, and unary Push
// kept for senders and receivers that predate it. Regenerate with
// `make proto` (installs the pinned protoc-gen-go / protoc-gen-go-grpc;
// needs protoc, Debian protobuf-compiler).
package forwardpb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative forward.proto
