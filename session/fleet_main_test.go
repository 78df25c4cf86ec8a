package session

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dws-gateway/dws/internal/fleettest"
)

// testRedisEnv selects the Redis the shared-Redis tests run against:
// unset = the machine's Redis on 6379; "cluster" = a private 3-master Redis
// Cluster started for this run (internal/fleettest), so every store test
// also runs on a real cluster: DWS_TEST_REDIS=cluster go test ./session/
const testRedisEnv = "DWS_TEST_REDIS"

// sharedClusterAddrs are the seeds of that cluster, nil when the tests
// run against one node.
var sharedClusterAddrs []string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	switch mode := os.Getenv(testRedisEnv); mode {
	case "":
	case "cluster":
		dir, err := os.MkdirTemp("", "dws-cluster-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		c, err := fleettest.NewCluster(dir)
		if c != nil {
			defer c.Stop()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "redis cluster:", err)
			return 1
		}
		sharedClusterAddrs = c.Addrs
		fmt.Fprintln(os.Stderr, "store tests against a Redis Cluster at", strings.Join(c.Addrs, ","))
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want unset or cluster\n", testRedisEnv, mode)
		return 1
	}
	return m.Run()
}
