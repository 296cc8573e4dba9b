package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Source is the local registry the copier reads from.
type Source interface {
	Manifest(ctx context.Context, repo string, d oci.Digest) (oci.Record, []byte, error)
	Tag(ctx context.Context, repo, tag string) (oci.Digest, error)
	Referrers(ctx context.Context, repo string, subject oci.Digest) ([]oci.Descriptor, error)
	// OpenBlob opens blob d at offset (the blob may live on a peer node)
	// and returns it with the blob's full size.
	OpenBlob(ctx context.Context, d oci.Digest, offset int64) (io.ReadCloser, int64, error)
}

// CopyOptions are a rule's settings for one copy.
type CopyOptions struct {
	// OnlySigned copies only an artifact with a cosign signature.
	OnlySigned bool
	// Override lets a copy move a tag of a plain OCI endpoint that points
	// elsewhere. At berth endpoints versions decide.
	Override bool
	// Limiter bounds the bytes per second of blob uploads (nil: none).
	Limiter *rate.Limiter
	// Progress is told about blob bytes as they are sent.
	Progress func(n int64)
}

// CopyResult is what a copy did.
type CopyResult struct {
	Bytes int64  // blob bytes sent
	Note  string // why it did nothing, when it did nothing
}

// Notes of copies and deletes that succeeded without changing anything.
const (
	NoteUnsigned   = "skipped: not signed, and the policy copies only signed artifacts"
	NoteSuperseded = "superseded: the destination holds a newer write"
	NoteMoved      = "left alone: the destination tag points to another digest"
)

// maxAccessoryDepth bounds referrers of referrers.
const maxAccessoryDepth = 4

// maxResumes bounds the resumptions of one blob upload in one attempt.
const maxResumes = 8

// Copier copies artifacts, children first and idempotently: what the
// destination has is skipped, so a copy repeated after a failure resumes
// where the last one stopped.
type Copier struct {
	logger *slog.Logger
}

// NewCopier returns a copier logging to logger.
func NewCopier(logger *slog.Logger) *Copier { return &Copier{logger: logger} }

// copyRun is one copy's context.
type copyRun struct {
	src      Source
	dst      *Remote
	repo     string // at the source
	destRepo string
	opt      CopyOptions
	// sent counts blob bytes as the transport reads them, on its own
	// goroutine.
	sent atomic.Int64
}

// Copy copies t.Digest (and, for an index, its manifests; then its cosign
// accessories and referrers) from repo t.Repo of src to t.DestRepo at dst,
// and points t.Tag at it there with t.Version.
func (c *Copier) Copy(ctx context.Context, src Source, dst *Remote, t policy.Task, opt CopyOptions) (res CopyResult, err error) {
	rec, payload, err := src.Manifest(ctx, t.Repo, t.Digest)
	if errors.Is(err, oci.ErrNotFound) {
		return res, permanentf("%s@%s is gone at the source", t.Repo, t.Digest)
	}
	if err != nil {
		return res, err
	}
	if opt.OnlySigned {
		signed, err := isSigned(ctx, src, t.Repo, t.Digest)
		if err != nil {
			return res, err
		}
		if !signed {
			res.Note = NoteUnsigned
			return res, nil
		}
	}
	run := &copyRun{src: src, dst: dst, repo: t.Repo, destRepo: t.DestRepo, opt: opt}
	defer func() { res.Bytes = run.sent.Load() }()
	there := false
	if t.Tag != "" {
		desc, dv, found, err := dst.Head(ctx, t.DestRepo, t.Tag)
		if err != nil {
			return res, err
		}
		newer := dst.isBerth() && !dv.IsZero() && !t.Version.IsZero() && dv.Compare(t.Version) > 0
		switch {
		case found && desc.Digest == t.Digest:
			there = !dst.isBerth() || t.Version.IsZero() || dv.Compare(t.Version) >= 0
		case newer:
			// The destination's write (or delete) is newer: it wins, and
			// travels back by the destination's own policy.
			res.Note = NoteSuperseded
			return res, nil
		case found && !dst.isBerth() && !opt.Override:
			return res, permanentf("%s:%s at %s points to %s; the policy does not override", t.DestRepo, t.Tag, dst.ep.Name, desc.Digest)
		}
	}
	if !there {
		dst.EnsureProject(ctx, t.DestRepo)
		err := run.manifest(ctx, rec, payload, t.Tag, t.Version, 0)
		if errors.Is(err, oci.ErrSuperseded) {
			res.Note = NoteSuperseded
			return res, nil
		}
		if err != nil {
			return res, err
		}
	}
	if err := run.accessories(ctx, t.Digest, 0); err != nil {
		return res, err
	}
	return res, nil
}

