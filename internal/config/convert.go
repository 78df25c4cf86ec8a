package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// convert turns a raw value from YAML, env, a flag or a default tag into the
// Go type of k. Its error names the rule and, unless k is secret, the value;
// callers prefix the key and the source.
func (k Key) convert(raw any) (any, error) {
	switch k.kind {
	case kindString:
		switch v := raw.(type) {
		case string:
			return v, nil
		case int, int64, uint64, float64, bool:
			if k.Secret {
				// YAML would have turned an all-digit key into a number and
				// lost digits; make the user quote it.
				return nil, errors.New("must be a string (quote it in YAML)")
			}
			return fmt.Sprint(v), nil
		}
		return nil, fmt.Errorf("must be a string, got %s", k.describe(raw))
	case kindInt:
		switch v := raw.(type) {
		case int:
			return v, nil
		case int64:
			if v >= math.MinInt && v <= math.MaxInt {
				return int(v), nil
			}
		case uint64:
			if v <= math.MaxInt {
				return int(v), nil
			}
		case float64:
			if v == math.Trunc(v) && v >= math.MinInt && v <= math.MaxInt {
				return int(v), nil
			}
		case string:
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n, nil
			}
		}
		return nil, fmt.Errorf("must be an integer, got %s", k.describe(raw))
	case kindFloat:
		var f float64
		var ok bool
		switch v := raw.(type) {
		case int:
			f, ok = float64(v), true
		case int64:
			f, ok = float64(v), true
		case uint64:
			f, ok = float64(v), true
		case float64:
			f, ok = v, true
		case string:
			var err error
			f, err = strconv.ParseFloat(strings.TrimSpace(v), 64)
			ok = err == nil
		}
		if ok && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return f, nil
		}
		return nil, fmt.Errorf("must be a number, got %s", k.describe(raw))
	case kindBool:
		switch v := raw.(type) {
		case bool:
			return v, nil
		case string:
			if b, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil {
				return b, nil
			}
		}
		return nil, fmt.Errorf("must be true or false, got %s", k.describe(raw))
	case kindDuration:
		switch v := raw.(type) {
		case time.Duration:
			return v, nil
		case string:
			if d, err := time.ParseDuration(strings.TrimSpace(v)); err == nil {
				return d, nil
			}
		case int:
			// A bare number would be nanoseconds in koanf and surprise
			// everyone; only 0 is unambiguous.
			if v == 0 {
				return time.Duration(0), nil
			}
		}
		return nil, fmt.Errorf("must be a Go duration such as \"30s\" or \"1m30s\", got %s", k.describe(raw))
	case kindList:
		switch v := raw.(type) {
		case []string:
			return slices.Clone(v), nil
		case string:
			return splitList(v), nil
		case []any:
			out := make([]string, 0, len(v))
			for _, e := range v {
				switch e := e.(type) {
				case string:
					out = append(out, e)
				case int, int64, uint64, float64, bool:
					out = append(out, fmt.Sprint(e))
				default:
					return nil, fmt.Errorf("must be a list of strings, got an element that is %s", k.describe(e))
				}
			}
			return out, nil
		}
		return nil, fmt.Errorf("must be a list or a comma-separated string, got %s", k.describe(raw))
	}
	return nil, fmt.Errorf("unsupported kind %d", k.kind)
}

// splitList reads the env/flag form of a list: comma-separated, blanks
// trimmed, empty items dropped. An empty string is an empty (not nil) list
// so DWS_REDIS_ADDRS= can clear a list the file set.
func splitList(s string) []string {
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// describe names a raw value for an error message: its text for plain
// keys, only its shape for secrets.
func (k Key) describe(raw any) string {
	switch v := raw.(type) {
	case nil:
		return "nothing"
	case string:
		if k.Secret {
			return "a string"
		}
		return quoteValue(v)
	case bool:
		if k.Secret {
			return "a boolean"
		}
		return strconv.FormatBool(v)
	case int, int64, uint64, float64, time.Duration:
		if k.Secret {
			return "a number"
		}
		return fmt.Sprint(v)
	case []any, []string:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return "a value of type " + reflect.TypeOf(raw).String()
}

// quoteValue quotes a non-secret value for an error message. Values that
// look like they embed credentials (user:pass@host) are not echoed, and long
// values are cut so a pasted blob cannot flood a log line.
func quoteValue(s string) string {
	if strings.Contains(s, "@") {
		return "a value containing '@' (not shown: it may hold credentials)"
	}
	const maxShown = 80
	if len(s) > maxShown {
		return strconv.Quote(s[:maxShown]) + "…"
	}
	return strconv.Quote(s)
}

// format renders a value of k's type the way an env value is written.
func (k Key) format(v reflect.Value) string {
	switch k.kind {
	case kindString:
		return v.String()
	case kindInt:
		return strconv.FormatInt(v.Int(), 10)
	case kindFloat:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case kindBool:
		return strconv.FormatBool(v.Bool())
	case kindDuration:
		return time.Duration(v.Int()).String()
	case kindList:
		return strings.Join(v.Interface().([]string), ",")
	}
	return ""
}
