package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// EnvPrefix starts every env name: DWS_ + the dotted key upper-cased with
// '.' → '_' (SPEC §9).
const EnvPrefix = "DWS_"

// Key is the definition of one configuration key, derived from the tags of
// its field in Config. It is the one place each fact about a key lives:
// loading, validation messages, masking, diffs and docs all read it.
type Key struct {
	// Name is the dotted key, e.g. "auth.token_aes_key".
	Name string
	// Env is the env name, e.g. "DWS_AUTH_TOKEN_AES_KEY".
	Env string
	// Default is the built-in value formatted as an env value would be
	// written ("30s", "a,b", "" for empty).
	Default string
	// Doc is the one-line description shown in docs/config.md.
	Doc string
	// Secret keys never appear in logs, errors or printed config.
	Secret bool
	// Hot keys are applied by a SIGHUP reload; the rest need a restart.
	Hot bool

	kind  kind
	index []int // reflect field path from Config
}

// kind is the small set of Go types a key may have; convert and format
// handle exactly these.
type kind int

const (
	kindString kind = iota
	kindInt
	kindFloat
	kindBool
	kindDuration
	kindList
)

// table is the derived definition of every key, built once from the tags.
type table struct {
	list     []Key
	byName   map[string]int
	byEnv    map[string]int
	sections []string // in struct order
	defaults map[string]any
}

// keyTable panics on a malformed tag: that is a programming error in
// config.go, and every test in this package trips over it at once.
var keyTable = sync.OnceValue(func() *table {
	t, err := buildTable()
	if err != nil {
		panic("config: " + err.Error())
	}
	return t
})

// Keys returns the definition of every key in struct order.
func Keys() []Key { return slices.Clone(keyTable().list) }

// Lookup returns the definition of a dotted key.
func Lookup(name string) (Key, bool) {
	t := keyTable()
	i, ok := t.byName[name]
	if !ok {
		return Key{}, false
	}
	return t.list[i], true
}

// EnvName derives the env name of a dotted key: DWS_ + upper-cased key with
// '.' → '_' (auth.token_aes_key → DWS_AUTH_TOKEN_AES_KEY).
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Defaults returns a Config holding every built-in default; pod_id stays
// empty until Finalize.
func Defaults() *Config {
	c := new(Config)
	for _, k := range keyTable().list {
		k.set(c, keyTable().defaults[k.Name])
	}
	return c
}

func buildTable() (*table, error) {
	t := &table{byName: map[string]int{}, byEnv: map[string]int{}, defaults: map[string]any{}}
	root := reflect.TypeFor[Config]()
	for i := range root.NumField() {
		sf := root.Field(i)
		section, ok := koanfName(sf)
		if !ok {
			continue
		}
		if sf.Type.Kind() != reflect.Struct {
			return nil, fmt.Errorf("field %s: a section must be a struct", sf.Name)
		}
		t.sections = append(t.sections, section)
		for j := range sf.Type.NumField() {
			ff := sf.Type.Field(j)
			name, ok := koanfName(ff)
			if !ok {
				continue
			}
			k := Key{
				Name:   section + "." + name,
				Doc:    ff.Tag.Get("doc"),
				Secret: ff.Tag.Get("secret") == "true",
				Hot:    ff.Tag.Get("hot") == "true",
				index:  []int{i, j},
			}
			k.Env = EnvName(k.Name)
			var err error
			if k.kind, err = kindOf(ff.Type); err != nil {
				return nil, fmt.Errorf("%s: %w", k.Name, err)
			}
			if k.Doc == "" {
				return nil, fmt.Errorf("%s: missing doc tag", k.Name)
			}
			def, err := k.convert(ff.Tag.Get("default"))
			if err != nil {
				return nil, fmt.Errorf("%s: default tag: %w", k.Name, err)
			}
			if k.kind == kindList && ff.Tag.Get("default") == "" {
				def = []string(nil)
			}
			t.defaults[k.Name] = def
			k.Default = k.format(reflect.ValueOf(def))
			if _, dup := t.byEnv[k.Env]; dup {
				return nil, fmt.Errorf("%s: env name %s is taken", k.Name, k.Env)
			}
			t.byName[k.Name] = len(t.list)
			t.byEnv[k.Env] = len(t.list)
			t.list = append(t.list, k)
		}
	}
	return t, nil
}

// koanfName returns the koanf tag of an exported field; unexported fields
// and `koanf:"-"` (such as Auth.Dev) are not keys.
func koanfName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name := f.Tag.Get("koanf")
	if name == "" || name == "-" {
		return "", false
	}
	return name, true
}

func kindOf(t reflect.Type) (kind, error) {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return kindDuration, nil
	case t.Kind() == reflect.String:
		return kindString, nil
	case t.Kind() == reflect.Int:
		return kindInt, nil
	case t.Kind() == reflect.Float64:
		return kindFloat, nil
	case t.Kind() == reflect.Bool:
		return kindBool, nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return kindList, nil
	}
	return 0, fmt.Errorf("unsupported type %s", t)
}

// field returns the addressable field of k inside c.
func (k Key) field(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(k.index)
}

// value returns the current Go value of k in c.
func (k Key) value(c *Config) any { return k.field(c).Interface() }

// set stores a value already converted to k's type.
func (k Key) set(c *Config, v any) {
	f := k.field(c)
	if v == nil {
		f.SetZero()
		return
	}
	if l, ok := v.([]string); ok {
		// Configs must not share a backing array with the default table.
		v = slices.Clone(l)
	}
	f.Set(reflect.ValueOf(v).Convert(f.Type()))
}
