package config

import "testing"

func TestFinalize_PodID_FromPodIPAndGRPCPort(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, grpcAddr, podID string
		env                   []string
		want                  string
	}{
		{"no POD_IP", ":50051", "", nil, "127.0.0.1:50051"},
		{"POD_IP", ":50051", "", []string{"POD_IP=10.0.0.7"}, "10.0.0.7:50051"},
		{"POD_IP v6", ":7000", "", []string{"POD_IP=fd00::7"}, "[fd00::7]:7000"},
		{"wildcard host", "0.0.0.0:7000", "", nil, "127.0.0.1:7000"},
		{"specific host", "10.9.9.9:7000", "", nil, "10.9.9.9:7000"},
		{"POD_IP beats specific host", "10.9.9.9:7000", "", []string{"POD_IP=10.0.0.7"}, "10.0.0.7:7000"},
		{"explicit pod_id kept", ":50051", "pod-a.svc:50051", []string{"POD_IP=10.0.0.7"}, "pod-a.svc:50051"},
		{"unparsable grpc addr", "nope", "", nil, ""},
	}
	for _, tc := range cases {
		c := Defaults()
		c.Server.GRPCAddr, c.Server.PodID = tc.grpcAddr, tc.podID
		env := tc.env
		if env == nil {
			env = []string{}
		}
		c.Finalize(env)
		if c.Server.PodID != tc.want {
			t.Errorf("%s: pod_id = %q, want %q", tc.name, c.Server.PodID, tc.want)
		}
	}

	c := mustLoad(t, LoadOptions{Env: []string{"POD_IP=10.0.0.8", "DWS_SERVER_GRPC_ADDR=:6001"}})
	if c.Server.PodID != "10.0.0.8:6001" {
		t.Errorf("Load must finalize: pod_id = %q", c.Server.PodID)
	}
	c = Defaults()
	if got := c.PodIDOrDefault(); got == "" || c.Server.PodID != "" {
		t.Errorf("PodIDOrDefault = %q and must not modify the config", got)
	}
}
