package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

var (
	errManifestUnknown  = newAPIError(codeManifestUnknown, nil)
	errManifestTooLarge = &apiError{
		code:   codeSizeInvalid,
		status: http.StatusRequestEntityTooLarge,
		detail: "a manifest may be at most " + strconv.Itoa(oci.MaxManifestSize) + " bytes",
	}
)

// resolve turns a manifest reference (a digest or a tag) into a digest.
func (reg *Registry) resolve(ctx context.Context, name, ref string) (oci.Digest, error) {
	if oci.IsDigestReference(ref) {
		return parseDigest(ref)
	}
	if err := oci.ValidateTag(ref); err != nil {
		return "", withDetail(err, err.Error())
	}
	d, err := reg.state.Tag(ctx, name, ref)
	if err != nil {
		return "", notFoundAs(err, errManifestUnknown)
	}
	return d, nil
}

// setTagVersion tells a berth peer the version this registry holds of a
// tag (of its tombstone, when the tag was deleted), so that replication
// between clusters can decide which write wins. Other clients ignore it.
func (reg *Registry) setTagVersion(w http.ResponseWriter, r *http.Request, name, ref string) {
	if ref == "" || oci.IsDigestReference(ref) {
		return
	}
	v, _, err := reg.state.TagVersion(r.Context(), name, ref)
	if err != nil || v.IsZero() {
		return
	}
	w.Header().Set(oci.HeaderTagVersion, v.String())
}

// tagVersionHeader parses the version a replicated write carries (zero for
// a write from any other client).
func tagVersionHeader(r *http.Request) (oci.TagVersion, error) {
	v, err := oci.ParseTagVersion(r.Header.Get(oci.HeaderTagVersion))
	if err != nil {
		return oci.TagVersion{}, newAPIError(codeManifestInvalid, err.Error())
	}
	return v, nil
}

// getManifest answers GET and HEAD of a manifest by tag or digest with the
// stored bytes and media type. The Accept header is not used to refuse: the
// stored content is served as it was pushed, as distribution does for OCI
// types. A GET is a pull: the PullRecorder counts it under the digest it
// served (a HEAD only resolves).
func (reg *Registry) getManifest(w http.ResponseWriter, r *http.Request, rt route) {
	d, err := reg.resolve(r.Context(), rt.name, rt.arg)
	reg.setTagVersion(w, r, rt.name, rt.arg)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	rec, payload, err := reg.state.Manifest(r.Context(), rt.name, d)
	if err != nil {
		reg.writeError(w, r, notFoundAs(err, errManifestUnknown))
		return
	}
	h := w.Header()
	h.Set(headerContentDigest, d.String())
	h.Set("Etag", `"`+d.String()+`"`)
	if r.Method == http.MethodHead {
		h.Set("Content-Type", rec.MediaType)
		h.Set("Content-Length", strconv.Itoa(len(payload)))
		w.WriteHeader(http.StatusOK)
		return
	}
	writeBody(w, http.StatusOK, rec.MediaType, payload)
	if reg.pulls != nil {
		reg.pulls.RecordPull(rt.name, d, policy.ActorFrom(r.Context()))
	}
}

