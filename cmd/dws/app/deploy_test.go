package app

// The packaging in deploy/ and the Dockerfile cannot run here (no Docker on
// the CI machine), so these tests hold them to the code they describe: the
// env names to the config definition, the ports to the listener defaults,
// the dashboard's queries to the metrics catalogue and to what a live pod
// exports.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/dws-gateway/dws/bridge"
	"github.com/dws-gateway/dws/internal/config"
	"github.com/dws-gateway/dws/internal/metrics"
)

// repoFile reads a file relative to the module root (tests run in
// cmd/dws/app).
func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// composeFile is the part of the Compose specification the checks read.
type composeFile struct {
	Services map[string]struct {
		Build *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Image           string            `yaml:"image"`
		Command         []string          `yaml:"command"`
		Environment     map[string]string `yaml:"environment"`
		Secrets         []string          `yaml:"secrets"`
		Ports           []string          `yaml:"ports"`
		Hostname        string            `yaml:"hostname"`
		StopGracePeriod string            `yaml:"stop_grace_period"`
		StopSignal      string            `yaml:"stop_signal"`
		Volumes         []string          `yaml:"volumes"`
	} `yaml:"services"`
	Secrets map[string]map[string]string `yaml:"secrets"`
	Configs map[string]struct {
		Content string `yaml:"content"`
	} `yaml:"configs"`
}

