package policy

import (
	"cmp"
	"math"
	"slices"
	"strconv"

	"github.com/robfig/cron/v3"

	"github.com/berth-registry/berth/oci"
)

// Tag retention, as Harbor has it: a project's rules name what to keep;
// in every repository that at least one rule applies to, each artifact
// that no rule keeps is deleted, with its accessories. Rules are ORed.

// Retention rule kinds (Harbor's templates).
const (
	RetainLatestPushed   = "latestPushedK"      // the K most recently pushed
	RetainLatestPulled   = "latestPulledN"      // the N most recently pulled
	RetainPushedWithin   = "nDaysSinceLastPush" // pushed within N days
	RetainPulledWithin   = "nDaysSinceLastPull" // pulled within N days
	RetainAlways         = "always"             // every selected artifact
	maxRetentionParam    = 1 << 20
	maxRetentionSchedule = 256
)

// day in nanoseconds.
const day = int64(24 * 60 * 60 * 1e9)

// RetentionRule keeps some artifacts of the repositories it selects.
type RetentionRule struct {
	Kind string `json:"kind"`
	// Param is K, N or the number of days; unused by always.
	Param int `json:"param,omitempty"`
	// Repos and Tags are doublestar globs: Repos relative to the project
	// ("**" every repository), Tags on the artifact's tags. With
	// ExcludeRepos or ExcludeTags they select what does not match.
	Repos        string `json:"repos"`
	ExcludeRepos bool   `json:"exclude_repos,omitempty"`
	Tags         string `json:"tags"`
	ExcludeTags  bool   `json:"exclude_tags,omitempty"`
	// Untagged: artifacts without tags are selected by this rule too.
	Untagged bool `json:"untagged,omitempty"`
	Disabled bool `json:"disabled,omitempty"`
}

// RetentionPolicy is a project's retention rules and schedule.
type RetentionPolicy struct {
	Rules []RetentionRule `json:"rules"`
	// Schedule is a cron spec (5 fields or a descriptor like @daily); ""
	// runs only by hand.
	Schedule string `json:"schedule,omitempty"`
}

// Validate checks the rules and the schedule.
func (p RetentionPolicy) Validate() error {
	if len(p.Rules) > MaxRetentionRules {
		return invalidf("a project may have at most %d retention rules", MaxRetentionRules)
	}
	for i, r := range p.Rules {
		if err := r.Validate(); err != nil {
			return invalidf("retention rule %d: %v", i+1, err)
		}
	}
	if p.Schedule != "" {
		if len(p.Schedule) > maxRetentionSchedule {
			return invalidf("retention schedule longer than %d bytes", maxRetentionSchedule)
		}
		if _, err := ParseSchedule(p.Schedule); err != nil {
			return invalidf("retention schedule %q: %v", p.Schedule, err)
		}
	}
	return nil
}

// ParseSchedule parses a cron spec: five fields, or a descriptor such as
// @daily or @every 6h.
func ParseSchedule(spec string) (cron.Schedule, error) {
	return cron.ParseStandard(spec)
}

// Validate checks one rule.
func (r RetentionRule) Validate() error {
	switch r.Kind {
	case RetainLatestPushed, RetainLatestPulled, RetainPushedWithin, RetainPulledWithin:
		if r.Param < 0 || r.Param > maxRetentionParam {
			return invalidf("%s needs a count from 0 to %d", r.Kind, maxRetentionParam)
		}
	case RetainAlways:
	default:
		return invalidf("kind %q: want %s, %s, %s, %s or %s", r.Kind,
			RetainLatestPushed, RetainLatestPulled, RetainPushedWithin, RetainPulledWithin, RetainAlways)
	}
	for _, g := range []string{r.Repos, r.Tags} {
		if !validGlob(g) {
			return invalidf("glob %q is not valid", g)
		}
	}
	return nil
}

// String describes r for listings: "latestPushedK(3) repos=** tags=v*".
func (r RetentionRule) String() string {
	s := r.Kind
	if r.Kind != RetainAlways {
		s += "(" + strconv.Itoa(r.Param) + ")"
	}
	neg := func(b bool) string {
		if b {
			return "!"
		}
		return ""
	}
	s += " repos=" + neg(r.ExcludeRepos) + r.Repos + " tags=" + neg(r.ExcludeTags) + r.Tags
	if r.Untagged {
		s += " +untagged"
	}
	return s
}

// selectsRepo reports whether r applies to repository rel (relative to
// the project).
func (r RetentionRule) selectsRepo(rel string) bool {
	return !r.Disabled && matchGlob(r.Repos, rel) != r.ExcludeRepos
}

// selectsArtifact reports whether r's tag filter selects a.
func (r RetentionRule) selectsArtifact(a Artifact) bool {
	if len(a.Tags) == 0 {
		return r.Untagged
	}
	for _, t := range a.Tags {
		if matchGlob(r.Tags, t) != r.ExcludeTags {
			return true
		}
	}
	return false
}

