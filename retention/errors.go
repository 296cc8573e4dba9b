package retention

import (
	"errors"
	"fmt"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Errors of retention runs, besides the shared ones they wrap
// (oci.ErrNotFound for an unknown project, oci.ErrUnavailable when the
// cluster cannot write now).
var (
	// ErrRunning: a run of the project is in progress; runs of one
	// project never overlap. It wraps oci.ErrDenied.
	ErrRunning = fmt.Errorf("a retention run of this project is in progress: %w", oci.ErrDenied)
	// ErrNoPolicy: the project has no retention rules to run. It wraps
	// policy.ErrInvalid.
	ErrNoPolicy = fmt.Errorf("the project has no retention rules: %w", policy.ErrInvalid)
	// ErrRefused: the state refused some deletions of a run (an
	// immutability rule or an index that appeared since the run read the
	// repository); the run went on with the rest and failed.
	ErrRefused = errors.New("deletions refused")
)
