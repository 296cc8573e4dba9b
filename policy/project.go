package policy

import (
	"regexp"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// Projects: every repository belongs to the project named by its first
// path component. The state machine stores projects with their quota,
// immutability rules and retention policy; this file holds their model.

// DefaultProject is created at bootstrap, public.
const DefaultProject = "library"

// Bounds of a project's policies.
const (
	MaxImmutableRules = 15 // Harbor's limit
	MaxRetentionRules = 15
	maxProjectName    = 255
)

// Unlimited is a quota limit that does not limit.
const Unlimited int64 = -1

var projectNameRE = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

// ValidateProjectName checks a project name: a valid first component of a
// repository name (lowercase letters and digits, separated by single '.',
// '_' or '-'), at most 255 bytes.
func ValidateProjectName(name string) error {
	if len(name) == 0 || len(name) > maxProjectName || !projectNameRE.MatchString(name) {
		return invalidf("project name %q: use lowercase letters and digits, separated by '.', '_' or '-'", name)
	}
	return nil
}

// ProjectOf returns the project of a repository: its first path component.
// A name without '/' has no project.
func ProjectOf(repo string) (string, bool) {
	p, _, ok := strings.Cut(repo, "/")
	if !ok || p == "" {
		return "", false
	}
	return p, true
}

// Quota bounds a project: bytes of storage (each blob counted once in the
// project, plus manifests) and artifacts (manifests). Unlimited (-1) does
// not bound.
type Quota struct {
	Storage int64 `json:"storage"`
	Count   int64 `json:"count"`
}

// NoQuota is the quota of a project that sets none.
var NoQuota = Quota{Storage: Unlimited, Count: Unlimited}

// Validate checks q.
func (q Quota) Validate() error {
	if q.Storage < Unlimited || q.Count < Unlimited {
		return invalidf("quota limits must be -1 (unlimited) or at least 0")
	}
	return nil
}

// Usage is what a project holds.
type Usage struct {
	Storage int64 `json:"storage"`
	Count   int64 `json:"count"`
}

// QuotaWarnPercent is the usage, in percent of a limit, at which a
// warning event is recorded.
const QuotaWarnPercent = 85

// Exceeds reports whether usage u with delta added is over q, and which
// limit ("storage" or "count") it breaks. A delta that does not grow a
// dimension never exceeds it, so an over-quota project can still shrink
// and re-tag.
func (q Quota) Exceeds(u, delta Usage) (string, bool) {
	if delta.Storage > 0 && q.Storage != Unlimited && u.Storage+delta.Storage > q.Storage {
		return "storage", true
	}
	if delta.Count > 0 && q.Count != Unlimited && u.Count+delta.Count > q.Count {
		return "count", true
	}
	return "", false
}

// CrossesWarning reports whether going from usage before to after crosses
// QuotaWarnPercent of one of q's limits upwards.
func (q Quota) CrossesWarning(before, after Usage) bool {
	cross := func(limit, b, a int64) bool {
		if limit == Unlimited || limit == 0 {
			return false
		}
		t := limit * QuotaWarnPercent / 100
		return b < t && a >= t
	}
	return cross(q.Storage, before.Storage, after.Storage) || cross(q.Count, before.Count, after.Count)
}

// ImmutableRule makes matching tags immutable: once a tag exists it may
// not be moved to another digest or deleted. Repos and Tags are doublestar
// globs relative to the project ("**" matches everything); Exclude* turn
// the selection around (Harbor's "excluding").
type ImmutableRule struct {
	ID           uint64 `json:"id"`
	Repos        string `json:"repos"`
	Tags         string `json:"tags"`
	ExcludeRepos bool   `json:"exclude_repos,omitempty"`
	ExcludeTags  bool   `json:"exclude_tags,omitempty"`
	Disabled     bool   `json:"disabled,omitempty"`
}

// Validate checks r's globs.
func (r ImmutableRule) Validate() error {
	for _, g := range []string{r.Repos, r.Tags} {
		if !validGlob(g) {
			return invalidf("immutability rule glob %q is not valid", g)
		}
	}
	return nil
}

// validGlob reports whether g is a glob a rule may hold: not empty, at
// most maxGlob bytes, valid doublestar syntax.
func validGlob(g string) bool {
	return g != "" && len(g) <= maxGlob && doublestar.ValidatePattern(g)
}

// Matches reports whether r makes tag of repository repo (the full name,
// project included) immutable.
func (r ImmutableRule) Matches(repo, tag string) bool {
	if r.Disabled {
		return false
	}
	_, rel, _ := strings.Cut(repo, "/")
	if matchGlob(r.Repos, rel) == r.ExcludeRepos {
		return false
	}
	return matchGlob(r.Tags, tag) != r.ExcludeTags
}

// matchGlob matches like match, but an empty glob matches nothing.
func matchGlob(glob, s string) bool {
	if glob == "" {
		return false
	}
	return match(glob, s)
}

// Immutable returns the first rule of rules that makes repo:tag immutable.
// Accessory tags (cosign's) are never immutable: signing an immutable
// image must keep working.
func Immutable(rules []ImmutableRule, repo, tag string) (ImmutableRule, bool) {
	if _, ok := AccessoryOf(tag); ok {
		return ImmutableRule{}, false
	}
	for _, r := range rules {
		if r.Matches(repo, tag) {
			return r, true
		}
	}
	return ImmutableRule{}, false
}

// Project is a namespace of repositories with its access and policies.
type Project struct {
	ID      uint64 `json:"project_id"`
	Name    string `json:"name"`
	Public  bool   `json:"public"`
	Owner   string `json:"owner_name,omitempty"`
	Created int64  `json:"creation_time"` // unix nanoseconds
	Updated int64  `json:"update_time"`
	Quota   Quota  `json:"quota"`
	// Immutable are the tag immutability rules; NextRuleID numbers new ones.
	Immutable  []ImmutableRule `json:"immutable_rules,omitempty"`
	NextRuleID uint64          `json:"next_rule_id,omitempty"`
	// Retention is the tag retention policy (nil: none).
	Retention *RetentionPolicy `json:"retention,omitempty"`
}

// Validate checks p and its policies.
func (p Project) Validate() error {
	if err := ValidateProjectName(p.Name); err != nil {
		return err
	}
	if err := p.Quota.Validate(); err != nil {
		return err
	}
	if len(p.Immutable) > MaxImmutableRules {
		return invalidf("a project may have at most %d immutability rules", MaxImmutableRules)
	}
	for _, r := range p.Immutable {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	if p.Retention != nil {
		if err := p.Retention.Validate(); err != nil {
			return err
		}
	}
	return nil
}
