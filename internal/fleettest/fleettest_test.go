package fleettest

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

func TestCluster_ThreeMastersServeEverySlot(t *testing.T) {
	t.Parallel()
	c := StartCluster(t)
	if len(c.Addrs) != 3 {
		t.Fatalf("addrs %v", c.Addrs)
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var masters atomic.Int32
	if err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		masters.Add(1)
		return m.Ping(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
	if masters.Load() != 3 {
		t.Fatalf("%d masters", masters.Load())
	}
	// Keys in different slots land on different masters; a multi-key
	// command across them is refused, as on any real cluster.
	for _, k := range []string{"a", "b", "c", "d"} {
		if err := rdb.Set(ctx, k, "1", time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	err := rdb.Do(ctx, "EVAL", "return redis.call('GET', KEYS[1])..redis.call('GET', KEYS[2])", 2, "a", "b").Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cross-slot script: %v, want CROSSSLOT", err)
	}
}

func TestSentinel_FailoverPromotesReplicaAndKeepsData(t *testing.T) {
	t.Parallel()
	s := StartSentinel(t)
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Do(ctx, "WAIT", 1, 2000).Err(); err != nil {
		t.Fatal(err)
	}
	old := s.Master()
	if old != s.ServerAddrs[0] {
		t.Fatalf("master %s, want %s", old, s.ServerAddrs[0])
	}
	now, err := s.Failover()
	if err != nil {
		t.Fatal(err)
	}
	if now != s.ServerAddrs[1] {
		t.Fatalf("new master %s, want the replica %s", now, s.ServerAddrs[1])
	}
	var v string
	if err := waitFor(10*time.Second, "client reads through the new master", func() bool {
		v, err = rdb.Get(ctx, "k").Result()
		return err == nil || errors.Is(err, redis.Nil)
	}); err != nil {
		t.Fatal(err, "last error:", err)
	}
	if v != "v" {
		t.Fatalf("after failover k = %q", v)
	}
}

// A 3-node JetStream cluster serves an R3 stream, and after its leader is
// killed another node leads it with every acknowledged message kept.
func TestJetStreamCluster_LeaderKilled_AnotherLeadsWithTheData(t *testing.T) {
	t.Parallel()
	c := StartJetStreamCluster(t)
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Right after the cluster forms, a peer may not be current yet: the
	// placement answers "no suitable peers" (10005) for a moment (failed
	// CI once), so the create is retried for a few seconds.
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3})
		if err == nil {
			break
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10005 || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for range 10 {
		if _, err := js.Publish(ctx, "s.x", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	old, err := c.StreamLeader("S")
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(old)
	var now int
	for now, err = c.StreamLeader("S"); err != nil || now == old; now, err = c.StreamLeader("S") {
		if ctx.Err() != nil {
			t.Fatalf("no new leader after the kill of %s: %v", c.Servers()[old], err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 10 {
		t.Fatalf("%d messages after the failover, want 10", n)
	}
}