// putManifest answers PUT of a manifest by tag or digest. The body is
// bounded, must parse, must hash to a digest reference, and every blob and
// child manifest it references must be in the repository (its subject need
// not be). Only then is it written through the state.
func (reg *Registry) putManifest(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	if r.ContentLength > oci.MaxManifestSize {
		reg.writeError(w, r, errManifestTooLarge)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, oci.MaxManifestSize+1))
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	if len(body) > oci.MaxManifestSize {
		reg.writeError(w, r, errManifestTooLarge)
		return
	}
	version, err := tagVersionHeader(r)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	var tag string
	var d oci.Digest
	if oci.IsDigestReference(rt.arg) {
		if d, err = parseDigest(rt.arg); err != nil {
			reg.writeError(w, r, err)
			return
		}
		if !d.Verify(body) {
			reg.writeError(w, r, newAPIError(codeDigestInvalid, "manifest does not hash to the reference digest"))
			return
		}
	} else {
		if err := oci.ValidateTag(rt.arg); err != nil {
			reg.writeError(w, r, withDetail(err, err.Error()))
			return
		}
		tag = rt.arg
		d = oci.DigestOf(body)
	}
	m, err := oci.ParseManifest(r.Header.Get("Content-Type"), body)
	if err != nil {
		// ParseManifest is pure: its message holds only request data.
		if errors.Is(err, oci.ErrUnsupported) {
			err = &apiError{code: codeUnsupported, status: http.StatusUnsupportedMediaType, detail: err.Error(), err: err}
		} else {
			err = withDetail(err, err.Error())
		}
		reg.writeError(w, r, err)
		return
	}

	// Protect the blobs before checking them, so that GC cannot sweep one
	// between the check and the commit of the manifest that references it.
	blobs := m.Blobs()
	ds := make([]oci.Digest, len(blobs))
	for i, b := range blobs {
		ds[i] = b.Digest
	}
	release := reg.collector.Protect(ds)
	defer release()
	if err := reg.checkReferences(ctx, rt.name, m); err != nil {
		reg.writeError(w, r, err)
		return
	}
	rec := oci.NewRecord(rt.name, d, int64(len(body)), m, time.Now().UnixNano())
	if err := reg.state.PutManifest(ctx, rec, body, tag, version); err != nil {
		if errors.Is(err, oci.ErrSuperseded) {
			reg.setTagVersion(w, r, rt.name, tag)
			err = withDetail(err, "the tag holds a newer version")
		}
		reg.writeError(w, r, err)
		return
	}
	reg.setTagVersion(w, r, rt.name, tag)
	h := w.Header()
	h.Set("Location", manifestURL(rt.name, d))
	h.Set(headerContentDigest, d.String())
	if m.Subject != nil {
		h.Set(headerSubject, m.Subject.Digest.String())
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// checkReferences returns MANIFEST_BLOB_UNKNOWN (with the digest as detail)
// unless every blob of m is linked to repo and stored, and every child
// manifest of an index is in repo.
func (reg *Registry) checkReferences(ctx context.Context, repo string, m *oci.Manifest) error {
	unknown := func(d oci.Digest) error {
		return newAPIError(codeManifestBlobUnknown, map[string]string{"digest": d.String()})
	}
	for _, b := range m.Blobs() {
		err := reg.blobLinked(ctx, repo, b.Digest)
		if err == nil {
			err = reg.blobPresent(ctx, b.Digest)
		}
		switch {
		case err == nil:
		case errors.Is(err, errBlobUnknown), errors.Is(err, oci.ErrNotFound):
			return unknown(b.Digest)
		default:
			return err
		}
	}
	for _, c := range m.Manifests {
		if _, _, err := reg.state.Manifest(ctx, repo, c.Digest); err != nil {
			if errors.Is(err, oci.ErrNotFound) {
				return unknown(c.Digest)
			}
			return err
		}
	}
	return nil
}

// deleteManifest answers DELETE of a manifest by digest (the manifest and
// its tags go) or by tag (only that tag goes). A manifest that an index
// still lists is refused by the state with DENIED.
func (reg *Registry) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	var err error
	if oci.IsDigestReference(rt.arg) {
		var d oci.Digest
		if d, err = parseDigest(rt.arg); err == nil {
			err = reg.state.DeleteManifest(ctx, rt.name, d)
		}
	} else if err = oci.ValidateTag(rt.arg); err != nil {
		err = withDetail(err, err.Error())
	} else {
		err = reg.deleteTag(r, rt)
	}
	switch {
	case err == nil:
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
	case errors.Is(err, oci.ErrSuperseded):
		reg.setTagVersion(w, r, rt.name, rt.arg)
		reg.writeError(w, r, withDetail(err, "the tag holds a newer version"))
	case errors.Is(err, oci.ErrPreconditionFailed):
		reg.writeError(w, r, withDetail(err, "the tag no longer points to "+r.Header.Get(oci.HeaderIfDigest)))
	case errors.Is(err, oci.ErrDenied):
		// The state's refusal says why (which index holds it); it names
		// only digests and repositories.
		reg.writeError(w, r, withDetail(err, err.Error()))
	default:
		reg.writeError(w, r, notFoundAs(err, errManifestUnknown))
	}
}

// deleteTag removes one tag, conditionally on the digest it points to
// (Berth-If-Digest) and with the version of a replicated delete
// (Berth-Tag-Version) when the request carries them.
func (reg *Registry) deleteTag(r *http.Request, rt route) error {
	v, err := tagVersionHeader(r)
	if err != nil {
		return err
	}
	var ifDigest oci.Digest
	if h := r.Header.Get(oci.HeaderIfDigest); h != "" {
		if ifDigest, err = parseDigest(h); err != nil {
			return err
		}
	}
	return reg.state.DeleteTag(r.Context(), rt.name, rt.arg, v, ifDigest)
}
