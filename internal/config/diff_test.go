package config

import (
	"slices"
	"testing"
	"time"
)

func TestDiff_SecretHotAndRestartKeys(t *testing.T) {
	t.Parallel()
	old := validConfig()
	cur := validConfig()
	cur.Auth.TokenAESKey = "different"                           // secret, restart
	cur.Log.Level = "debug"                                      // hot
	cur.RateLimit.MessagesPerSecond = 50                         // hot
	cur.Server.GRPCAddr = ":6000"                                // restart
	cur.WebSocket.AllowedOrigins = []string{"https://a.example"} // hot list

	d := Diff(old, cur)
	want := Changes{
		{Key: "server.grpc_addr"},
		{Key: "auth.token_aes_key", Secret: true},
		{Key: "websocket.allowed_origins", Hot: true},
		{Key: "ratelimit.messages_per_second", Hot: true},
		{Key: "log.level", Hot: true},
	}
	if !slices.Equal(d, want) {
		t.Fatalf("Diff = %+v\nwant   %+v", d, want)
	}
	if got, w := d.RestartRequired(), []string{"server.grpc_addr", "auth.token_aes_key"}; !slices.Equal(got, w) {
		t.Errorf("RestartRequired = %v, want %v", got, w)
	}
	attrs := d.Describe()
	if len(attrs) != 2 || attrs[0].Key != "changed" || attrs[1].Key != "restart_required" {
		t.Fatalf("Describe = %v", attrs)
	}
	if got := attrs[0].Value.Any().([]string); !slices.Equal(got, d.Keys()) {
		t.Errorf("changed = %v, want %v", got, d.Keys())
	}
}

func TestDiff_Identical_NilAndEmptyListsEqual(t *testing.T) {
	t.Parallel()
	a, b := validConfig(), validConfig()
	a.Redis.Addrs, b.Redis.Addrs = nil, []string{}
	b.Auth.Dev = true // not a key
	if d := Diff(a, b); len(d) != 0 {
		t.Fatalf("Diff = %v, want none", d)
	}
	if d := Diff(a, b); d.Keys() == nil || d.RestartRequired() == nil {
		t.Error("empty lists must be [] in logs, not null")
	}
	b.Shutdown.Timeout = time.Minute
	if d := Diff(a, b); len(d) != 1 || d[0].Key != "shutdown.timeout" {
		t.Errorf("Diff = %v", d)
	}
}
