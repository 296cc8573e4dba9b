package registry

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/berth-registry/berth/oci"
)

// startUpload answers POST /v2/<name>/blobs/uploads/: a cross-repository
// mount (?mount=&from=), a monolithic upload (?digest= with the blob as
// body), or a new upload session.
func (reg *Registry) startUpload(w http.ResponseWriter, r *http.Request, rt route) {
	if g, ok := reg.state.(QuotaGate); ok {
		if err := g.CheckQuota(r.Context(), rt.name); err != nil {
			reg.writeError(w, r, err)
			return
		}
	}
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		if reg.mount(w, r, rt.name, m, q.Get("from")) {
			return
		}
		// Not mountable: the spec says to fall back to a session.
	} else if ds := q.Get("digest"); ds != "" {
		reg.putMonolithic(w, r, rt.name, ds)
		return
	}
	st, err := reg.uploads.Create(rt.name, time.Now())
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	answerUpload(w, http.StatusAccepted, st)
}

// putMonolithic stores the request body as blob ds and links it.
func (reg *Registry) putMonolithic(w http.ResponseWriter, r *http.Request, name, ds string) {
	d, err := parseDigest(ds)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	if r.ContentLength > reg.cfg.MaxBlobSize {
		reg.writeError(w, r, ErrBlobTooLarge)
		return
	}
	size, err := reg.blobs.Put(r.Context(), d, r.Body, reg.cfg.MaxBlobSize)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	reg.blobUploaded(w, r, name, d, size)
}

// blobUploaded answers an upload that stored blob d here: it makes the
// blob durable on the cluster's write quorum, then links it.
func (reg *Registry) blobUploaded(w http.ResponseWriter, r *http.Request, name string, d oci.Digest, size int64) {
	if err := reg.replicate(r.Context(), d, size); err != nil {
		reg.writeError(w, r, err)
		return
	}
	reg.blobCreated(w, r, name, d, size)
}

