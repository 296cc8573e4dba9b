package retention

import (
	"context"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Catalog reads what retention decides on, from the local applied state.
// Lookups of something absent wrap oci.ErrNotFound.
type Catalog interface {
	// Projects pages through projects by name, strictly after last.
	Projects(ctx context.Context, last string, n int) ([]policy.Project, error)
	Project(ctx context.Context, name string) (policy.Project, error)
	// ProjectRepositories pages through the repositories of project: full
	// names, strictly after last (a name relative to the project).
	ProjectRepositories(ctx context.Context, project, last string, n int) ([]string, error)
	// Artifacts lists the manifests of repo with their tags, push and
	// pull times, immutability and, for an index, its children
	// (oci.ErrNotFound: no manifests).
	Artifacts(ctx context.Context, repo string) ([]policy.Artifact, error)
}

// Deleter deletes artifacts. The actor of ctx (policy.WithActor) is
// recorded in the audit log.
type Deleter interface {
	// DeleteManifest removes repo@d and every tag pointing at it. It
	// fails with oci.ErrNotFound when absent and wraps oci.ErrDenied when
	// refused (an index lists it, an immutable tag points at it).
	DeleteManifest(ctx context.Context, repo string, d oci.Digest) error
}

// RunStore records retention runs.
type RunStore interface {
	// PutRetentionRun records a run or its progress (by project and id).
	PutRetentionRun(ctx context.Context, run policy.RetentionRun) error
	// RetentionRuns returns the newest n runs of project, newest first.
	RetentionRuns(ctx context.Context, project string, n int) ([]policy.RetentionRun, error)
}

// Leadership tells the scheduler whether this node leads its cluster:
// only the leader starts scheduled runs.
type Leadership interface {
	IsLeader() bool
}

// Store is everything a Runner needs from the state machine; cmd passes a
// *cluster.Node.
type Store interface {
	Catalog
	Deleter
	RunStore
	Leadership
}
