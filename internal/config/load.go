package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

const (
	// EnvConfigFile names the YAML file when no explicit file is given.
	EnvConfigFile = "DWS_CONFIG"
	// DefaultFile is read when neither an explicit file nor DWS_CONFIG is
	// given and it exists (relative to the working directory).
	DefaultFile = "config/dws.yaml"
	// FileSuffix turns a secret's env name into the name of a file holding
	// it (DWS_AUTH_TOKEN_AES_KEY_FILE=/run/secrets/x), the Docker/Kubernetes
	// secrets convention.
	FileSuffix = "_FILE"
)

// LoadOptions says where Load reads from. Precedence, lowest first:
// built-in defaults < YAML file < env < Flags.
type LoadOptions struct {
	// File is the YAML file; "" = env DWS_CONFIG, else config/dws.yaml when
	// it exists, else built-in defaults only. A named file must exist.
	File string
	// Env is the environment as KEY=VALUE pairs; nil = os.Environ().
	Env []string
	// Flags maps dotted keys to values written as env values would be
	// (lists comma-separated, durations "30s"); highest precedence.
	Flags map[string]string
}

// origin is what a reload needs to rebuild the same layers from a new file.
type origin struct {
	file  string // resolved; "" = no file
	env   []string
	flags map[string]string
}

// SourceFile returns the YAML file c was loaded from ("" when none).
func (c *Config) SourceFile() string {
	if c.origin == nil {
		return ""
	}
	return c.origin.file
}

// Load builds the effective configuration from defaults, the YAML file, env
// and flags, then Finalize fills derived values. It reports every problem it
// finds (unknown file keys, unparsable values) at once, each naming its key
// and source. Load does not Validate: callers do, so `dws config print`
// can still show an invalid config.
func Load(opts LoadOptions) (*Config, error) {
	envList := opts.Env
	if envList == nil {
		envList = os.Environ()
	}
	envList = slices.Clone(envList)
	path, err := resolveFile(opts.File, envList)
	if err != nil {
		return nil, err
	}
	return load(&origin{file: path, env: envList, flags: maps.Clone(opts.Flags)})
}

// resolveFile applies SPEC §9's order: explicit file, DWS_CONFIG, then the
// default path if present.
func resolveFile(explicit string, envList []string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if p, ok := lookupEnv(envList, EnvConfigFile); ok && p != "" {
		return p, nil
	}
	st, err := os.Stat(DefaultFile)
	switch {
	case err == nil && !st.IsDir():
		return DefaultFile, nil
	case err == nil || errors.Is(err, os.ErrNotExist):
		return "", nil
	default:
		return "", fmt.Errorf("config file %s: %w", DefaultFile, err)
	}
}

// load merges the layers named by o into a Config.
func load(o *origin) (*Config, error) {
	t := keyTable()
	ko := koanf.New(".")
	var errs []error
	layer := func(m map[string]any, lerrs []error) {
		errs = append(errs, lerrs...)
		if err := ko.Load(flatMap(m), nil); err != nil {
			errs = append(errs, err)
		}
	}
	layer(t.defaults, nil)
	if o.file != "" {
		layer(fromFile(o.file))
	}
	layer(fromEnv(o.env))
	layer(fromFlags(o.flags))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	c := new(Config)
	if err := ko.Unmarshal("", c); err != nil {
		// Every value was converted to its field's type above, so this is a
		// bug here, not bad input; the message carries no values.
		return nil, fmt.Errorf("config: decode: %w", err)
	}
	c.origin = o
	c.Finalize(o.env)
	return c, nil
}

// fromFile reads the YAML file, rejecting keys that are not defined so a
// typo never silently leaves a default in place.
func fromFile(path string) (map[string]any, []error) {
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		return nil, []error{fmt.Errorf("config file %s: %w", path, err)}
	}
	t := keyTable()
	raw := k.All()
	out := map[string]any{}
	var errs []error
	for _, name := range k.Keys() {
		v := raw[name]
		i, ok := t.byName[name]
		if !ok {
			if slices.Contains(t.sections, name) {
				if m, isMap := v.(map[string]any); v == nil || (isMap && len(m) == 0) {
					continue // an empty section is harmless
				}
				errs = append(errs, fmt.Errorf("config file %s: %s: must be a mapping of keys", path, name))
				continue
			}
			errs = append(errs, fmt.Errorf("config file %s: unknown key %q%s", path, name, suggest(name)))
			continue
		}
		if v == nil {
			continue // `key:` with no value leaves the lower layer alone
		}
		key := t.list[i]
		cv, err := key.convert(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (config file %s)", name, err, path))
			continue
		}
		out[name] = cv
	}
	return out, errs
}