// blobCreated links a durable blob to the repository and only then answers
// 201: a client that got 201 can reference the blob from a manifest.
func (reg *Registry) blobCreated(w http.ResponseWriter, r *http.Request, name string, d oci.Digest, size int64) {
	if err := reg.state.LinkBlob(r.Context(), name, d, size); err != nil {
		reg.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Location", blobURL(name, d))
	h.Set(headerContentDigest, d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// mount links blob m of repository from into name and answers 201, when the
// caller may pull from and from has the blob. It returns false, having
// written nothing, when the blob cannot be mounted. Without from, the blob
// is "mounted" only when name already has it (the spec's automatic content
// discovery, restricted to what the caller can already see).
func (reg *Registry) mount(w http.ResponseWriter, r *http.Request, name, m, from string) bool {
	d, err := oci.ParseDigest(m)
	if err != nil {
		return false
	}
	src := from
	if src == "" {
		src = name
	}
	if oci.ValidateName(src) != nil {
		return false
	}
	if src != name && !reg.allowed(r, Access{Repo: src, Action: ActionPull}) {
		return false
	}
	linked, err := reg.state.BlobLinked(r.Context(), src, d)
	if err != nil {
		reg.logFor(r).Warn("mount: check source", keyRepo, src, keyDigest, d, keyError, err)
		return false
	}
	if !linked {
		return false
	}
	// Touch first: under the blob store's lock it either refreshes the blob,
	// so GC's grace period keeps it until the manifest arrives, or finds it
	// already swept.
	var size int64
	if err = reg.blobs.Touch(d); err == nil {
		size, _, err = reg.blobs.Stat(d)
	} else if errors.Is(err, oci.ErrNotFound) && reg.peers != nil {
		// Linked in the cluster, not yet here: a peer holds it.
		size, err = reg.remoteStat(r.Context(), d)
	}
	if err != nil {
		return false
	}
	reg.blobCreated(w, r, name, d, size)
	return true
}

// answerUpload answers with an upload session's Location, id and the
// Range of bytes received.
func answerUpload(w http.ResponseWriter, status int, st UploadState) {
	h := w.Header()
	h.Set("Location", uploadURL(st.Repo, st.ID))
	h.Set(headerUploadUUID, st.ID)
	h.Set("Range", rangeHeader(st.Offset))
	if status != http.StatusNoContent {
		h.Set("Content-Length", "0")
	}
	w.WriteHeader(status)
}

// chunk returns the part of the request body to append and where it must
// start: with a Content-Range, exactly that many bytes at its start;
// without one (a streamed upload), the whole body at the current offset
// (start -1).
func chunk(r *http.Request) (io.Reader, int64, error) {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return r.Body, -1, nil
	}
	start, end, err := ParseContentRange(cr)
	if err != nil {
		return nil, 0, err
	}
	n := end - start + 1
	if r.ContentLength >= 0 && r.ContentLength != n {
		return nil, 0, ErrRangeInvalid
	}
	return io.LimitReader(r.Body, n), start, nil
}

// patchUpload appends a chunk to an upload session.
func (reg *Registry) patchUpload(w http.ResponseWriter, r *http.Request, rt route) {
	body, start, err := chunk(r)
	if err == nil {
		var st UploadState
		st, err = reg.uploads.Append(r.Context(), rt.name, rt.arg, body, start, time.Now())
		if err == nil {
			answerUpload(w, http.StatusAccepted, st)
			return
		}
	}
	reg.writeUploadError(w, r, rt, err)
}

// writeUploadError answers a failed upload request. A chunk that does not
// continue the session is 416 with the session's current Range, so the
// client can resume from there.
func (reg *Registry) writeUploadError(w http.ResponseWriter, r *http.Request, rt route, err error) {
	if errors.Is(err, ErrRangeInvalid) {
		if st, gerr := reg.uploads.Get(rt.name, rt.arg); gerr == nil {
			h := w.Header()
			h.Set("Location", uploadURL(st.Repo, st.ID))
			h.Set(headerUploadUUID, st.ID)
			h.Set("Range", rangeHeader(st.Offset))
		}
	}
	reg.writeError(w, r, err)
}

// putUpload completes an upload session, with or without a final chunk, and
// links the verified blob to the repository.
func (reg *Registry) putUpload(w http.ResponseWriter, r *http.Request, rt route) {
	ds := r.URL.Query().Get("digest")
	if ds == "" {
		reg.writeError(w, r, newAPIError(codeDigestInvalid, "digest parameter is required"))
		return
	}
	d, err := parseDigest(ds)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	final := r.Body
	if r.Header.Get("Content-Range") != "" && r.ContentLength != 0 {
		// A final chunk with its range: append it where it claims to
		// start, then finish with nothing more.
		body, start, err := chunk(r)
		if err == nil {
			_, err = reg.uploads.Append(r.Context(), rt.name, rt.arg, body, start, time.Now())
		}
		if err != nil {
			reg.writeUploadError(w, r, rt, err)
			return
		}
		final = http.NoBody
	}
	size, err := reg.uploads.Finish(r.Context(), rt.name, rt.arg, d, final, time.Now())
	if err != nil {
		reg.writeUploadError(w, r, rt, err)
		return
	}
	reg.blobUploaded(w, r, rt.name, d, size)
}

// uploadStatus answers GET of an upload session: 204 with its Range, so an
// interrupted client can resume.
func (reg *Registry) uploadStatus(w http.ResponseWriter, r *http.Request, rt route) {
	st, err := reg.uploads.Get(rt.name, rt.arg)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	answerUpload(w, http.StatusNoContent, st)
}

// cancelUpload answers DELETE of an upload session.
func (reg *Registry) cancelUpload(w http.ResponseWriter, r *http.Request, rt route) {
	if err := reg.uploads.Cancel(rt.name, rt.arg); err != nil {
		reg.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
