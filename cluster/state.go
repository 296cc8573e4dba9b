package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// caughtUpNow is called by a read that found nothing: it catches up with
// the leader (see catchUp) and reports whether the read should look again.
// When the leader cannot be reached the read answers from the local state.
// When the leader answered but this node could not apply what it lacks
// within ReadIndexTimeout (Raft backs off, for seconds, its replication to
// a follower it could not reach), "not found" could be false: *err becomes
// the catch-up's error, which wraps oci.ErrUnavailable.
func (n *Node) caughtUpNow(ctx context.Context, err *error) bool {
	cerr := n.catchUp(ctx)
	switch {
	case cerr == nil:
		return true
	case errors.Is(cerr, errBehind):
		*err = cerr
	default:
		n.logger.Debug("not-found read answered from local state", "error", cerr)
	}
	return false
}

// unlinkChunk bounds the digests of one unlink_blobs command, so that a
// large GC sweep does not become one huge log entry.
const unlinkChunk = 1000

// Manifest returns the record and exact bytes of repo@dgst from the local
// applied state.
func (n *Node) Manifest(ctx context.Context, repo string, dgst oci.Digest) (oci.Record, []byte, error) {
	if err := ctx.Err(); err != nil {
		return oci.Record{}, nil, err
	}
	rec, b, err := n.fsm.manifest(repo, dgst)
	if errors.Is(err, oci.ErrNotFound) && n.caughtUpNow(ctx, &err) {
		rec, b, err = n.fsm.manifest(repo, dgst)
	}
	return rec, b, err
}

// Tag resolves repo:tag from the local applied state.
func (n *Node) Tag(ctx context.Context, repo, tag string) (oci.Digest, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	d, err := n.fsm.tag(repo, tag)
	if errors.Is(err, oci.ErrNotFound) && n.caughtUpNow(ctx, &err) {
		d, err = n.fsm.tag(repo, tag)
	}
	return d, err
}

// BlobLinked reports whether dgst was linked into repo or is referenced by
// one of its manifests.
func (n *Node) BlobLinked(ctx context.Context, repo string, dgst oci.Digest) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	ok, err := n.fsm.blobLinked(repo, dgst)
	if err == nil && !ok && n.caughtUpNow(ctx, &err) {
		ok, err = n.fsm.blobLinked(repo, dgst)
	}
	return ok, err
}

// Tags returns at most n tags of repo strictly after last, in byte order.
func (n *Node) Tags(ctx context.Context, repo, last string, count int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tags, err := n.fsm.tags(repo, last, count)
	if errors.Is(err, oci.ErrNotFound) && n.caughtUpNow(ctx, &err) {
		tags, err = n.fsm.tags(repo, last, count)
	}
	return tags, err
}

// Repositories returns at most n repositories strictly after last, in byte
// order. A repository exists while it has at least one manifest.
func (n *Node) Repositories(ctx context.Context, last string, count int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.repositories(last, count)
}

// Referrers returns the descriptors of the manifests in repo whose subject
// is subject, sorted by digest.
func (n *Node) Referrers(ctx context.Context, repo string, subject oci.Digest) ([]oci.Descriptor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.referrers(repo, subject)
}

// ReferencedBlobs returns every blob that a manifest in any repository
// references.
func (n *Node) ReferencedBlobs(ctx context.Context) (map[oci.Digest]struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.referencedBlobs()
}

// PutManifest stores a manifest and, when tag is not empty, points tag at
// it. The caller has checked that the blobs and children it references
// exist; apply verifies that payload matches rec.Digest and rec.Size.
//
// A zero v is a local push: the tag gets the next version of this cluster
// (a re-push of the digest the tag holds changes nothing). A non-zero v is
// a write replicated from another berth cluster: it is kept only if higher
// than the tag's version and than its tombstone's, and otherwise fails
// with oci.ErrSuperseded, except when the tag already holds that digest at
// that version (nothing changes). Putting a tag removes its tombstone.
func (n *Node) PutManifest(ctx context.Context, rec oci.Record, payload []byte, tag string, v oci.TagVersion) error {
	target := rec.Repo + "@" + string(rec.Digest)
	if tag != "" {
		target = rec.Repo + ":" + tag
	}
	project, _ := policy.ProjectOf(rec.Repo)
	ev := event(ctx, policy.AuditPush, policy.AuditArtifact, target, project, string(rec.Digest))
	err := n.propose(ctx, n.versioned(command{Op: opPutManifest, Record: &rec, Payload: payload, Tag: tag, Version: v, Audit: ev}))
	if errors.Is(err, policy.ErrQuotaExceeded) {
		// The refused command wrote nothing: the refusal is an event of
		// its own.
		ev.Op, ev.Resource, ev.Target, ev.Detail = policy.AuditQuota, policy.AuditQuotaRes, project, "refused "+target+": "+err.Error()
		n.RecordEvent(*ev)
	}
	return err
}

