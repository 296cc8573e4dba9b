package policy

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/berth-registry/berth/oci"
)

// The model of replication between registries: endpoints (where to),
// rules (what and when), executions and tasks (what was done). The state
// machine stores them; replicate runs them. See DESIGN.md, "Replication
// between registries".

// Endpoint types.
const (
	// EndpointBerth is another berth cluster: tag versions travel with
	// each write, so that dual-master pairs converge.
	EndpointBerth = "berth"
	// EndpointOCI is any registry that speaks the OCI Distribution API.
	EndpointOCI = "oci"
)

// Triggers of a rule.
const (
	TriggerManual = "manual" // only when someone runs it
	TriggerEvent  = "event"  // every push and delete, from the state machine's outbox
	TriggerCron   = "cron"   // on a schedule (Rule.Cron)
)

// Triggers of an execution that are not rule triggers.
const (
	// TriggerReconcile is the periodic comparison of source and destination.
	TriggerReconcile = "reconcile"
)

// Task kinds.
const (
	TaskCopy   = "copy"   // copy Digest (and its accessories) to DestRepo, then point Tag at it
	TaskDelete = "delete" // remove Tag (or, without a tag, Digest) at DestRepo while it is still Digest
)

// Task statuses. Pending, running and retrying are active; the others are
// final.
const (
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusRetrying  = "retrying"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusStopped   = "stopped"
)

// Execution statuses.
const (
	ExecRunning   = "running"
	ExecSucceeded = "succeeded"
	ExecFailed    = "failed"
	ExecStopped   = "stopped"
)

// Bounds of the model, checked by Validate (and so by the state machine).
const (
	MaxName        = 64
	maxURL         = 2048
	maxGlob        = 1024
	maxCredential  = 4096
	MaxConcurrency = 64
	MaxError       = 2048
)

// ErrInvalid wraps every validation failure of this model.
var ErrInvalid = errors.New("invalid")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)

// ValidateName checks the name of an endpoint or a rule: 1 to 64
// lowercase letters, digits, '.', '_' and '-', starting and ending with a
// letter or digit.
func ValidateName(kind, name string) error {
	if len(name) > MaxName || !nameRE.MatchString(name) {
		return invalidf("%s name %q: use 1 to %d lowercase letters, digits, '.', '_' or '-'", kind, name, MaxName)
	}
	return nil
}

// Endpoint is a remote registry that rules replicate to.
type Endpoint struct {
	Name     string `json:"name"`
	URL      string `json:"url"`                // scheme and host, optionally a port; no path
	Type     string `json:"type"`               // EndpointBerth or EndpointOCI
	Insecure bool   `json:"insecure,omitempty"` // skip TLS verification
	User     string `json:"user,omitempty"`
	// Secret is the password sealed with the cluster's credential key
	// (replicate seals and opens it). It is never shown by the API.
	Secret  []byte `json:"secret,omitempty"`
	Created int64  `json:"created"` // unix nanoseconds
	Updated int64  `json:"updated"`
}

// Validate checks e's fields.
func (e Endpoint) Validate() error {
	if err := ValidateName("endpoint", e.Name); err != nil {
		return err
	}
	if len(e.URL) > maxURL {
		return invalidf("endpoint url longer than %d bytes", maxURL)
	}
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalidf("endpoint url %q: want http(s)://host[:port]", e.URL)
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return invalidf("endpoint url %q: give only the scheme and host (credentials go in --user and --password)", e.URL)
	}
	switch e.Type {
	case EndpointBerth, EndpointOCI:
	default:
		return invalidf("endpoint type %q: want %s or %s", e.Type, EndpointBerth, EndpointOCI)
	}
	if len(e.User) > maxCredential || len(e.Secret) > 2*maxCredential {
		return invalidf("endpoint credentials too long")
	}
	return nil
}

// Rule is a replication policy: which artifacts go to which endpoint,
// when, and how.
type Rule struct {
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	// Repos and Tags select artifacts by doublestar globs ("**" crosses
	// '/', "{a,b}" is either); empty selects all. ExcludeRepos and
	// ExcludeTags remove from the selection.
	Repos        string `json:"repos,omitempty"`
	Tags         string `json:"tags,omitempty"`
	ExcludeRepos string `json:"exclude_repos,omitempty"`
	ExcludeTags  string `json:"exclude_tags,omitempty"`
	// OnlySigned copies only artifacts that carry a cosign signature.
	OnlySigned bool `json:"only_signed,omitempty"`
	// DestPrefix is put in front of the repository at the destination;
	// Flatten first drops that many leading components of it (-1: all
	// but the last).
	DestPrefix string `json:"dest_prefix,omitempty"`
	Flatten    int    `json:"flatten,omitempty"`
	Trigger    string `json:"trigger"`
	Cron       string `json:"cron,omitempty"` // with TriggerCron: a cron spec (robfig/cron, 5 fields or a descriptor like @hourly)
	// Delete propagates deletions; Override lets a copy move a tag that
	// points elsewhere at the destination.
	Delete   bool `json:"delete,omitempty"`
	Override bool `json:"override,omitempty"`
	// Bandwidth bounds the bytes per second of this rule's copies on each
	// node (0: no bound); Concurrency the tasks it runs at once in the
	// cluster (0: DefaultConcurrency).
	Bandwidth   int64 `json:"bandwidth,omitempty"`
	Concurrency int   `json:"concurrency,omitempty"`
	Enabled     bool  `json:"enabled"`
	Created     int64 `json:"created"`
	Updated     int64 `json:"updated"`
}

