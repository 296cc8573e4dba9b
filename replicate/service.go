package replicate

import (
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The views of replication that the management API shows and takes. The
// engine's methods that return them are what api.Replication declares.

// EndpointSpec creates or replaces an endpoint. Password is sealed before it
// is stored and never shown again.
type EndpointSpec struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	Type     string `json:"type,omitempty"` // default policy.EndpointBerth
	Insecure bool   `json:"insecure,omitempty"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// SkipCheck stores the endpoint without the connectivity check.
	SkipCheck bool `json:"skip_check,omitempty"`
}

// EndpointView is an endpoint as the API shows it: never its password.
type EndpointView struct {
	Name        string `json:"name"`
	URL         string `json:"url"`
	Type        string `json:"type"`
	Insecure    bool   `json:"insecure,omitempty"`
	User        string `json:"user,omitempty"`
	HasPassword bool   `json:"has_password"`
	Created     int64  `json:"created"`
	Updated     int64  `json:"updated"`
	// Health is the last connectivity check this node made.
	Health Health `json:"health"`
}

// Health is the result of a connectivity check of an endpoint.
type Health struct {
	Reachable bool   `json:"reachable"`
	Checked   int64  `json:"checked,omitempty"` // unix nanoseconds; 0: never
	LatencyMS int64  `json:"latency_ms,omitempty"`
	Error     string `json:"error,omitempty"`
	// Referrers says whether the endpoint serves the OCI 1.1 referrers API.
	Referrers bool `json:"referrers,omitempty"`
}

// Artifact states at one destination.
const (
	StatePresent = "present" // the destination has it, with its signatures
	StatePending = "pending" // a task is queued, running or retrying
	StateFailed  = "failed"  // the last task failed for good
	StateMissing = "missing" // not there and nothing queued (reconciliation will queue it)
)

// DestinationStatus is where one artifact stands at one destination.
type DestinationStatus struct {
	Policy   string `json:"policy"`
	Endpoint string `json:"endpoint"`
	DestRepo string `json:"dest_repo"`
	State    string `json:"state"`
	// Reason says why it is not present (the task's error, what differs).
	Reason string       `json:"reason,omitempty"`
	Task   *policy.Task `json:"task,omitempty"`
	// Digest is what the destination's reference points to ("" absent).
	Digest oci.Digest `json:"digest,omitempty"`
}

// ArtifactStatus is where one artifact stands at every destination whose
// enabled policy selects it.
type ArtifactStatus struct {
	Repo         string              `json:"repo"`
	Reference    string              `json:"reference"`
	Digest       oci.Digest          `json:"digest"`
	Destinations []DestinationStatus `json:"destinations"`
}

// PromoteRequest copies an artifact by digest, with its accessories, to
// another repository of this registry or, with Endpoint, of a remote one.
// The caller has verified its signature (berth promote does, with cosign).
type PromoteRequest struct {
	SourceRepo string     `json:"source_repo"`
	Digest     oci.Digest `json:"digest"`
	DestRepo   string     `json:"dest_repo"`
	DestTag    string     `json:"dest_tag"`
	Endpoint   string     `json:"endpoint,omitempty"`
}

// PromoteResult is what a promotion did.
type PromoteResult struct {
	Digest oci.Digest `json:"digest"`
	Bytes  int64      `json:"bytes"`
	Note   string     `json:"note,omitempty"`
}
