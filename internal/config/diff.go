package config

import (
	"log/slog"
	"reflect"
	"slices"
)

// Change is one key whose value differs between two configurations. It
// never carries values: a secret is only ever reported as changed.
type Change struct {
	Key    string
	Secret bool
	// Hot changes are applied by a reload; the others wait for a restart.
	Hot bool
}

// Changes is the result of Diff, in definition order.
type Changes []Change

// Diff lists the keys whose values differ between old and new.
func Diff(old, new *Config) Changes {
	out := Changes{}
	for _, k := range keyTable().list {
		if !k.equal(old, new) {
			out = append(out, Change{Key: k.Name, Secret: k.Secret, Hot: k.Hot})
		}
	}
	return out
}

// Keys returns the dotted keys that changed (never nil, so a log shows []).
func (cs Changes) Keys() []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Key)
	}
	return out
}

// RestartRequired returns the changed keys a reload cannot apply.
func (cs Changes) RestartRequired() []string {
	out := []string{}
	for _, c := range cs {
		if !c.Hot {
			out = append(out, c.Key)
		}
	}
	return out
}

// Describe returns the log fields of a reload (SPEC §9): `changed` lists
// every changed dotted key, secrets included by name only, and
// `restart_required` the ones that need a restart.
func (cs Changes) Describe() []slog.Attr {
	return []slog.Attr{
		slog.Any("changed", cs.Keys()),
		slog.Any("restart_required", cs.RestartRequired()),
	}
}

// equal compares k's values in a and b; nil and empty lists are equal
// because YAML and env cannot tell them apart.
func (k Key) equal(a, b *Config) bool {
	va, vb := k.field(a), k.field(b)
	if k.kind == kindList {
		return slices.Equal(va.Interface().([]string), vb.Interface().([]string))
	}
	return reflect.DeepEqual(va.Interface(), vb.Interface())
}
