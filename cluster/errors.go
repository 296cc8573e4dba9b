package cluster

import (
	"errors"
	"fmt"

	"github.com/berth-registry/berth/oci"
)

// Errors returned by the cluster package. Errors that come from the content
// model (a missing manifest, a refused delete) wrap the oci sentinels instead
// (oci.ErrNotFound, oci.ErrDenied, ...), so that callers map them in one
// table. The errors a retry may cure wrap oci.ErrUnavailable (the registry
// answers 503).
var (
	// ErrNotLeader: a write reached a node that is not the Raft leader.
	// A one-node cluster is always its own leader; with several nodes the
	// write is forwarded to the leader (the clustering work), and until it
	// is, the caller may retry on the leader. It wraps oci.ErrUnavailable.
	ErrNotLeader = fmt.Errorf("not the raft leader: %w", oci.ErrUnavailable)
	// ErrClosed: the node has been closed. It wraps oci.ErrUnavailable.
	ErrClosed = fmt.Errorf("cluster node closed: %w", oci.ErrUnavailable)
	// ErrBadCommand: a command could not be decoded or breaks a rule that
	// apply checks (a malformed name, digest or tag, a payload that does not
	// match its digest). A rejected command changes no state.
	ErrBadCommand = errors.New("bad command")
	// ErrConfig: a Config is invalid.
	ErrConfig = errors.New("invalid cluster config")
)
