package replicate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// statusCheckTimeout bounds the look at one destination for Status.
const statusCheckTimeout = 10 * time.Second

// Status reports, for every enabled policy that selects repo:ref (a tag or
// a digest), whether its destination has the artifact with its
// signatures: present, pending (a task is queued or retrying), failed (and
// why), or missing. It looks at the destination itself, so "present" is
// never a guess from task history.
func (e *Engine) Status(ctx context.Context, repo, ref string) (ArtifactStatus, error) {
	st := ArtifactStatus{Repo: repo, Reference: ref, Destinations: []DestinationStatus{}}
	tag := ""
	if oci.IsDigestReference(ref) {
		d, err := oci.ParseDigest(ref)
		if err != nil {
			return st, fmt.Errorf("%w: %v", policy.ErrInvalid, err)
		}
		if _, _, err := e.local.Manifest(ctx, repo, d); err != nil {
			return st, err
		}
		st.Digest = d
	} else {
		if err := oci.ValidateTag(ref); err != nil {
			return st, fmt.Errorf("%w: %v", policy.ErrInvalid, err)
		}
		d, err := e.local.Tag(ctx, repo, ref)
		if err != nil {
			return st, err
		}
		tag, st.Digest = ref, d
	}
	rules, err := e.store.Rules(ctx)
	if err != nil {
		return st, err
	}
	for _, r := range rules {
		if !r.Enabled || !r.MatchRepo(repo) || (tag != "" && !r.MatchTag(tag)) {
			continue
		}
		if r.OnlySigned {
			signed, err := isSigned(ctx, e.local, repo, st.Digest)
			if err != nil {
				return st, err
			}
			if !signed {
				continue // the policy does not select unsigned artifacts
			}
		}
		st.Destinations = append(st.Destinations, e.destinationStatus(ctx, r, repo, ref, tag, st.Digest))
	}
	return st, nil
}

func (e *Engine) destinationStatus(ctx context.Context, r policy.Rule, repo, ref, tag string, d oci.Digest) DestinationStatus {
	ds := DestinationStatus{Policy: r.Name, Endpoint: r.Endpoint, DestRepo: r.DestRepo(repo)}
	lt, ok, err := e.store.LatestTask(ctx, r.Name, repo, ref)
	if err != nil {
		ds.State, ds.Reason = StatePending, "reading tasks: "+err.Error()
		return ds
	}
	var task *policy.Task
	if ok && lt.Digest == d {
		task = &lt
		ds.Task = task
	}
	cctx, cancel := context.WithTimeout(ctx, statusCheckTimeout)
	defer cancel()
	present, reason, there, err := e.presentAt(cctx, r, repo, ds.DestRepo, ref, d)
	ds.Digest = there
	switch {
	case err == nil && present:
		ds.State = StatePresent
	case task != nil && task.Active():
		ds.State = StatePending
		ds.Reason = "task " + task.Status
		if task.Error != "" {
			ds.Reason += ": " + task.Error
		}
	case task != nil && task.Status == policy.StatusFailed:
		ds.State, ds.Reason = StateFailed, task.Error
	case err != nil:
		ds.State, ds.Reason = StatePending, "destination not reachable: "+err.Error()
	default:
		ds.State, ds.Reason = StateMissing, reason
	}
	_ = tag
	return ds
}

// presentAt reports whether the destination of rule holds ref with digest
// d and every accessory the source has for it; reason says what is not
// there, and there is what the destination's ref points to.
func (e *Engine) presentAt(ctx context.Context, r policy.Rule, repo, dest, ref string, d oci.Digest) (bool, string, oci.Digest, error) {
	remote, err := e.remote(ctx, r.Endpoint)
	if err != nil {
		return false, "", "", err
	}
	desc, _, found, err := remote.Head(ctx, dest, ref)
	if err != nil {
		return false, "", "", err
	}
	if !found {
		return false, "not at the destination", "", nil
	}
	if desc.Digest != d {
		return false, fmt.Sprintf("the destination has %s", desc.Digest), desc.Digest, nil
	}
	missing, err := e.accessoriesMissing(ctx, remote, repo, dest, d)
	if err != nil {
		return false, "", desc.Digest, err
	}
	if missing {
		return false, "signatures or other accessories not yet at the destination", desc.Digest, nil
	}
	return true, "", desc.Digest, nil
}

// signatureTypes are the artifact types of referrers that sign their
// subject.
var signatureTypes = []string{
	"application/vnd.dev.cosign.artifact.sig.v1+json",
	"application/vnd.dev.sigstore.bundle.v0.3+json",
	"application/vnd.cncf.notary.signature",
}

