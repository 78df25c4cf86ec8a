package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics is one scrape of a pod's /metrics: every sample by its full name
// with labels ("dws_drops_total{reason=\"no_route\"}").
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format (comments skipped). A
// timestamp after the value is ignored.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// The value follows the last space outside the label braces.
		end := strings.LastIndexByte(line, '}')
		rest := line[end+1:]
		f := strings.Fields(rest)
		if end < 0 {
			f = strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, fmt.Errorf("metrics line %q: %w", line, err)
			}
			m[f[0]] = v
			continue
		}
		if len(f) < 1 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[line[:end+1]] = v
	}
	return m, sc.Err()
}

// Sum adds every sample of metric name, whatever its labels.
func (m Metrics) Sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || (strings.HasPrefix(k, name) && len(k) > len(name) && k[len(name)] == '{') {
			s += v
		}
	}
	return s
}

// Get returns the sample of name with exactly labels (`reason="x"`).
func (m Metrics) Get(name, labels string) float64 {
	if labels == "" {
		return m[name]
	}
	return m[name+"{"+labels+"}"]
}

// Scrape fetches http://ops/metrics.
func Scrape(ops string) (Metrics, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + ops + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", ops, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", ops, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return ParseMetrics(bytes.NewReader(b))
}