// DefaultConcurrency is a rule's concurrency when it sets none.
const DefaultConcurrency = 4

// Validate checks r's fields; the cron spec is parsed by replicate.
func (r Rule) Validate() error {
	if err := ValidateName("policy", r.Name); err != nil {
		return err
	}
	if err := ValidateName("endpoint", r.Endpoint); err != nil {
		return err
	}
	for _, g := range []struct{ what, glob string }{
		{"repos", r.Repos}, {"tags", r.Tags}, {"exclude-repos", r.ExcludeRepos}, {"exclude-tags", r.ExcludeTags},
	} {
		if len(g.glob) > maxGlob {
			return invalidf("%s glob longer than %d bytes", g.what, maxGlob)
		}
		if g.glob != "" && !doublestar.ValidatePattern(g.glob) {
			return invalidf("%s glob %q is not valid", g.what, g.glob)
		}
	}
	if r.DestPrefix != "" {
		if err := oci.ValidateName(strings.Trim(r.DestPrefix, "/")); err != nil || strings.Trim(r.DestPrefix, "/") != r.DestPrefix {
			return invalidf("dest-prefix %q must be a repository path like team/mirror", r.DestPrefix)
		}
	}
	if r.Flatten < -1 || r.Flatten > 16 {
		return invalidf("flatten %d: want -1 (all) or 0 to 16", r.Flatten)
	}
	switch r.Trigger {
	case TriggerManual, TriggerEvent:
		if r.Cron != "" {
			return invalidf("a cron spec needs trigger %s", TriggerCron)
		}
	case TriggerCron:
		if r.Cron == "" || len(r.Cron) > 256 {
			return invalidf("trigger cron needs a spec of at most 256 bytes")
		}
	default:
		return invalidf("trigger %q: want manual, event or cron:'SPEC'", r.Trigger)
	}
	if r.Bandwidth < 0 {
		return invalidf("negative bandwidth")
	}
	if r.Concurrency < 0 || r.Concurrency > MaxConcurrency {
		return invalidf("concurrency %d: want 1 to %d", r.Concurrency, MaxConcurrency)
	}
	return nil
}

// MaxConcurrent is the number of r's tasks that may run at once.
func (r Rule) MaxConcurrent() int {
	if r.Concurrency <= 0 {
		return DefaultConcurrency
	}
	return r.Concurrency
}

// match reports whether s matches glob (empty: everything). An invalid
// glob matches nothing; Validate refuses it before it is stored.
func match(glob, s string) bool {
	if glob == "" {
		return true
	}
	ok, err := doublestar.Match(glob, s)
	return err == nil && ok
}

// MatchRepo reports whether r selects repository repo.
func (r Rule) MatchRepo(repo string) bool {
	return match(r.Repos, repo) && (r.ExcludeRepos == "" || !match(r.ExcludeRepos, repo))
}

// MatchTag reports whether r selects tag. Accessory tags (cosign's
// sha256-<hex>.sig and the like) are never selected by themselves: they
// travel with their subject.
func (r Rule) MatchTag(tag string) bool {
	if _, ok := AccessoryOf(tag); ok {
		return false
	}
	return match(r.Tags, tag) && (r.ExcludeTags == "" || !match(r.ExcludeTags, tag))
}

// Match reports whether r selects repo:tag.
func (r Rule) Match(repo, tag string) bool {
	return r.MatchRepo(repo) && r.MatchTag(tag)
}

// DestRepo maps a source repository to its name at the destination:
// Flatten leading components dropped, then DestPrefix put in front.
func (r Rule) DestRepo(repo string) string {
	parts := strings.Split(repo, "/")
	n := r.Flatten
	if n < 0 || n >= len(parts) {
		n = len(parts) - 1
	}
	out := strings.Join(parts[n:], "/")
	if r.DestPrefix != "" {
		out = r.DestPrefix + "/" + out
	}
	return out
}