// isSigned reports whether subject d in repo has a cosign signature tag or
// a signature referrer.
func isSigned(ctx context.Context, src Source, repo string, d oci.Digest) (bool, error) {
	_, err := src.Tag(ctx, repo, policy.AccessoryTag(d, ".sig"))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, oci.ErrNotFound) {
		return false, err
	}
	refs, err := src.Referrers(ctx, repo, d)
	if err != nil {
		return false, err
	}
	for _, rd := range refs {
		if slices.Contains(signatureTypes, rd.ArtifactType) {
			return true, nil
		}
	}
	return false, nil
}

// maxPromoteDepth bounds the nesting (indexes, referrers of referrers) a
// promotion follows.
const maxPromoteDepth = 8

// Promote copies an artifact by digest, with its children and accessories,
// to another repository of this registry or to an endpoint, and points
// the destination tag at it. The caller has verified its signature.
func (e *Engine) Promote(ctx context.Context, req PromoteRequest) (PromoteResult, error) {
	if err := oci.ValidateName(req.SourceRepo); err != nil {
		return PromoteResult{}, fmt.Errorf("%w: source: %v", policy.ErrInvalid, err)
	}
	if err := oci.ValidateName(req.DestRepo); err != nil {
		return PromoteResult{}, fmt.Errorf("%w: destination: %v", policy.ErrInvalid, err)
	}
	if err := oci.ValidateTag(req.DestTag); err != nil {
		return PromoteResult{}, fmt.Errorf("%w: destination tag: %v", policy.ErrInvalid, err)
	}
	if _, err := oci.ParseDigest(string(req.Digest)); err != nil {
		return PromoteResult{}, fmt.Errorf("%w: %v", policy.ErrInvalid, err)
	}
	if _, _, err := e.local.Manifest(ctx, req.SourceRepo, req.Digest); err != nil {
		return PromoteResult{}, fmt.Errorf("%s@%s: %w", req.SourceRepo, req.Digest, err)
	}
	if req.Endpoint == "" {
		if err := e.promoteLocal(ctx, req.SourceRepo, req.Digest, req.DestRepo, req.DestTag, 0); err != nil {
			return PromoteResult{}, err
		}
		return PromoteResult{Digest: req.Digest}, nil
	}
	remote, err := e.remote(ctx, req.Endpoint)
	if err != nil {
		return PromoteResult{}, err
	}
	t := policy.Task{Kind: policy.TaskCopy, Repo: req.SourceRepo, Tag: req.DestTag, Digest: req.Digest, DestRepo: req.DestRepo, Endpoint: req.Endpoint}
	res, err := e.copier.Copy(ctx, e.local, remote, t, CopyOptions{Override: true})
	if err != nil {
		return PromoteResult{}, err
	}
	return PromoteResult{Digest: req.Digest, Bytes: res.Bytes, Note: res.Note}, nil
}

// promoteLocal copies src@d into dst inside this registry: children first,
// the blobs linked (they are stored once), then the manifest (tagged when
// tag is set), then its cosign accessories and referrers.
func (e *Engine) promoteLocal(ctx context.Context, src string, d oci.Digest, dst, tag string, depth int) error {
	if e.writer == nil {
		return fmt.Errorf("promotion inside this registry: %w", oci.ErrUnsupported)
	}
	if depth > maxPromoteDepth {
		return fmt.Errorf("%w: %s nests deeper than %d", policy.ErrInvalid, d, maxPromoteDepth)
	}
	rec, payload, err := e.local.Manifest(ctx, src, d)
	if err != nil {
		return fmt.Errorf("%s@%s: %w", src, d, err)
	}
	for _, c := range rec.Children {
		if err := e.promoteLocal(ctx, src, c, dst, "", depth+1); err != nil {
			return err
		}
	}
	for _, b := range rec.Blobs {
		rc, size, err := e.local.OpenBlob(ctx, b, 0)
		if err != nil {
			return fmt.Errorf("blob %s: %w", b, err)
		}
		rc.Close()
		if err := e.writer.LinkBlob(ctx, dst, b, size); err != nil {
			return err
		}
	}
	rec.Repo = dst
	if err := e.writer.PutManifest(ctx, rec, payload, tag, oci.TagVersion{}); err != nil {
		return err
	}
	if depth > 0 && tag == "" {
		return nil // accessories travel with the top-level subject only
	}
	for _, s := range policy.AccessorySuffixes {
		at := policy.AccessoryTag(d, s)
		ad, err := e.local.Tag(ctx, src, at)
		if errors.Is(err, oci.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := e.promoteLocal(ctx, src, ad, dst, at, depth+1); err != nil {
			return err
		}
	}
	refs, err := e.local.Referrers(ctx, src, d)
	if err != nil {
		return err
	}
	for _, rd := range refs {
		if err := e.promoteLocal(ctx, src, rd.Digest, dst, "", depth+1); err != nil {
			return err
		}
	}
	return nil
}
