package registry

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// errBlobUnknown is BLOB_UNKNOWN.
var errBlobUnknown = newAPIError(codeBlobUnknown, nil)

// blobLinked returns nil when blob d belongs to repo per the state, and
// BLOB_UNKNOWN otherwise. Blob files are shared by every repository; this
// check is what scopes them.
func (reg *Registry) blobLinked(ctx context.Context, repo string, d oci.Digest) error {
	ok, err := reg.state.BlobLinked(ctx, repo, d)
	if err != nil {
		return err
	}
	if !ok {
		return errBlobUnknown
	}
	return nil
}

// notFoundAs maps a not-found error to the given API error, keeping others
// (and a missing project, which has its own answer).
func notFoundAs(err error, as *apiError) error {
	if errors.Is(err, oci.ErrNotFound) && !errors.Is(err, policy.ErrNoProject) {
		return as
	}
	return err
}

// linkedBlob parses the route's digest and checks that the blob belongs to
// the route's repository; otherwise it writes the error and returns false.
func (reg *Registry) linkedBlob(w http.ResponseWriter, r *http.Request, rt route) (oci.Digest, bool) {
	d, err := parseDigest(rt.arg)
	if err == nil {
		err = reg.blobLinked(r.Context(), rt.name, d)
	}
	if err != nil {
		reg.writeError(w, r, err)
		return "", false
	}
	return d, true
}

// getBlob answers GET and HEAD of a blob. A blob is visible in a repository
// only when the state links it there and the file exists. Reading a blob
// refreshes its mtime, so that GC's grace period protects a blob that a
// client just checked before pushing the manifest that references it.
func (reg *Registry) getBlob(w http.ResponseWriter, r *http.Request, rt route) {
	d, ok := reg.linkedBlob(w, r, rt)
	if !ok {
		return
	}
	h := w.Header()
	h.Set(headerContentDigest, d.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Etag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000")
	_, _, err := reg.blobs.Stat(d)
	if errors.Is(err, oci.ErrNotFound) && reg.peers != nil {
		// Linked, so durable on the write quorum, but not here yet: a
		// peer has it, and this node keeps a copy of what it reads.
		if r.Method == http.MethodHead {
			size, err := reg.remoteStat(r.Context(), d)
			if err != nil {
				reg.writeError(w, r, notFoundAs(err, errBlobUnknown))
				return
			}
			h.Set("Content-Length", strconv.FormatInt(size, 10))
			w.WriteHeader(http.StatusOK)
			return
		}
		reg.streamRemote(w, r, d)
		return
	}
	reg.serveLocalBlob(w, r, d)
}

// serveLocalBlob answers GET or HEAD of blob d from the local store; the
// caller has set the headers that do not depend on the file.
func (reg *Registry) serveLocalBlob(w http.ResponseWriter, r *http.Request, d oci.Digest) {
	if r.Method == http.MethodHead {
		size, mod, err := reg.blobs.Stat(d)
		if err != nil {
			reg.writeError(w, r, notFoundAs(err, errBlobUnknown))
			return
		}
		reg.touch(r, d, mod)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	f, _, err := reg.blobs.Open(d)
	if err != nil {
		reg.writeError(w, r, notFoundAs(err, errBlobUnknown))
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		reg.touch(r, d, fi.ModTime())
	}
	// ServeContent answers Range with 206, sets Content-Length, and hands
	// the *os.File to sendfile.
	http.ServeContent(w, r, "", time.Time{}, f)
}

// touch refreshes a blob's mtime unless mod, its current one, is recent.
// The mtime only has to stay well within GC's grace period, so it is
// refreshed at most every min(1 minute, grace/4): a popular layer pulled a
// thousand times a second costs one inode write a minute instead of one per
// pull, and pulls do not queue on its lock.
func (reg *Registry) touch(r *http.Request, d oci.Digest, mod time.Time) {
	if time.Since(mod) < min(time.Minute, reg.cfg.GCGrace/4) {
		return
	}
	if err := reg.blobs.Touch(d); err != nil {
		reg.logFor(r).Debug("touch blob", keyDigest, d, keyError, err)
	}
}

// deleteBlob answers DELETE of a blob: it removes the repository's link, so
// the blob is no longer visible there (unless a manifest of the repository
// still references it). The file is shared by all repositories and stays;
// garbage collection reclaims it once nothing references it.
func (reg *Registry) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) {
	d, ok := reg.linkedBlob(w, r, rt)
	if !ok {
		return
	}
	if err := reg.state.UnlinkBlob(r.Context(), rt.name, d); err != nil {
		reg.writeError(w, r, notFoundAs(err, errBlobUnknown))
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}
