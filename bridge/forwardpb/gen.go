// Package forwardpb is the generated gRPC code for pod-to-pod Push
// (forward.proto). Regenerate with `go generate ./bridge/forwardpb` (needs
// protoc and protoc-gen-go / protoc-gen-go-grpc on PATH).
package forwardpb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative forward.proto