// manifest copies one manifest, children and blobs first, as ref (a tag,
// or its digest when tag is "").
func (r *copyRun) manifest(ctx context.Context, rec oci.Record, payload []byte, tag string, v oci.TagVersion, depth int) error {
	if !rec.Digest.Verify(payload) {
		return permanentf("%s@%s at the source does not match its digest", r.repo, rec.Digest)
	}
	if depth > maxAccessoryDepth*2 {
		return permanentf("%s@%s nests too deep", r.repo, rec.Digest)
	}
	for _, child := range rec.Children {
		if _, _, found, err := r.dst.Head(ctx, r.destRepo, string(child)); err != nil {
			return err
		} else if found {
			continue
		}
		crec, cp, err := r.src.Manifest(ctx, r.repo, child)
		if err != nil {
			return fmt.Errorf("child %s of %s: %w", child, rec.Digest, err)
		}
		if err := r.manifest(ctx, crec, cp, "", oci.TagVersion{}, depth+1); err != nil {
			return err
		}
	}
	for _, b := range uniqDigests(rec.Blobs) {
		if err := r.blob(ctx, b); err != nil {
			return err
		}
	}
	ref := tag
	if ref == "" {
		ref = string(rec.Digest)
		v = oci.TagVersion{}
	}
	subjectDone, err := r.dst.PutManifest(ctx, r.destRepo, ref, rec.MediaType, payload, v)
	if err != nil {
		return err
	}
	if rec.Subject != "" && !subjectDone {
		// No referrers API there: list it in the fallback tag's index.
		if err := r.dst.addFallbackReferrer(ctx, r.destRepo, rec.Subject, rec.Descriptor()); err != nil {
			return err
		}
	}
	return nil
}