func TestDeploy_Compose_TwoPodsNATSRedis_EnvNamesAreConfigKeys(t *testing.T) {
	var c composeFile
	if err := yaml.Unmarshal(repoFile(t, "deploy/compose.yaml"), &c); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	if !slices.Contains(c.Services["nats"].Command, "-js") {
		t.Errorf("nats runs without JetStream: %v", c.Services["nats"].Command)
	}
	if _, ok := c.Services["redis"]; !ok {
		t.Error("no redis service")
	}
	_, grpcPort, _ := net.SplitHostPort(config.Defaults().Server.GRPCAddr)
	_, opsPort, _ := net.SplitHostPort(config.Defaults().Server.OpsAddr)
	byEnv := map[string]config.Key{}
	for _, k := range config.Keys() {
		byEnv[k.Env] = k
	}
	var pods []string
	podIDs := map[string]bool{}
	for _, name := range []string{"dws1", "dws2"} {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("no %s service: compose runs two dws pods", name)
		}
		pods = append(pods, name)
		if s.Build == nil {
			t.Fatalf("%s: not built from the repository", name)
		}
		if _, err := os.Stat(filepath.Join("..", "..", "..", "deploy", s.Build.Context, s.Build.Dockerfile)); err != nil {
			t.Errorf("%s: build context: %v", name, err)
		}
		// Every DWS_ name is a key's env name (or a secret's _FILE form).
		secretDir := t.TempDir()
		env := []string{}
		for k, v := range s.Environment {
			switch key, ok := byEnv[strings.TrimSuffix(k, config.FileSuffix)]; {
			case !ok:
				t.Errorf("%s: %s is not the env name of any config key", name, k)
			case strings.HasSuffix(k, config.FileSuffix) && !key.Secret:
				t.Errorf("%s: %s: only secrets are read from files", name, k)
			case strings.HasSuffix(k, config.FileSuffix):
				secret := strings.TrimPrefix(v, "/run/secrets/")
				if secret == v || !slices.Contains(s.Secrets, secret) || c.Secrets[secret] == nil {
					t.Errorf("%s: %s=%s is not a secret granted to the service", name, k, v)
				}
				// Stand-in content so the config below loads.
				f := filepath.Join(secretDir, secret)
				// Distinct per secret: the issuer key must differ from
				// the API key (config.Validate).
				value := "compose-test-" + secret
				if strings.Contains(key.Name, "aes_key") {
					value = strings.Repeat("ab", 32)
				}
				if err := os.WriteFile(f, []byte(value+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				v = f
			}
			env = append(env, k+"="+v)
		}
		// …and together they make a valid configuration.
		cfg, err := config.Load(config.LoadOptions{File: "", Env: env})
		if err != nil {
			t.Fatalf("%s: environment does not load: %v", name, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: environment is invalid: %v", name, err)
		}
		if cfg.NeedsDevKeys() || len(cfg.Redis.Addrs) == 0 || cfg.NATS.URL == "" {
			t.Fatalf("%s: not a cluster pod (token keys, redis.addrs, nats.url)", name)
		}
		// Pods reach each other at pod_id: the service's host name and
		// the gRPC port it listens on.
		if want := net.JoinHostPort(s.Hostname, grpcPort); cfg.Server.PodID != want || s.Hostname != name {
			t.Errorf("%s: pod_id %q, want %q", name, cfg.Server.PodID, want)
		}
		podIDs[cfg.Server.PodID] = true
		// Docker's SIGKILL must come after dws's own bound on the drain.
		grace, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil || grace <= cfg.Shutdown.Timeout || (s.StopSignal != "" && s.StopSignal != "SIGTERM") {
			t.Errorf("%s: stop_grace_period %q / stop_signal %q must leave shutdown.timeout (%v) to the SIGTERM drain",
				name, s.StopGracePeriod, s.StopSignal, cfg.Shutdown.Timeout)
		}
	}
	// The shell variables the secrets come from are the keys' own env
	// names, so the header's `export` lines also work without compose.
	for name, sec := range c.Secrets {
		if env := sec["environment"]; env != "" {
			if _, ok := byEnv[env]; !ok {
				t.Errorf("secret %s comes from $%s, which is not the env name of any config key", name, env)
			}
		}
	}
	if len(podIDs) != 2 {
		t.Errorf("the two pods share a pod_id: %v", podIDs)
	}
	// Prometheus scrapes each pod's ops listener.
	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(c.Configs["prometheus"].Content), &prom); err != nil || len(prom.ScrapeConfigs) == 0 {
		t.Fatalf("prometheus config: %v", err)
	}
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	for _, p := range pods {
		if !slices.Contains(targets, net.JoinHostPort(p, opsPort)) {
			t.Errorf("prometheus does not scrape %s:%s (targets %v)", p, opsPort, targets)
		}
	}
	mounted := false
	for _, v := range c.Services["grafana"].Volumes {
		mounted = mounted || strings.HasPrefix(v, "./grafana-dws.json:")
	}
	if !mounted {
		t.Error("grafana does not mount deploy/grafana-dws.json")
	}
}

func TestDeploy_Dockerfile_StaticNonRootImage_ExposesTheListeners(t *testing.T) {
	df := string(repoFile(t, "Dockerfile"))
	gomod := string(repoFile(t, "go.mod"))
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gomod)
	if goLine == nil || !strings.Contains(df, "ARG GO_VERSION="+goLine[1]) || !strings.Contains(df, "FROM golang:${GO_VERSION} AS build") {
		t.Errorf("the builder is not golang:%v (go.mod)", goLine)
	}
	for _, want := range []string{
		"CGO_ENABLED=0", // static binary
		"-X github.com/dws-gateway/dws/cmd/dws/app.Version=", // the Version var cmd/dws prints
		"FROM gcr.io/distroless/static",                      // no shell, no libc
		"USER nonroot",                                       // non-root
		`ENTRYPOINT ["/usr/local/bin/dws"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if !strings.Contains(df, "Version") || reflect.TypeOf(Version).Kind() != reflect.String {
		t.Error("app.Version is not a string variable the linker can set")
	}
	expose := regexp.MustCompile(`(?m)^EXPOSE (.+)$`).FindStringSubmatch(df)
	if expose == nil {
		t.Fatal("no EXPOSE")
	}
	d := config.Defaults().Server
	var want []string
	for _, addr := range []string{d.WSAddr, d.OpsAddr, d.GRPCAddr} {
		_, port, _ := net.SplitHostPort(addr)
		want = append(want, port)
	}
	if got := strings.Fields(expose[1]); !slices.Equal(got, want) {
		t.Errorf("EXPOSE %v, listener defaults %v", got, want)
	}
	ignore := string(repoFile(t, ".dockerignore"))
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "internal", "codec", "reactor", "session", "bridge"} {
		if regexp.MustCompile(`(?m)^/?` + needed + `/?$`).MatchString(ignore) {
			t.Errorf(".dockerignore drops %s, which the build needs", needed)
		}
	}
}

// catalogueNames returns every metric name registered in a fresh catalogue
// with its kind, read from the descriptors (vectors export nothing until
// used).
func catalogueNames(t *testing.T) map[string]string {
	t.Helper()
	m := metrics.New()
	out := map[string]string{}
	fqName := regexp.MustCompile(`fqName: "([^"]*)"`)
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Type().Field(i).Name == "Registry" {
			continue
		}
		kind := "other"
		switch c.(type) {
		case prometheus.Histogram, *prometheus.HistogramVec:
			kind = "histogram"
		}
		ch := make(chan *prometheus.Desc, 4)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			if n := fqName.FindStringSubmatch(d.String()); n != nil {
				out[n[1]] = kind
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("only %d metrics read from the catalogue", len(out))
	}
	return out
}