// accessoryRE matches the tags of cosign's tag schema, and of the OCI 1.1
// referrers fallback: sha256-<hex>, optionally with .sig, .att or .sbom.
var accessoryRE = regexp.MustCompile(`^sha256-([0-9a-f]{64})(\.sig|\.att|\.sbom)?$`)

// AccessorySuffixes are the cosign tag suffixes that travel with a subject.
var AccessorySuffixes = []string{".sig", ".att", ".sbom"}

// AccessoryOf returns the subject of an accessory tag (cosign's
// sha256-<hex>.sig, .att, .sbom, or the referrers fallback tag
// sha256-<hex>), and whether tag is one.
func AccessoryOf(tag string) (oci.Digest, bool) {
	m := accessoryRE.FindStringSubmatch(tag)
	if m == nil {
		return "", false
	}
	return oci.Digest("sha256:" + m[1]), true
}

// AccessoryTag returns the accessory tag of subject d with suffix ("" for
// the referrers fallback tag).
func AccessoryTag(d oci.Digest, suffix string) string {
	return strings.Replace(string(d), ":", "-", 1) + suffix
}

// Task is one artifact to copy to, or delete at, one destination.
type Task struct {
	ID        uint64 `json:"id"`
	Execution uint64 `json:"execution"`
	Policy    string `json:"policy"`
	Endpoint  string `json:"endpoint"`
	Kind      string `json:"kind"` // TaskCopy or TaskDelete
	Repo      string `json:"repo"` // at the source
	// Tag is the tag to set (copy) or remove (delete); "" for an artifact
	// addressed by digest only.
	Tag      string     `json:"tag,omitempty"`
	Digest   oci.Digest `json:"digest"`
	DestRepo string     `json:"dest_repo"`
	// Version is the tag's version at the source when the task was made
	// (the tombstone's, for a delete); sent to berth endpoints.
	Version oci.TagVersion `json:"version,omitzero"`

	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	Bytes    int64  `json:"bytes"`
	Error    string `json:"error,omitempty"`
	// Note says why a task that did nothing succeeded (already present,
	// superseded, skipped as unsigned).
	Note string `json:"note,omitempty"`

	Created     int64 `json:"created"` // unix nanoseconds
	Started     int64 `json:"started,omitempty"`
	Finished    int64 `json:"finished,omitempty"`
	NextAttempt int64 `json:"next_attempt,omitempty"` // retrying: not claimed before

	// Owner is the node holding the task's lease, Claim the claim that
	// took it (only that claim's updates count), LeaseUntil when another
	// node may take it over.
	Owner      string `json:"owner,omitempty"`
	Claim      string `json:"claim,omitempty"`
	LeaseUntil int64  `json:"lease_until,omitempty"`
}

// Active reports whether t is not final.
func (t Task) Active() bool {
	switch t.Status {
	case StatusPending, StatusRunning, StatusRetrying:
		return true
	}
	return false
}

// Ref is the reference t works on at the source: the tag, else the digest.
func (t Task) Ref() string {
	if t.Tag != "" {
		return t.Tag
	}
	return string(t.Digest)
}

// TaskUpdate is what a worker reports about a task it holds.
type TaskUpdate struct {
	ID    uint64 `json:"id"`
	Claim string `json:"claim"`
	// Status is running (a lease renewal or progress), retrying (with
	// NextAttempt), succeeded or failed.
	Status      string `json:"status"`
	Bytes       int64  `json:"bytes,omitempty"`
	Error       string `json:"error,omitempty"`
	Note        string `json:"note,omitempty"`
	NextAttempt int64  `json:"next_attempt,omitempty"`
	LeaseUntil  int64  `json:"lease_until,omitempty"`
}

// Execution is one run of a rule: by an event, by hand, by its schedule,
// or by reconciliation. The state machine keeps its counts as its tasks
// change.
type Execution struct {
	ID       uint64 `json:"id"`
	Policy   string `json:"policy"`
	Trigger  string `json:"trigger"`
	Status   string `json:"status"`
	Created  int64  `json:"created"`
	Finished int64  `json:"finished,omitempty"`

	Total     int   `json:"total"`
	Pending   int   `json:"pending"` // pending and retrying
	Running   int   `json:"running"`
	Succeeded int   `json:"succeeded"`
	Failed    int   `json:"failed"`
	Stopped   int   `json:"stopped"`
	Bytes     int64 `json:"bytes"`
}

// Tombstone is a deleted tag, kept for a while with the version of its
// delete so that an older write arriving later cannot bring it back.
type Tombstone struct {
	Repo    string         `json:"repo"`
	Tag     string         `json:"tag"`
	Digest  oci.Digest     `json:"digest"` // what the tag pointed to when deleted
	Version oci.TagVersion `json:"version"`
	Time    int64          `json:"time"` // unix nanoseconds of the delete
}
