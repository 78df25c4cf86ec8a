package metrics

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// declared is one row of the catalogue as operators see it on /metrics.
type declared struct {
	name    string
	typ     dto.MetricType
	labels  []string  // in declaration order
	buckets []float64 // histograms only
	// spec is the SPEC §8 item the metric implements; "" marks a metric
	// beyond SPEC §8's "at least" list.
	spec string
}

const (
	counter   = dto.MetricType_COUNTER
	gauge     = dto.MetricType_GAUGE
	histogram = dto.MetricType_HISTOGRAM
)

// specConnectionBuckets are SPEC §8's connection-duration buckets, written
// out here rather than read from ConnectionDurationBuckets so a change
// there cannot silently change the contract.
var specConnectionBuckets = []float64{60, 300, 900, 1800, 3600, 14400, 28800, 86400}

// latencyBuckets are the sub-millisecond-to-seconds buckets of handshake,
// fan-out and gRPC latency: 50 µs doubling 17 times, up to ~3.3 s.
var latencyBuckets = exponential(0.00005, 2, 17)

// resumeBuckets are a resume replay's: 1 ms doubling 15 times, up to ~16 s.
var resumeBuckets = exponential(0.001, 2, 15)

// catalogue is the declared catalogue: every dws_ metric, its type, its
// label set and (histograms) its buckets. A metric added to metrics.go
// without a row here, or a row without its metric, fails the tests below.
var catalogue = []declared{
	{"dws_connections_active", gauge, []string{"kind"}, nil, "active connections {kind}"},
	{"dws_connections_total", counter, []string{"kind", "result"}, nil, "connections total {kind,result}"},
	{"dws_connection_duration_seconds", histogram, []string{"kind"}, specConnectionBuckets, "connection duration histogram"},
	{"dws_handshake_duration_seconds", histogram, nil, latencyBuckets, "handshake duration"},
	{"dws_handshake_pace_limit", gauge, nil, nil, ""},
	{"dws_handshakes_paced", gauge, nil, nil, ""},
	{"dws_auth_failures_total", counter, []string{"reason"}, nil, "auth failures {reason}"},
	{"dws_session_conflicts_total", counter, []string{"kind"}, nil, "session conflicts/takeovers {kind}"},
	{"dws_session_takeovers_total", counter, []string{"kind"}, nil, "session conflicts/takeovers {kind}"},
	{"dws_session_kill_notices_total", counter, []string{"direction"}, nil, ""},
	{"dws_nats_messages_received_total", counter, []string{"subject_kind"}, nil, "NATS messages received {subject_kind}"},
	{"dws_nats_redeliveries_total", counter, nil, nil, ""},
	{"dws_deliveries_total", counter, []string{"path"}, nil, "deliveries {path=local|forwarded}"},
	{"dws_drops_total", counter, []string{"reason"}, nil, "drops {reason}"},
	{"dws_fanout_latency_seconds", histogram, nil, latencyBuckets, "fan-out latency (NATS publish → socket write) histogram"},
	{"dws_nats_acks_total", counter, []string{"result", "reason"}, nil, ""},
	{"dws_dispatch_queue_depth", gauge, nil, nil, ""},
	{"dws_grpc_forwards_total", counter, []string{"result"}, nil, "gRPC forwards {result}"},
	{"dws_grpc_forward_duration_seconds", histogram, nil, latencyBuckets, "gRPC forward duration"},
	{"dws_circuit_breaker_state_changes_total", counter, []string{"to"}, nil, "circuit breaker state changes"},
	{"dws_outbound_ring_bytes", gauge, nil, nil, "outbound ring bytes"},
	{"dws_slow_consumer_closes_total", counter, nil, nil, "slow-consumer closes"},
	{"dws_rate_limited_frames_total", counter, nil, nil, "rate-limited frames"},
	{"dws_rate_limit_closes_total", counter, nil, nil, ""},
	{"dws_protocol_closes_total", counter, []string{"code"}, nil, ""},
	{"dws_redis_errors_total", counter, []string{"op"}, nil, "Redis errors {op}"},
	{"dws_refresh_batches_total", counter, []string{"result"}, nil, ""},
	{"dws_degraded", gauge, nil, nil, "degraded mode gauge"},
	{"dws_config_reloads_total", counter, []string{"result"}, nil, "config reloads {result}"},
	{"dws_recovered_panics_total", counter, []string{"where"}, nil, "recovered panics {where}"},
	{"dws_build_info", gauge, []string{"version", "go_version"}, nil, "build info"},
	{"dws_partitions_owned", gauge, nil, nil, ""},
	{"dws_partition_ownership_changes_total", counter, []string{"reason"}, nil, ""},
	{"dws_partition_takeover_seconds", histogram, nil, latencyBuckets, ""},
	{"dws_partition_takeover_pending_total", counter, nil, nil, ""},
	{"dws_partition_source_restarts_total", counter, []string{"result"}, nil, ""},
	{"dws_partition_rewinds_total", counter, []string{"how"}, nil, ""},
	{"dws_resumes_total", counter, []string{"result"}, nil, ""},
	{"dws_resume_events_total", counter, nil, nil, ""},
	{"dws_resume_duration_seconds", histogram, nil, resumeBuckets, ""},
	{"dws_resume_waiting", gauge, nil, nil, ""},
	{"dws_resume_cache_bytes", gauge, nil, nil, ""},
	{"dws_resume_cache_lookups_total", counter, []string{"result"}, nil, ""},
	{"dws_resume_cache_reads_total", counter, nil, nil, ""},
	{"dws_resume_cache_bypasses_total", counter, []string{"reason"}, nil, ""},
}

