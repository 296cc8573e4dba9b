package registry

import (
	"context"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// StateReader reads the last applied metadata state of this node. It never
// waits for Raft, so pulls keep working without quorum. Lookups of something
// absent return an error wrapping oci.ErrNotFound.
type StateReader interface {
	// Manifest returns the record and the exact bytes of a manifest.
	Manifest(ctx context.Context, repo string, dgst oci.Digest) (oci.Record, []byte, error)
	// Tag resolves a tag to the digest it points to.
	Tag(ctx context.Context, repo, tag string) (oci.Digest, error)
	// BlobLinked reports whether the blob was uploaded or mounted into repo,
	// or is referenced by one of its manifests.
	BlobLinked(ctx context.Context, repo string, dgst oci.Digest) (bool, error)
	// TagVersion returns the version of repo:tag (see oci.TagVersion), or
	// with found false that of its tombstone when it was deleted (zero when
	// it never existed).
	TagVersion(ctx context.Context, repo, tag string) (v oci.TagVersion, found bool, err error)
}

// Lister pages through tags, repositories and referrers, each in lexical
// order, returning at most n entries strictly after last.
type Lister interface {
	Tags(ctx context.Context, repo, last string, n int) ([]string, error)
	Repositories(ctx context.Context, last string, n int) ([]string, error)
	// Referrers lists the manifests in repo whose subject is dgst.
	Referrers(ctx context.Context, repo string, subject oci.Digest) ([]oci.Descriptor, error)
}

// StateWriter changes metadata through Raft. Each call returns once the change
// is committed and applied on this node, or fails; a failure that a retry may
// cure (no leader, no quorum) wraps oci.ErrUnavailable.
type StateWriter interface {
	// PutManifest stores a manifest and, when tag is not empty, points tag
	// at it. A zero v is a local write, which the state versions itself; a
	// replicated write carries the version it had at its origin and is
	// refused with oci.ErrSuperseded when the tag holds a newer one.
	PutManifest(ctx context.Context, rec oci.Record, payload []byte, tag string, v oci.TagVersion) error
	// DeleteManifest removes a manifest and every tag pointing at it.
	DeleteManifest(ctx context.Context, repo string, dgst oci.Digest) error
	// DeleteTag removes one tag; the manifest stays. A non-empty ifDigest
	// makes it conditional (oci.ErrPreconditionFailed when the tag points
	// elsewhere); a non-zero v is a replicated delete (oci.ErrSuperseded
	// when the tag holds a newer version).
	DeleteTag(ctx context.Context, repo, tag string, v oci.TagVersion, ifDigest oci.Digest) error
	// LinkBlob records that a complete, durable blob belongs to repo.
	LinkBlob(ctx context.Context, repo string, dgst oci.Digest, size int64) error
	// UnlinkBlob removes repo's upload link of a blob (a blob DELETE). The
	// blob stays visible in repo while one of its manifests references it;
	// GC reclaims the file once nothing does.
	UnlinkBlob(ctx context.Context, repo string, dgst oci.Digest) error
}

// GCState is what garbage collection needs from the state machine.
type GCState interface {
	// LiveBlobs returns every blob digest that a committed manifest
	// references (configs and layers), or that a repository linked at or
	// after since (zero: at any time).
	LiveBlobs(ctx context.Context, since time.Time) (map[oci.Digest]struct{}, error)
	// UnlinkBlobs forgets the repository links of blobs that were made
	// before before, skipping any blob that a manifest references by the
	// time it applies. GC calls it before it deletes the files, so that no
	// manifest can commit against a blob being deleted.
	UnlinkBlobs(ctx context.Context, dgsts []oci.Digest, before time.Time) error
}

// State is everything the registry needs from the state machine; cmd passes
// a *cluster.Node.
type State interface {
	StateReader
	Lister
	StateWriter
	GCState
}

// QuotaGate is implemented by a state that knows projects' quotas: an
// upload into a project already at its limit is refused when it starts
// (policy.ErrQuotaExceeded), before its layers are sent. The exact check
// is the state's own, when the manifest is put.
type QuotaGate interface {
	CheckQuota(ctx context.Context, repo string) error
}

// PullRecorder is implemented by a state that counts pulls: it is told of
// every successful manifest GET (not HEAD), with the digest served, for
// the audit log and retention's "pulled" rules. It must not block.
type PullRecorder interface {
	RecordPull(repo string, d oci.Digest, actor policy.Actor)
}