// versioned stamps a write of tags with this cluster's origin and the time.
func (n *Node) versioned(c command) command {
	c.Origin, c.Time = n.clusterID, time.Now().UnixNano()
	return c
}

// DeleteManifest removes repo@dgst and every tag pointing at it, leaving a
// tombstone of each. It fails with oci.ErrNotFound when absent and
// oci.ErrDenied while an index in repo lists it.
func (n *Node) DeleteManifest(ctx context.Context, repo string, dgst oci.Digest) error {
	project, _ := policy.ProjectOf(repo)
	return n.propose(ctx, n.versioned(command{Op: opDeleteManifest, Repo: repo, Digest: dgst,
		Audit: event(ctx, policy.AuditDelete, policy.AuditArtifact, repo+"@"+string(dgst), project, "")}))
}

// DeleteTag removes repo:tag and leaves its tombstone; the manifest stays.
// With ifDigest it deletes only while the tag points to ifDigest
// (otherwise oci.ErrPreconditionFailed). A non-zero v (a delete replicated
// from another berth cluster) must be higher than the tag's version
// (otherwise oci.ErrSuperseded) and becomes the tombstone's; a local
// delete gets the next version.
func (n *Node) DeleteTag(ctx context.Context, repo, tag string, v oci.TagVersion, ifDigest oci.Digest) error {
	project, _ := policy.ProjectOf(repo)
	return n.propose(ctx, n.versioned(command{Op: opDeleteTag, Repo: repo, Tag: tag, Version: v, IfDigest: ifDigest,
		Audit: event(ctx, policy.AuditDelete, policy.AuditTag, repo+":"+tag, project, "")}))
}

// LinkBlob records that the durable blob dgst belongs to repo.
func (n *Node) LinkBlob(ctx context.Context, repo string, dgst oci.Digest, size int64) error {
	err := n.propose(ctx, command{Op: opLinkBlob, Repo: repo, Digest: dgst, Size: size, Time: time.Now().UnixNano()})
	return err
}

// UnlinkBlob removes repo's upload link of dgst (a blob DELETE). The blob
// stays visible in repo while one of its manifests references it; it is
// oci.ErrNotFound when repo neither links nor references it.
func (n *Node) UnlinkBlob(ctx context.Context, repo string, dgst oci.Digest) error {
	err := n.propose(ctx, command{Op: opUnlinkBlob, Repo: repo, Digest: dgst})
	return err
}

// UnlinkBlobs drops the repository links of dgsts that were made before
// before, skipping blobs that a manifest references when the command
// applies. A zero before drops every link.
func (n *Node) UnlinkBlobs(ctx context.Context, dgsts []oci.Digest, before time.Time) error {
	var at int64
	if !before.IsZero() {
		at = before.UnixNano()
	}
	for len(dgsts) > 0 {
		chunk := dgsts[:min(len(dgsts), unlinkChunk)]
		dgsts = dgsts[len(chunk):]
		if err := n.propose(ctx, command{Op: opUnlinkBlobs, Digests: chunk, Time: at}); err != nil {
			return err
		}
	}
	return nil
}

// LiveBlobs returns every blob that a manifest references or that a
// repository linked at or after since (zero: ever): what garbage
// collection must keep.
func (n *Node) LiveBlobs(ctx context.Context, since time.Time) (map[oci.Digest]struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var at int64
	if !since.IsZero() {
		at = since.UnixNano()
	}
	return n.fsm.liveBlobs(at)
}