// specItems is SPEC §8's "at least" list, item by item.
var specItems = []string{
	"active connections {kind}",
	"connections total {kind,result}",
	"connection duration histogram",
	"handshake duration",
	"auth failures {reason}",
	"session conflicts/takeovers {kind}",
	"NATS messages received {subject_kind}",
	"deliveries {path=local|forwarded}",
	"drops {reason}",
	"fan-out latency (NATS publish → socket write) histogram",
	"gRPC forwards {result}",
	"gRPC forward duration",
	"circuit breaker state changes",
	"outbound ring bytes",
	"slow-consumer closes",
	"rate-limited frames",
	"Redis errors {op}",
	"degraded mode gauge",
	"config reloads {result}",
	"recovered panics {where}",
	"build info",
}

// perConnectionLabels would give a series per socket, user or event: SPEC
// §8 forbids them (cardinality, and ids are personal data).
var perConnectionLabels = []string{
	"user", "user_id", "admin", "admin_id", "company", "company_id", "agent", "agent_id",
	"chat", "chat_id", "session", "session_key", "conn", "conn_id", "connection", "socket",
	"ip", "remote_addr", "addr", "token", "jti", "request_id", "event_id", "subject",
}

func TestCatalogue_CoversEverySpecItem(t *testing.T) {
	covered := map[string]bool{}
	for _, d := range catalogue {
		if d.spec != "" {
			if !slices.Contains(specItems, d.spec) {
				t.Errorf("%s cites %q, which is not a SPEC §8 item", d.name, d.spec)
			}
			covered[d.spec] = true
		}
	}
	for _, item := range specItems {
		if !covered[item] {
			t.Errorf("SPEC §8 item %q has no metric in the catalogue", item)
		}
	}
}

// Vectors export nothing until a label value is used, so the scrape alone
// cannot prove they exist: the descriptors do.
func TestCatalogue_DescriptorsMatchDeclaration_EvenUntouched(t *testing.T) {
	m := New()
	got := map[string][]string{}
	for _, c := range collectorFields(t, m) {
		ch := make(chan *prometheus.Desc, 4)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			name, labels := parseDesc(t, d)
			if _, dup := got[name]; dup {
				t.Errorf("%s declared twice", name)
			}
			got[name] = labels
		}
	}
	for _, d := range catalogue {
		labels, ok := got[d.name]
		switch {
		case !ok:
			t.Errorf("%s: declared but not in the Metrics struct", d.name)
		case !slices.Equal(labels, d.labels):
			t.Errorf("%s: labels %v, declared %v", d.name, labels, d.labels)
		}
		delete(got, d.name)
	}
	for name := range got {
		t.Errorf("%s: in the Metrics struct but not in the declared catalogue", name)
	}
}

func TestCatalogue_ScrapeMatchesDeclaration(t *testing.T) {
	m := New()
	touchAll(t, m)
	body := scrape(t, m)
	fams, err := parser().TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not valid text exposition: %v", err)
	}
	for _, d := range catalogue {
		t.Run(d.name, func(t *testing.T) {
			f, ok := fams[d.name]
			if !ok {
				t.Fatal("not exported")
			}
			if f.GetType() != d.typ {
				t.Fatalf("type %v, declared %v", f.GetType(), d.typ)
			}
			if f.GetHelp() == "" {
				t.Error("no HELP text")
			}
			for _, s := range f.GetMetric() {
				var names []string
				for _, lp := range s.GetLabel() {
					names = append(names, lp.GetName())
				}
				if want := sorted(d.labels); !slices.Equal(sorted(names), want) {
					t.Fatalf("labels %v, declared %v", names, d.labels)
				}
				if d.typ == histogram {
					assertBuckets(t, s.GetHistogram(), d.buckets)
				}
			}
		})
	}
	declaredNames := map[string]bool{}
	for _, d := range catalogue {
		declaredNames[d.name] = true
	}
	for name := range fams {
		switch {
		case strings.HasPrefix(name, "dws_"):
			if !declaredNames[name] {
				t.Errorf("%s exported but not declared", name)
			}
		case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"), strings.HasPrefix(name, "promhttp_"):
			// SPEC §8: the Go, process and promhttp collectors may stay.
		default:
			t.Errorf("%s: every metric of ours is dws_-prefixed", name)
		}
	}
}

