package config

import (
	"fmt"
	"net"
	"os"
)

// security applies the rules that keep a pod closed to strangers (SPEC §3,
// §5): outside dev mode the upgrade API key and the fleet's gRPC token are
// mandatory and the issuer key is not one a browser holds; dev mode runs
// with made-up keys, so it stays on 127.0.0.1 and off shared Redis. Every
// message names the key and never its value.
func (v *validator) security(c *Config) {
	a := c.Auth
	dev := c.Auth.Dev || c.NeedsDevKeys()
	if dev {
		if len(c.Redis.Addrs) > 0 {
			// Each pod would make up its own token keys: a token minted by
			// one pod would be refused by the next.
			v.add("redis.addrs", "dev mode (no auth.token_aes_key) cannot share Redis with other pods: set auth.token_aes_key and auth.admin_token_aes_key, or leave redis.addrs empty")
		}
		if c.Auth.Dev {
			for _, l := range []struct{ key, addr string }{
				{"server.ws_addr", c.Server.WSAddr},
				{"server.ops_addr", c.Server.OpsAddr},
				{"server.grpc_addr", c.Server.GRPCAddr},
			} {
				if host, _, err := net.SplitHostPort(l.addr); err == nil && !isLoopbackHost(host) {
					v.add(l.key, "dev mode listens on 127.0.0.1 only (its keys are made up), got host %q", host)
				}
			}
		}
	} else {
		if a.APIKey == "" && !a.AllowNoAPIKey {
			v.add("auth.api_key", "required outside dev mode (browsers present it at the upgrade); set it, or set auth.allow_no_api_key: true to check upgrades by token only")
		}
		if c.GRPC.AuthToken == "" {
			v.add("grpc.auth_token", "required outside dev mode: without it anyone who reaches server.grpc_addr can push events into any socket")
		}
	}
	if a.IssuerAPIKey != "" {
		// The general and admin keys travel in browser URLs; a browser user
		// holding the issuer key could mint tokens for anyone.
		if a.IssuerAPIKey == a.APIKey {
			v.add("auth.issuer_api_key", "must differ from auth.api_key (that key travels in browser URLs)")
		}
		if a.IssuerAPIKey == a.AdminAPIKey {
			v.add("auth.issuer_api_key", "must differ from auth.admin_api_key (that key travels in browser URLs)")
		}
	}

	g := c.GRPC
	switch {
	case (g.TLSCertFile == "") != (g.TLSKeyFile == ""):
		v.add("grpc.tls_cert_file", "grpc.tls_cert_file and grpc.tls_key_file go together: set both or neither")
	case g.TLSCAFile != "" && g.TLSCertFile == "":
		v.add("grpc.tls_ca_file", "needs grpc.tls_cert_file and grpc.tls_key_file (mutual TLS presents this pod's certificate)")
	}
	v.readable("grpc.tls_cert_file", g.TLSCertFile)
	v.readable("grpc.tls_key_file", g.TLSKeyFile)
	v.readable("grpc.tls_ca_file", g.TLSCAFile)
}

// readable reports a configured file that cannot be opened, so `dws config
// check` finds a wrong path before a rollout does.
func (v *validator) readable(key, path string) {
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		v.add(key, "cannot read %s", fmt.Sprint(err))
		return
	}
	_ = f.Close()
}
