package config

import (
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// SecretMask replaces a set secret in printed configuration; an unset secret
// prints as "" so `dws config print` still shows whether it is configured.
const SecretMask = "***"

// Masked returns the effective configuration as section → key → value with
// secrets masked: durations as Go duration strings, lists as []string. The
// credentials part of nats.url is redacted too.
func Masked(c *Config) map[string]any {
	out := map[string]any{}
	for _, k := range keyTable().list {
		section, name, _ := strings.Cut(k.Name, ".")
		sub, _ := out[section].(map[string]any)
		if sub == nil {
			sub = map[string]any{}
			out[section] = sub
		}
		sub[name] = k.display(c)
	}
	return out
}

// Print writes the effective configuration as YAML, in definition order,
// with secrets masked. The output is itself a valid config file (a masked
// secret would load as the literal "***", so pass secrets via env).
func Print(w io.Writer, c *Config) error {
	root := &yaml.Node{Kind: yaml.MappingNode}
	var section *yaml.Node
	var current string
	for _, k := range keyTable().list {
		sec, name, _ := strings.Cut(k.Name, ".")
		if sec != current || section == nil {
			current = sec
			section = &yaml.Node{Kind: yaml.MappingNode}
			root.Content = append(root.Content, scalar(sec), section)
		}
		var val yaml.Node
		if err := val.Encode(k.display(c)); err != nil {
			return fmt.Errorf("config print %s: %w", k.Name, err)
		}
		keyNode := scalar(name)
		if k.Secret {
			keyNode.LineComment = "secret"
		}
		section.Content = append(section.Content, keyNode, &val)
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root},
		HeadComment: "effective dws configuration (secrets masked)"}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("config print: %w", err)
	}
	return enc.Close()
}

func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// display is the printable form of k's value in c.
func (k Key) display(c *Config) any {
	v := k.field(c)
	if k.Secret {
		if v.String() == "" {
			return ""
		}
		return SecretMask
	}
	switch k.kind {
	case kindDuration:
		return time.Duration(v.Int()).String()
	case kindList:
		l := slices.Clone(v.Interface().([]string))
		if l == nil {
			l = []string{}
		}
		return l
	case kindString:
		if k.Name == "nats.url" {
			return redactURLs(v.String())
		}
	}
	return v.Interface()
}

// redactURLs hides passwords in a comma-separated URL list
// (nats://user:pass@host → nats://user:xxxxx@host).
func redactURLs(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			if strings.Contains(p, "@") {
				parts[i] = "(redacted)"
			}
			continue
		}
		if _, has := u.User.Password(); !has {
			// nats://token@host: the user part is the token itself.
			u.User = url.User(SecretMask)
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