func TestCatalogue_NoPerConnectionLabels(t *testing.T) {
	for _, d := range catalogue {
		for _, l := range d.labels {
			if slices.Contains(perConnectionLabels, l) {
				t.Errorf("%s has label %q: one series per socket, user or event", d.name, l)
			}
		}
	}
}

// Base units and suffixes (Prometheus naming conventions), checked by
// promlint on the scrape itself.
func TestCatalogue_PassesPromlint_BaseUnitsAndSuffixes(t *testing.T) {
	m := New()
	touchAll(t, m)
	problems, err := promlint.New(strings.NewReader(scrape(t, m))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "dws_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	for _, d := range catalogue {
		switch {
		case d.typ == counter && !strings.HasSuffix(d.name, "_total"):
			t.Errorf("%s: a counter ends in _total", d.name)
		case d.typ != counter && strings.HasSuffix(d.name, "_total"):
			t.Errorf("%s: only counters end in _total", d.name)
		case d.typ == histogram && !strings.HasSuffix(d.name, "_seconds") && !strings.HasSuffix(d.name, "_bytes"):
			t.Errorf("%s: a histogram is in a base unit (_seconds or _bytes)", d.name)
		}
	}
}

// Each server gets its own registry: two in-process pods in one test must
// not share (or double-register) collectors.
func TestNew_TwoInstances_DoNotShareCounters(t *testing.T) {
	a, b := New(), New()
	a.ConfigReloads.WithLabelValues("ok").Inc()
	if got := counterValue(t, b.Registry, "dws_config_reloads_total"); got != 0 {
		t.Fatalf("second instance sees %v reloads", got)
	}
	if got := counterValue(t, a.Registry, "dws_config_reloads_total"); got != 1 {
		t.Fatalf("first instance sees %v reloads", got)
	}
}

// collectorFields returns every collector field of m (everything but the
// registry), failing on a field of another kind.
func collectorFields(t *testing.T, m *Metrics) map[string]prometheus.Collector {
	t.Helper()
	out := map[string]prometheus.Collector{}
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Name == "Registry" {
			continue
		}
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Field(i).IsNil() {
			t.Fatalf("Metrics.%s is not a set collector", f.Name)
		}
		out[f.Name] = c
	}
	return out
}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]*)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// parseDesc reads the name and variable labels of d. client_golang exposes
// them only through String; a format change fails here loudly.
func parseDesc(t *testing.T, d *prometheus.Desc) (string, []string) {
	t.Helper()
	s := d.String()
	n, l := descName.FindStringSubmatch(s), descLabels.FindStringSubmatch(s)
	if n == nil || l == nil {
		t.Fatalf("cannot read descriptor %s", s)
	}
	if l[1] == "" {
		return n[1], nil
	}
	return n[1], strings.Split(l[1], ",")
}

// touchAll gives every vector one child, so the scrape shows its family.
func touchAll(t *testing.T, m *Metrics) {
	t.Helper()
	for name, c := range collectorFields(t, m) {
		var err error
		for n := 0; n <= 4; n++ {
			lvs := make([]string, n)
			for i := range lvs {
				lvs[i] = "x"
			}
			switch v := c.(type) {
			case *prometheus.CounterVec:
				_, err = v.GetMetricWithLabelValues(lvs...)
			case *prometheus.GaugeVec:
				_, err = v.GetMetricWithLabelValues(lvs...)
			case *prometheus.HistogramVec:
				_, err = v.GetMetricWithLabelValues(lvs...)
			default:
				err = nil // a plain metric is always exported
			}
			if err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("Metrics.%s: no label count fits: %v", name, err)
		}
	}
}

// scrape serves m the way the ops listener does and reads /metrics.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/metrics", nil)
	// Ask for the text format explicitly: the default negotiation might
	// pick protobuf or OpenMetrics one day.
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	return string(b)
}

func parser() *expfmt.TextParser {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return &p
}

func assertBuckets(t *testing.T, h *dto.Histogram, want []float64) {
	t.Helper()
	var got []float64
	for _, b := range h.GetBucket() {
		if !math.IsInf(b.GetUpperBound(), +1) {
			got = append(got, b.GetUpperBound())
		}
	}
	if len(got) != len(want) {
		t.Fatalf("buckets %v, declared %v", got, want)
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > want[i]*1e-9 {
			t.Fatalf("bucket %d is %v, declared %v (all: %v)", i, got[i], want[i], got)
		}
	}
}

func counterValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() == name {
			for _, s := range f.GetMetric() {
				sum += s.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func sorted(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	if c == nil {
		c = []string{}
	}
	return c
}

// exponential is prometheus.ExponentialBuckets restated: start, start·f, …
func exponential(start, factor float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = start * math.Pow(factor, float64(i))
	}
	return out
}