// accessories copies the cosign tags (.sig, .att, .sbom) and the referrers
// of subject d that the destination lacks.
func (r *copyRun) accessories(ctx context.Context, d oci.Digest, depth int) error {
	if depth >= maxAccessoryDepth {
		return nil
	}
	for _, s := range policy.AccessorySuffixes {
		tag := policy.AccessoryTag(d, s)
		ad, err := r.src.Tag(ctx, r.repo, tag)
		if errors.Is(err, oci.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		desc, _, found, err := r.dst.Head(ctx, r.destRepo, tag)
		if err != nil {
			return err
		}
		if found && desc.Digest == ad {
			continue
		}
		arec, ap, err := r.src.Manifest(ctx, r.repo, ad)
		if errors.Is(err, oci.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return err
		}
		if err := r.manifest(ctx, arec, ap, tag, oci.TagVersion{}, depth+1); err != nil && !errors.Is(err, oci.ErrSuperseded) {
			return err
		}
	}
	refs, err := r.src.Referrers(ctx, r.repo, d)
	if err != nil || len(refs) == 0 {
		return err
	}
	for _, ref := range refs {
		_, _, found, err := r.dst.Head(ctx, r.destRepo, string(ref.Digest))
		if err != nil {
			return err
		}
		if !found {
			rrec, rp, err := r.src.Manifest(ctx, r.repo, ref.Digest)
			if errors.Is(err, oci.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if err := r.manifest(ctx, rrec, rp, "", oci.TagVersion{}, depth+1); err != nil {
				return err
			}
		}
		if err := r.accessories(ctx, ref.Digest, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func uniqDigests(ds []oci.Digest) []oci.Digest {
	seen := make(map[oci.Digest]bool, len(ds))
	out := ds[:0:0]
	for _, d := range ds {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// blob makes blob d present in the destination repository: already there,
// mounted from another repository there, or uploaded — in one PUT when
// small, else in chunks that resume from the destination's offset after a
// failure.
func (r *copyRun) blob(ctx context.Context, d oci.Digest) error {
	dst := r.dst
	has, err := dst.HasBlob(ctx, r.destRepo, d)
	if err != nil || has {
		return err
	}
	location, done, err := r.startUpload(ctx, d)
	if err != nil || done {
		return err
	}
	rc, size, err := r.src.OpenBlob(ctx, d, 0)
	if err != nil {
		return fmt.Errorf("blob %s at the source: %w", d, err)
	}
	rc.Close()
	if size <= dst.ChunkSize {
		return r.putWhole(ctx, location, d, size)
	}
	return r.putChunked(ctx, location, d, size)
}

// startUpload opens an upload session for d in the destination
// repository, mounting it from a repository that holds it there when one
// is known. done reports a mount that completed.
func (r *copyRun) startUpload(ctx context.Context, d oci.Digest) (string, bool, error) {
	dst := r.dst
	path := "/v2/" + r.destRepo + "/blobs/uploads/"
	scopes := []string{pushScope(r.destRepo)}
	from := dst.holder(d)
	if from != "" && from != r.destRepo {
		path += "?mount=" + url.QueryEscape(string(d)) + "&from=" + url.QueryEscape(from)
		scopes = append(scopes, pullScope(from))
	}
	c, err := dst.client(ctx, scopes...)
	if err != nil {
		return "", false, err
	}
	req, cancel, err := dst.request(ctx, http.MethodPost, path, nil)
	if err != nil {
		return "", false, err
	}
	defer cancel()
	resp, err := dst.do(c, req, "start upload of "+string(d), http.StatusAccepted, http.StatusCreated)
	if err != nil {
		return "", false, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		dst.saw(d, r.destRepo)
		return "", true, nil
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", false, permanentf("start upload of %s: no Location", d)
	}
	return loc, false, nil
}

// withDigest adds ?digest=d to an upload location.
func withDigest(location string, d oci.Digest) (string, error) {
	u, err := url.Parse(location)
	if err != nil {
		return "", permanentf("upload location %q: %v", location, err)
	}
	q := u.Query()
	q.Set("digest", string(d))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// putWhole uploads d in the PUT that closes the session.
func (r *copyRun) putWhole(ctx context.Context, location string, d oci.Digest, size int64) error {
	dst := r.dst
	rc, _, err := r.src.OpenBlob(ctx, d, 0)
	if err != nil {
		return err
	}
	defer rc.Close()
	u, err := withDigest(location, d)
	if err != nil {
		return err
	}
	req, cancel, err := dst.request(ctx, http.MethodPut, u, r.meter(ctx, rc))
	if err != nil {
		return err
	}
	defer cancel()
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	return r.finish(req, d)
}

// finish sends the request that closes an upload and checks the digest
// the destination stored.
func (r *copyRun) finish(req *http.Request, d oci.Digest) error {
	dst := r.dst
	c, err := dst.client(req.Context(), pushScope(r.destRepo))
	if err != nil {
		return err
	}
	resp, err := dst.do(c, req, "upload of "+string(d), http.StatusCreated, http.StatusAccepted, http.StatusNoContent)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != string(d) {
		return permanentf("upload of %s: the destination stored %s", d, got)
	}
	dst.saw(d, r.destRepo)
	return nil
}

// putChunked uploads d in PATCH requests of ChunkSize. After a failed
// PATCH it asks the destination how much it has (GET of the session's
// Range) and goes on from there; a session the destination lost starts
// over.
func (r *copyRun) putChunked(ctx context.Context, location string, d oci.Digest, size int64) error {
	dst := r.dst
	c, err := dst.client(ctx, pushScope(r.destRepo))
	if err != nil {
		return err
	}
	var offset int64
	resumes := 0
	for offset < size {
		n := min(dst.ChunkSize, size-offset)
		next, err := r.patch(ctx, c, location, d, offset, n)
		if err == nil {
			location, offset = next, offset+n
			continue
		}
		// A 416 says the session is elsewhere than we thought (a cut
		// chunk the destination kept part of): ask where, as after a
		// failure.
		var se *StatusError
		misplaced := errors.As(err, &se) && se.Status == http.StatusRequestedRangeNotSatisfiable
		if ctx.Err() != nil || !(IsTemporary(err) || misplaced) || resumes >= maxResumes {
			return err
		}
		resumes++
		got, loc, serr := r.uploadOffset(ctx, c, location)
		switch {
		case serr != nil && IsTemporary(serr):
			return err
		case serr != nil:
			// The session is gone, or the destination cannot say how
			// much of it it has: start over.
			dst.logger.Info("upload session lost; starting over", "digest", d, "error", err, "status_error", serr)
			if location, _, err = r.startUpload(ctx, d); err != nil {
				return err
			}
			offset = 0
		default:
			dst.logger.Info("upload interrupted; resuming", "digest", d, "at", got, "error", err)
			location, offset = loc, got
		}
	}
	u, err := withDigest(location, d)
	if err != nil {
		return err
	}
	req, cancel, err := dst.request(ctx, http.MethodPut, u, nil)
	if err != nil {
		return err
	}
	defer cancel()
	req.ContentLength = 0
	return r.finish(req, d)
}

// patch sends bytes [offset, offset+n) of d and returns the session's next
// location.
func (r *copyRun) patch(ctx context.Context, c *http.Client, location string, d oci.Digest, offset, n int64) (string, error) {
	rc, _, err := r.src.OpenBlob(ctx, d, offset)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	req, cancel, err := r.dst.request(ctx, http.MethodPatch, location, r.meter(ctx, io.LimitReader(rc, n)))
	if err != nil {
		return "", err
	}
	defer cancel()
	req.ContentLength = n
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", strconv.FormatInt(offset, 10)+"-"+strconv.FormatInt(offset+n-1, 10))
	resp, err := r.dst.do(c, req, "upload chunk of "+string(d), http.StatusAccepted, http.StatusNoContent)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "" {
		return loc, nil
	}
	return location, nil
}

// uploadOffset asks the destination how many bytes of the session it has:
// the end of its Range plus one. A session it does not know is
// oci.ErrNotFound.
func (r *copyRun) uploadOffset(ctx context.Context, c *http.Client, location string) (int64, string, error) {
	req, cancel, err := r.dst.request(ctx, http.MethodGet, location, nil)
	if err != nil {
		return 0, "", err
	}
	defer cancel()
	resp, err := r.dst.do(c, req, "upload status", http.StatusNoContent, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 0, "", oci.ErrNotFound
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		loc = location
	}
	rng := resp.Header.Get("Range")
	if rng == "" {
		return 0, loc, nil
	}
	var start, end int64
	if _, err := fmt.Sscanf(rng, "%d-%d", &start, &end); err != nil {
		if _, err := fmt.Sscanf(rng, "bytes=%d-%d", &start, &end); err != nil {
			return 0, "", permanentf("upload status: bad Range %q", rng)
		}
	}
	return end + 1, loc, nil
}

// meter wraps a blob reader with the bandwidth limit and the progress
// report.
func (r *copyRun) meter(ctx context.Context, rd io.Reader) io.Reader {
	return &meteredReader{ctx: ctx, r: rd, lim: r.opt.Limiter, progress: r.opt.Progress, sent: &r.sent}
}

type meteredReader struct {
	ctx      context.Context
	r        io.Reader
	lim      *rate.Limiter
	progress func(int64)
	sent     *atomic.Int64
}

func (m *meteredReader) Read(p []byte) (int, error) {
	if m.lim != nil && len(p) > m.lim.Burst() {
		p = p[:m.lim.Burst()]
	}
	n, err := m.r.Read(p)
	if n > 0 {
		if m.lim != nil {
			if werr := m.lim.WaitN(m.ctx, n); werr != nil {
				return n, werr
			}
		}
		m.sent.Add(int64(n))
		if m.progress != nil {
			m.progress(int64(n))
		}
	}
	return n, err
}

// Delete removes the artifact of a delete task at the destination: the
// tag, while it still points to the deleted digest, or the manifest by
// digest.
func (c *Copier) Delete(ctx context.Context, dst *Remote, t policy.Task) (string, error) {
	var err error
	if t.Tag != "" {
		err = dst.DeleteTag(ctx, t.DestRepo, t.Tag, t.Digest, t.Version)
	} else {
		err = dst.DeleteManifest(ctx, t.DestRepo, t.Digest)
	}
	switch {
	case errors.Is(err, oci.ErrPreconditionFailed):
		return NoteMoved, nil
	case errors.Is(err, oci.ErrSuperseded):
		return NoteSuperseded, nil
	}
	return "", err
}