// fromEnv reads DWS_* variables named after defined keys, plus the _FILE
// form of secrets. Other DWS_ names (DWS_CONFIG, tool settings) are ignored.
func fromEnv(envList []string) (map[string]any, []error) {
	t := keyTable()
	p := env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return envList },
		TransformFunc: func(name, value string) (string, any) {
			if i, ok := t.byEnv[name]; ok {
				return t.list[i].Name, value
			}
			return "", nil
		},
	})
	k := koanf.New(".")
	if err := k.Load(p, nil); err != nil {
		return nil, []error{fmt.Errorf("env: %w", err)}
	}
	out := map[string]any{}
	var errs []error
	for _, name := range k.Keys() {
		key := t.list[t.byName[name]]
		v, err := key.convert(k.Get(name))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (env %s)", name, err, key.Env))
			continue
		}
		out[name] = v
	}
	secrets, serrs := fromSecretFiles(envList, out)
	maps.Copy(out, secrets)
	return out, append(errs, serrs...)
}

// fromSecretFiles reads DWS_<SECRET>_FILE variables: the file's content,
// trimmed, is the value. set holds the keys plain env already gave.
func fromSecretFiles(envList []string, set map[string]any) (map[string]any, []error) {
	t := keyTable()
	out := map[string]any{}
	var errs []error
	for _, kv := range envList {
		name, path, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || !strings.HasSuffix(name, FileSuffix) {
			continue
		}
		i, ok := t.byEnv[strings.TrimSuffix(name, FileSuffix)]
		if !ok {
			continue
		}
		key := t.list[i]
		switch {
		case !key.Secret:
			errs = append(errs, fmt.Errorf("%s: %s is only read for secrets; set %s instead", key.Name, name, key.Env))
		case path == "":
			errs = append(errs, fmt.Errorf("%s: %s is empty; it must name a file", key.Name, name))
		case set[key.Name] != nil:
			errs = append(errs, fmt.Errorf("%s: set %s or %s, not both", key.Name, key.Env, name))
		default:
			b, err := os.ReadFile(path)
			if err != nil {
				// The os error names the path, never the content.
				errs = append(errs, fmt.Errorf("%s: %s: %w", key.Name, name, err))
				continue
			}
			out[key.Name] = strings.TrimSpace(string(b))
		}
	}
	return out, errs
}

// fromFlags converts command-line overrides; an unknown key is an error
// because it can only come from a typo in a flag or in the caller.
func fromFlags(flags map[string]string) (map[string]any, []error) {
	t := keyTable()
	out := map[string]any{}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		i, ok := t.byName[name]
		if !ok {
			errs = append(errs, fmt.Errorf("flag: unknown key %q%s", name, suggest(name)))
			continue
		}
		key := t.list[i]
		v, err := key.convert(flags[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (flag)", name, err))
			continue
		}
		out[name] = v
	}
	return out, errs
}

// flatMap is a koanf.Provider over a flat dotted-key map of typed values.
type flatMap map[string]any

// Read returns the map nested by its dots, as koanf merges it.
func (m flatMap) Read() (map[string]any, error) {
	out := map[string]any{}
	for k, v := range m {
		section, name, _ := strings.Cut(k, ".")
		sub, _ := out[section].(map[string]any)
		if sub == nil {
			sub = map[string]any{}
			out[section] = sub
		}
		sub[name] = v
	}
	return out, nil
}

// ReadBytes is not supported: flatMap is already parsed.
func (m flatMap) ReadBytes() ([]byte, error) {
	return nil, errors.New("config: flatMap has no bytes")
}

func lookupEnv(envList []string, name string) (string, bool) {
	// Later entries win, as in os.Environ with duplicates.
	for _, kv := range slices.Backward(envList) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// suggest returns ` (did you mean "x"?)` for the defined key closest to a
// mistyped one, or "" when nothing is close.
func suggest(name string) string {
	best, bestD := "", len(name)/3+2
	for _, k := range keyTable().list {
		if d := editDistance(name, k.Name); d < bestD {
			best, bestD = k.Name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance; key names are short, so the
// two-row version is plenty.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