// Artifact is one manifest of a repository, as retention sees it.
// Accessories (signatures, attestations, SBOMs, referrers) are not
// artifacts of their own here: they stay and go with their subject.
type Artifact struct {
	Repo   string     `json:"repo"`
	Digest oci.Digest `json:"digest"`
	Tags   []string   `json:"tags,omitempty"`
	Pushed int64      `json:"push_time"`           // unix nanoseconds
	Pulled int64      `json:"pull_time,omitempty"` // 0: never pulled
	Size   int64      `json:"size,omitempty"`
	// MediaType and ArtifactType are the manifest's; Subject is set for
	// an accessory (a referrer).
	MediaType    string     `json:"media_type,omitempty"`
	ArtifactType string     `json:"artifact_type,omitempty"`
	Subject      oci.Digest `json:"subject,omitempty"`
	PullCount    int64      `json:"pull_count,omitempty"`
	// Children are the manifests an index lists (not shown: they are
	// artifacts of their own).
	Children []oci.Digest `json:"-"`
	// Immutable: one of its tags is immutable; it is always kept.
	Immutable bool `json:"immutable,omitempty"`
}

// RetentionDecision is the outcome for one artifact.
type RetentionDecision struct {
	Artifact
	Retain bool `json:"retain"`
	// Reason is the rule that keeps it ("immutable" for immutable
	// artifacts), or why it goes.
	Reason string `json:"reason"`
}

// Evaluate decides, for the artifacts of one repository (project-relative
// name rel), which to keep at now (unix nanoseconds). It returns nil when
// no rule applies to the repository: then nothing in it is touched. Each
// rule keeps what it selects and its kind keeps; everything else goes.
// Ties in time are broken by digest, so the result is deterministic.
func (p RetentionPolicy) Evaluate(rel string, arts []Artifact, now int64) []RetentionDecision {
	var rules []RetentionRule
	for _, r := range p.Rules {
		if r.selectsRepo(rel) {
			rules = append(rules, r)
		}
	}
	if len(rules) == 0 {
		return nil
	}
	kept := make(map[oci.Digest]string, len(arts))
	for _, r := range rules {
		var sel []Artifact
		for _, a := range arts {
			if r.selectsArtifact(a) {
				sel = append(sel, a)
			}
		}
		for _, a := range r.keep(sel, now) {
			if _, ok := kept[a.Digest]; !ok {
				kept[a.Digest] = r.String()
			}
		}
	}
	out := make([]RetentionDecision, 0, len(arts))
	for _, a := range arts {
		d := RetentionDecision{Artifact: a}
		switch reason, ok := kept[a.Digest]; {
		case a.Immutable:
			d.Retain, d.Reason = true, "immutable"
		case ok:
			d.Retain, d.Reason = true, reason
		default:
			d.Reason = "no rule retains it"
		}
		out = append(out, d)
	}
	return out
}

// keep returns the artifacts of sel that r's kind keeps.
func (r RetentionRule) keep(sel []Artifact, now int64) []Artifact {
	byTime := func(t func(Artifact) int64) []Artifact {
		s := slices.Clone(sel)
		slices.SortFunc(s, func(a, b Artifact) int {
			if c := cmp.Compare(t(b), t(a)); c != 0 {
				return c
			}
			return cmp.Compare(a.Digest, b.Digest)
		})
		return s
	}
	switch r.Kind {
	case RetainAlways:
		return sel
	case RetainLatestPushed:
		s := byTime(func(a Artifact) int64 { return a.Pushed })
		return s[:min(r.Param, len(s))]
	case RetainLatestPulled:
		// Never-pulled artifacts are kept only when fewer than N were.
		s := byTime(func(a Artifact) int64 { return a.Pulled })
		return s[:min(r.Param, len(s))]
	case RetainPushedWithin, RetainPulledWithin:
		// A period reaching back before the epoch keeps everything; the
		// product must not overflow (Param may be up to 2^20 days).
		cutoff := int64(math.MinInt64)
		if n := int64(r.Param); n <= now/day {
			cutoff = now - n*day
		}
		var out []Artifact
		for _, a := range sel {
			t := a.Pushed
			if r.Kind == RetainPulledWithin {
				t = a.Pulled
			}
			if t != 0 && t >= cutoff {
				out = append(out, a)
			}
		}
		return out
	}
	return nil
}

// Retention run statuses.
const (
	RunRunning   = "running"
	RunSucceeded = "succeeded"
	RunFailed    = "failed"
)

// MaxRunDecisions bounds the decisions a retention run keeps for display.
const MaxRunDecisions = 1000

// RetentionRun is one run of a project's retention policy, manual or
// scheduled, real or dry.
type RetentionRun struct {
	ID       uint64 `json:"id"`
	Project  string `json:"project"`
	DryRun   bool   `json:"dry_run"`
	Trigger  string `json:"trigger"` // manual or schedule
	Status   string `json:"status"`
	Started  int64  `json:"start_time"`
	Finished int64  `json:"end_time,omitempty"`
	// Retained and Deleted count artifacts (deleted: would be, in a dry
	// run); Decisions lists the first MaxRunDecisions, deletions first.
	Retained  int                 `json:"retained"`
	Deleted   int                 `json:"deleted"`
	Decisions []RetentionDecision `json:"decisions,omitempty"`
	Error     string              `json:"error,omitempty"`
}
