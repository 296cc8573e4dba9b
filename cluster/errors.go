package cluster

import (
	"errors"
	"fmt"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Errors returned by the cluster package. Errors that come from the content
// model (a missing manifest, a refused delete) wrap the oci sentinels instead
// (oci.ErrNotFound, oci.ErrDenied, ...), so that callers map them in one
// table. The errors a retry may cure wrap oci.ErrUnavailable (the registry
// answers 503).
var (
	// ErrNotLeader: a write or read-index request reached a node that is
	// not the Raft leader. Writes on a follower are forwarded, so callers
	// see it only when the leader changed under a forwarded request. It
	// wraps oci.ErrUnavailable.
	ErrNotLeader = fmt.Errorf("not the raft leader: %w", oci.ErrUnavailable)
	// ErrNoLeader: no leader is known (an election is running, or this node
	// is cut off from the majority). It wraps oci.ErrUnavailable.
	ErrNoLeader = fmt.Errorf("no raft leader: %w", oci.ErrUnavailable)
	// ErrClosed: the node has been closed. It wraps oci.ErrUnavailable.
	ErrClosed = fmt.Errorf("cluster node closed: %w", oci.ErrUnavailable)
	// ErrBadCommand: a command could not be decoded or breaks a rule that
	// apply checks (a malformed name, digest or tag, a payload that does not
	// match its digest). A rejected command changes no state.
	ErrBadCommand = errors.New("bad command")
	// ErrConfig: a Config is invalid.
	ErrConfig = errors.New("invalid cluster config")
	// ErrUnauthenticated: an internal API request did not carry a valid
	// signature of the cluster secret.
	ErrUnauthenticated = errors.New("cluster authentication failed")
	// ErrUnsafe: a membership change was refused because the voters left
	// could not form a quorum.
	ErrUnsafe = errors.New("membership change would lose quorum")
)

// Wire codes of errors that cross the internal API, so that a forwarded
// write fails on the follower exactly as it would on the leader.
const (
	codeNotFound    = "not_found"
	codeDenied      = "denied"
	codeBlobUnknown = "manifest_blob_unknown"
	codeBadCommand  = "bad_command"
	codeSuperseded  = "superseded"
	codePrecondFail = "precondition_failed"
	codeInvalid     = "invalid"
	codeNotLeader   = "not_leader"
	codeUnavailable = "unavailable"
	codeUnsafe      = "unsafe"
	codeExists      = "exists"
	codeQuota       = "quota_exceeded"
	codeImmutable   = "immutable"
	codeNoProject   = "no_project"
	codeInternal    = "internal"
)

// wireCode returns the wire code of err.
func wireCode(err error) string {
	switch {
	case errors.Is(err, ErrNotLeader):
		return codeNotLeader
	case errors.Is(err, oci.ErrUnavailable):
		return codeUnavailable
	case errors.Is(err, policy.ErrNoProject):
		return codeNoProject
	case errors.Is(err, oci.ErrNotFound):
		return codeNotFound
	case errors.Is(err, policy.ErrQuotaExceeded):
		return codeQuota
	case errors.Is(err, policy.ErrImmutable):
		return codeImmutable
	case errors.Is(err, oci.ErrDenied):
		return codeDenied
	case errors.Is(err, policy.ErrExists):
		return codeExists
	case errors.Is(err, oci.ErrManifestBlobUnknown):
		return codeBlobUnknown
	case errors.Is(err, ErrBadCommand):
		return codeBadCommand
	case errors.Is(err, oci.ErrSuperseded):
		return codeSuperseded
	case errors.Is(err, oci.ErrPreconditionFailed):
		return codePrecondFail
	case errors.Is(err, policy.ErrInvalid):
		return codeInvalid
	case errors.Is(err, ErrUnsafe):
		return codeUnsafe
	}
	return codeInternal
}

// remoteError is an error that came back over the internal API: its text
// is the remote node's, and it unwraps to the sentinel its code names (nil
// for an internal error).
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// fromWire rebuilds an error from its wire code and message.
func fromWire(code, msg string) error {
	var s error
	switch code {
	case codeNotFound:
		s = oci.ErrNotFound
	case codeDenied:
		s = oci.ErrDenied
	case codeBlobUnknown:
		s = oci.ErrManifestBlobUnknown
	case codeBadCommand:
		s = ErrBadCommand
	case codeSuperseded:
		s = oci.ErrSuperseded
	case codePrecondFail:
		s = oci.ErrPreconditionFailed
	case codeInvalid:
		s = policy.ErrInvalid
	case codeNotLeader:
		s = ErrNotLeader
	case codeUnavailable:
		s = oci.ErrUnavailable
	case codeUnsafe:
		s = ErrUnsafe
	case codeExists:
		s = policy.ErrExists
	case codeQuota:
		s = policy.ErrQuotaExceeded
	case codeImmutable:
		s = policy.ErrImmutable
	case codeNoProject:
		s = policy.ErrNoProject
	}
	return &remoteError{msg: msg, sentinel: s}
}
