package config

import (
	"net"
	"os"
)

// EnvPodIP is the env variable (usually set by the Kubernetes downward API)
// holding the address other pods reach this one at.
const EnvPodIP = "POD_IP"

// Finalize fills values derived from others and from the environment
// (KEY=VALUE pairs; nil = os.Environ()). Load calls it; call it yourself
// only on a Config built by hand.
func (c *Config) Finalize(envList []string) {
	if envList == nil {
		envList = os.Environ()
	}
	if c.Server.PodID == "" {
		podIP, _ := lookupEnv(envList, EnvPodIP)
		c.Server.PodID = derivePodID(c.Server.GRPCAddr, podIP)
	}
}

// PodIDOrDefault returns server.pod_id, or when it is empty the address
// Finalize would derive from the process env.
func (c *Config) PodIDOrDefault() string {
	if c.Server.PodID != "" {
		return c.Server.PodID
	}
	return derivePodID(c.Server.GRPCAddr, os.Getenv(EnvPodIP))
}

// derivePodID is POD_IP + the gRPC port (SPEC §1). Without POD_IP a listener
// bound to one specific host is reachable at that host; a wildcard listener
// falls back to 127.0.0.1, which is right for the single-node default.
// It returns "" when grpc_addr has no port; Validate reports grpc_addr.
func derivePodID(grpcAddr, podIP string) string {
	host, port, err := net.SplitHostPort(grpcAddr)
	if err != nil || port == "" {
		return ""
	}
	switch {
	case podIP != "":
		host = podIP
	case host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified():
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
