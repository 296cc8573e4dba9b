package policy

import (
	"errors"
	"testing"

	"github.com/berth-registry/berth/oci"
)

func TestRuleMatch(t *testing.T) {
	hex := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name      string
		rule      Rule
		repo, tag string
		want      bool
	}{
		{"empty selects all", Rule{}, "a/b/c", "v1", true},
		{"single star stays in a component", Rule{Repos: "library/*"}, "library/a/b", "v1", false},
		{"double star crosses components", Rule{Repos: "library/**"}, "library/a/b", "v1", true},
		{"alternatives", Rule{Tags: "{v1,v2}.*"}, "r", "v2.3", true},
		{"alternatives miss", Rule{Tags: "{v1,v2}.*"}, "r", "v3.0", false},
		{"exclude repos", Rule{Repos: "**", ExcludeRepos: "tmp/**"}, "tmp/x", "v1", false},
		{"exclude tags", Rule{ExcludeTags: "*-rc*"}, "r", "1.0-rc1", false},
		{"accessory never by itself", Rule{}, "r", "sha256-" + hex + ".sig", false},
		{"fallback tag never by itself", Rule{}, "r", "sha256-" + hex, false},
		{"a tag that only looks like one", Rule{}, "r", "sha256-abc.sig", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rule.Match(tt.repo, tt.tag); got != tt.want {
				t.Fatalf("Match(%q, %q) = %v, want %v", tt.repo, tt.tag, got, tt.want)
			}
		})
	}
}

func TestDestRepo(t *testing.T) {
	tests := []struct {
		prefix  string
		flatten int
		repo    string
		want    string
	}{
		{"", 0, "a/b/c", "a/b/c"},
		{"mirror", 0, "a/b/c", "mirror/a/b/c"},
		{"", 1, "a/b/c", "b/c"},
		{"m", 1, "a/b/c", "m/b/c"},
		{"m", -1, "a/b/c", "m/c"},
		{"", 5, "a/b", "b"},
	}
	for _, tt := range tests {
		r := Rule{DestPrefix: tt.prefix, Flatten: tt.flatten}
		if got := r.DestRepo(tt.repo); got != tt.want {
			t.Errorf("prefix %q flatten %d: DestRepo(%q) = %q, want %q", tt.prefix, tt.flatten, tt.repo, got, tt.want)
		}
	}
}

func TestAccessory(t *testing.T) {
	d := oci.Digest("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	for _, s := range append([]string{""}, AccessorySuffixes...) {
		tag := AccessoryTag(d, s)
		got, ok := AccessoryOf(tag)
		if !ok || got != d {
			t.Errorf("AccessoryOf(%q) = %q, %v; want %q", tag, got, ok, d)
		}
	}
	if _, ok := AccessoryOf("latest"); ok {
		t.Error("latest is not an accessory")
	}
}

func TestRuleValidate(t *testing.T) {
	ok := Rule{Name: "to-eu", Endpoint: "eu", Trigger: TriggerEvent}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid rule: %v", err)
	}
	bad := map[string]func(*Rule){
		"name":        func(r *Rule) { r.Name = "Bad Name" },
		"endpoint":    func(r *Rule) { r.Endpoint = "" },
		"glob":        func(r *Rule) { r.Repos = "[" },
		"trigger":     func(r *Rule) { r.Trigger = "sometimes" },
		"cron spec":   func(r *Rule) { r.Trigger = TriggerCron },
		"stray cron":  func(r *Rule) { r.Cron = "@hourly" },
		"flatten":     func(r *Rule) { r.Flatten = -2 },
		"bandwidth":   func(r *Rule) { r.Bandwidth = -1 },
		"concurrency": func(r *Rule) { r.Concurrency = MaxConcurrency + 1 },
		"prefix":      func(r *Rule) { r.DestPrefix = "/abs/" },
	}
	for what, change := range bad {
		r := ok
		change(&r)
		if err := r.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate() = %v, want ErrInvalid", what, err)
		}
	}
}

func TestEndpointValidate(t *testing.T) {
	ok := Endpoint{Name: "eu", URL: "https://eu.example:5000", Type: EndpointOCI}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid endpoint: %v", err)
	}
	for _, u := range []string{"ftp://x", "https://", "https://h/path", "https://u:p@h", "h:5000"} {
		e := ok
		e.URL = u
		if err := e.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("url %q: Validate() = %v, want ErrInvalid", u, err)
		}
	}
	e := ok
	e.Type = "harbor"
	if err := e.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("type harbor: %v", err)
	}
}
