package bench

import (
	"fmt"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dws-gateway/dws/bench/client"
)

// Latency summarises a histogram of microseconds for reports.
type Latency struct {
	Count  int64   `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50Us  int64   `json:"p50_us"`
	P90Us  int64   `json:"p90_us"`
	P99Us  int64   `json:"p99_us"`
	P999Us int64   `json:"p999_us"`
	MaxUs  int64   `json:"max_us"`
}

// Summarize reads the usual percentiles off h.
func Summarize(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count:  h.TotalCount(),
		MeanUs: h.Mean(),
		P50Us:  h.ValueAtQuantile(50),
		P90Us:  h.ValueAtQuantile(90),
		P99Us:  h.ValueAtQuantile(99),
		P999Us: h.ValueAtQuantile(99.9),
		MaxUs:  h.Max(),
	}
}

// EncodeHistogram returns h in the HdrHistogram V2 compressed base64 form,
// how workers ship histograms to the parent (a few hundred bytes, lossless).
func EncodeHistogram(h *hdrhistogram.Histogram) (string, error) {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return "", fmt.Errorf("encode histogram: %w", err)
	}
	return string(b), nil
}

// MergeEncoded decodes enc (empty = nothing) and merges it into dst. It fails
// when the encoded values do not all fit dst's range: a silent loss of
// outliers would understate the tail.
func MergeEncoded(dst *hdrhistogram.Histogram, enc string) error {
	if enc == "" {
		return nil
	}
	h, err := hdrhistogram.Decode([]byte(enc))
	if err != nil {
		return fmt.Errorf("decode histogram: %w", err)
	}
	if dropped := dst.Merge(h); dropped != 0 {
		return fmt.Errorf("merge histogram: %d values out of range", dropped)
	}
	return nil
}

// newHistogram is the suite's one histogram shape (see client.NewHistogram).
func newHistogram() *hdrhistogram.Histogram { return client.NewHistogram() }
