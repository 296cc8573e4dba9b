package replicate

import "errors"

// Errors of the replication engine, besides the shared ones it wraps
// (oci.ErrNotFound for an unknown endpoint, policy, execution or artifact;
// policy.ErrInvalid for a bad spec; oci.ErrDenied for a refused change;
// oci.ErrUnavailable when the cluster cannot write now).
var (
	// ErrUnreachable: an endpoint did not answer its connectivity check
	// (or refused its credentials) when it was added.
	ErrUnreachable = errors.New("endpoint not reachable")
)