// dashboardExprs returns every PromQL expression of the dashboard with the
// title of the panel it belongs to.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	var d struct {
		Panels []json.RawMessage `json:"panels"`
		Annot  struct {
			List []struct {
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
	}
	if err := json.Unmarshal(repoFile(t, "deploy/grafana-dws.json"), &d); err != nil {
		t.Fatalf("deploy/grafana-dws.json: %v", err)
	}
	type panel struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos struct {
			W, X int
		} `json:"gridPos"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	out := map[string]string{}
	ids := map[int]bool{}
	for _, raw := range d.Panels {
		var p panel
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q overflows the 24-column grid", p.Title)
		}
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out[tg.Expr] = p.Title
		}
	}
	for _, a := range d.Annot.List {
		out[a.Expr] = "annotation"
	}
	return out
}

var promMetricRef = regexp.MustCompile(`\bdws_[a-z0-9_]+`)

func TestDeploy_GrafanaDashboard_QueriesCatalogueMetricsAndCoversTheIssue(t *testing.T) {
	names := catalogueNames(t)
	used := map[string]bool{}
	for expr, title := range dashboardExprs(t) {
		for _, ref := range promMetricRef.FindAllString(expr, -1) {
			base := ref
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(ref, suf); ok && names[b] == "histogram" {
					base = b
				}
			}
			kind, ok := names[base]
			switch {
			case !ok:
				t.Errorf("panel %q queries %s, which dws does not export", title, ref)
			case kind == "histogram" && base == ref:
				t.Errorf("panel %q queries histogram %s without _bucket/_sum/_count", title, ref)
			case strings.Contains(expr, "histogram_quantile") && kind == "histogram" && !strings.HasSuffix(ref, "_bucket"):
				t.Errorf("panel %q: histogram_quantile over %s", title, ref)
			}
			used[base] = true
		}
	}
	// What the operations issue asks the dashboard to show.
	for _, m := range []string{
		"dws_connections_active", "dws_connections_total", "dws_handshake_duration_seconds",
		"dws_deliveries_total", "dws_drops_total", "dws_fanout_latency_seconds",
		"dws_grpc_forwards_total", "dws_circuit_breaker_state_changes_total", "dws_redis_errors_total",
		"dws_degraded", "dws_config_reloads_total", "dws_recovered_panics_total",
	} {
		if !used[m] {
			t.Errorf("the dashboard never shows %s", m)
		}
	}
	var unused []string
	for n := range names {
		if !used[n] {
			unused = append(unused, n)
		}
	}
	if len(unused) > 0 {
		t.Errorf("catalogue metrics missing from the dashboard: %v", unused)
	}
}

// A live pod, after a real socket and a real event, exports only dws_
// families (beside the Go, process and promhttp ones), none of them
// carrying a per-connection label value, and build info with its version.
func TestMetrics_LivePod_OnlyDwsFamilies_NoIdentityInLabels(t *testing.T) {
	a := startApp(t, nil)
	const co, ag, us = "co-zx81", "ag-zx81", "us-zx81"
	tok, _ := a.Minter.MintUser(userClaims(co, ag, us))
	conn := wsDial(t, fmt.Sprintf("ws://127.0.0.1:%d/ws/%s/%s?%s", a.WSPort(), co, ag,
		url.Values{"user": {us}, "token": {tok}, "x-api-key": {a.Cfg.Auth.APIKey}}.Encode()))
	if _, err := wsutil.ReadServerText(conn); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(a.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := bridge.Publish(ctx, nc, "websocket."+co+"."+ag+".chats", []byte(`{"event_id":"ev-zx81","company_id":"`+co+`","row_data":{}}`), "req-zx81"); err != nil {
		t.Fatal(err)
	}
	if msg, err := wsutil.ReadServerText(conn); err != nil || !bytes.Contains(msg, []byte("ev-zx81")) {
		t.Fatalf("event: %q %v", msg, err)
	}
	resp, err := http.Get("http://" + a.OpsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	names := catalogueNames(t)
	secrets := []string{"zx81", tok, a.Cfg.Auth.APIKey, a.Cfg.Auth.TokenAESKey, a.Cfg.Server.PodID}
	for name, f := range fams {
		switch {
		case strings.HasPrefix(name, "dws_"):
			if _, ok := names[name]; !ok {
				t.Errorf("%s exported but not in the catalogue", name)
			}
		case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"), strings.HasPrefix(name, "promhttp_"):
			continue
		default:
			t.Errorf("%s: not a dws_ metric", name)
			continue
		}
		for _, s := range f.GetMetric() {
			for _, lp := range s.GetLabel() {
				for _, secret := range secrets {
					if strings.Contains(lp.GetValue(), secret) {
						t.Errorf("%s{%s=%q}: a per-connection or secret value in a label", name, lp.GetName(), lp.GetValue())
					}
				}
			}
		}
	}
	if !bytes.Contains(body, []byte(`dws_deliveries_total{path="local"} 1`)) {
		t.Error("the delivered event is not counted as dws_deliveries_total{path=\"local\"}")
	}
	if !bytes.Contains(body, []byte(`version="`+Version+`"} 1`)) {
		t.Errorf("dws_build_info lacks version %q", Version)
	}
}
