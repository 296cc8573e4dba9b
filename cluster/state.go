package cluster

import (
	"context"
	"time"

	"github.com/berth-registry/berth/oci"
)

// unlinkChunk bounds the digests of one unlink_blobs command, so that a
// large GC sweep does not become one huge log entry.
const unlinkChunk = 1000

// Manifest returns the record and exact bytes of repo@dgst from the local
// applied state.
func (n *Node) Manifest(ctx context.Context, repo string, dgst oci.Digest) (oci.Record, []byte, error) {
	if err := ctx.Err(); err != nil {
		return oci.Record{}, nil, err
	}
	return n.fsm.manifest(repo, dgst)
}

// Tag resolves repo:tag from the local applied state.
func (n *Node) Tag(ctx context.Context, repo, tag string) (oci.Digest, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return n.fsm.tag(repo, tag)
}

// BlobLinked reports whether dgst was linked into repo or is referenced by
// one of its manifests.
func (n *Node) BlobLinked(ctx context.Context, repo string, dgst oci.Digest) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return n.fsm.blobLinked(repo, dgst)
}

// Tags returns at most n tags of repo strictly after last, in byte order.
func (n *Node) Tags(ctx context.Context, repo, last string, count int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.tags(repo, last, count)
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
func (n *Node) PutManifest(ctx context.Context, rec oci.Record, payload []byte, tag string) error {
	_, err := n.propose(ctx, command{Op: opPutManifest, Record: &rec, Payload: payload, Tag: tag})
	return err
}

// DeleteManifest removes repo@dgst and every tag pointing at it. It fails
// with oci.ErrNotFound when absent and oci.ErrDenied while an index in repo
// lists it.
func (n *Node) DeleteManifest(ctx context.Context, repo string, dgst oci.Digest) error {
	_, err := n.propose(ctx, command{Op: opDeleteManifest, Repo: repo, Digest: dgst})
	return err
}

// DeleteTag removes repo:tag; the manifest stays.
func (n *Node) DeleteTag(ctx context.Context, repo, tag string) error {
	_, err := n.propose(ctx, command{Op: opDeleteTag, Repo: repo, Tag: tag})
	return err
}

// LinkBlob records that the durable blob dgst belongs to repo.
func (n *Node) LinkBlob(ctx context.Context, repo string, dgst oci.Digest, size int64) error {
	_, err := n.propose(ctx, command{Op: opLinkBlob, Repo: repo, Digest: dgst, Size: size, Time: time.Now().UnixNano()})
	return err
}

// UnlinkBlob removes repo's upload link of dgst (a blob DELETE). The blob
// stays visible in repo while one of its manifests references it; it is
// oci.ErrNotFound when repo neither links nor references it.
func (n *Node) UnlinkBlob(ctx context.Context, repo string, dgst oci.Digest) error {
	_, err := n.propose(ctx, command{Op: opUnlinkBlob, Repo: repo, Digest: dgst})
	return err
}

// UnlinkBlobs drops every repository link of dgsts, skipping blobs that a
// manifest references when the command applies.
func (n *Node) UnlinkBlobs(ctx context.Context, dgsts []oci.Digest) error {
	for len(dgsts) > 0 {
		chunk := dgsts[:min(len(dgsts), unlinkChunk)]
		dgsts = dgsts[len(chunk):]
		if _, err := n.propose(ctx, command{Op: opUnlinkBlobs, Digests: chunk}); err != nil {
			return err
		}
	}
	return nil
}
