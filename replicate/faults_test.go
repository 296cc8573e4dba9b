package replicate_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/replicate"
)

// fault is what faultTransport does to the requests a rule matches.
type fault struct {
	method string // "" any
	path   string // substring of the path; "" any
	times  int    // how many matching requests it hits (then it lets them through)
	// What it does: answer status (with Retry-After when retryAfter), or
	// cut the request body after cutAfter bytes (the connection dies
	// mid-upload).
	status     int
	retryAfter string
	cutAfter   int64
}

// faultTransport injects faults into requests to a real registry, and
// counts what goes through.
type faultTransport struct {
	next http.RoundTripper

	mu     sync.Mutex
	faults []*fault
	hits   map[*fault]int

	bodyBytes atomic.Int64 // request body bytes that reached the registry
	requests  sync.Map     // "METHOD kind" → *atomic.Int64
}

func newFaultTransport(faults ...*fault) *faultTransport {
	return &faultTransport{next: http.DefaultTransport, faults: faults, hits: map[*fault]int{}}
}

func (f *faultTransport) count(r *http.Request) {
	kind := "other"
	switch {
	case strings.Contains(r.URL.Path, "/blobs/uploads/"):
		kind = "upload"
		if r.URL.Query().Get("mount") != "" {
			kind = "mount"
		}
	case strings.Contains(r.URL.Path, "/blobs/"):
		kind = "blob"
	case strings.Contains(r.URL.Path, "/manifests/"):
		kind = "manifest"
	}
	v, _ := f.requests.LoadOrStore(r.Method+" "+kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (f *faultTransport) n(key string) int64 {
	v, ok := f.requests.Load(key)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// match returns the fault to apply to r, if any, and counts its hit.
func (f *faultTransport) match(r *http.Request) *fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ft := range f.faults {
		if (ft.method == "" || ft.method == r.Method) && strings.Contains(r.URL.Path, ft.path) && f.hits[ft] < ft.times {
			f.hits[ft]++
			return ft
		}
	}
	return nil
}

func (f *faultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.count(r)
	ft := f.match(r)
	if ft != nil && ft.status != 0 {
		if r.Body != nil {
			r.Body.Close()
		}
		h := http.Header{"Content-Type": {"application/json"}}
		if ft.retryAfter != "" {
			h.Set("Retry-After", ft.retryAfter)
		}
		body := `{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}`
		return &http.Response{StatusCode: ft.status, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	}
	if r.Body != nil && r.ContentLength != 0 {
		body := &countingBody{r: r.Body, n: &f.bodyBytes, limit: -1}
		if ft != nil && ft.cutAfter > 0 {
			body.limit = ft.cutAfter
		}
		r.Body = body
	}
	return f.next.RoundTrip(r)
}

// countingBody counts what is read, and fails once limit (≥ 0) bytes
// have been, as a connection cut mid-body would.
type countingBody struct {
	r     io.ReadCloser
	n     *atomic.Int64
	limit int64
	read  int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.limit >= 0 {
		if b.read >= b.limit {
			return 0, io.ErrUnexpectedEOF
		}
		if rest := b.limit - b.read; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.r.Close() }

// memSource is a Source over manifests and blobs held in memory.
type memSource struct {
	manifests map[string][]byte // repo@digest → bytes
	types     map[oci.Digest]string
	tags      map[string]oci.Digest // repo:tag → digest
	blobs     map[oci.Digest][]byte
	referrers map[oci.Digest][]oci.Descriptor
}

func newMemSource() *memSource {
	return &memSource{
		manifests: map[string][]byte{}, types: map[oci.Digest]string{}, tags: map[string]oci.Digest{},
		blobs: map[oci.Digest][]byte{}, referrers: map[oci.Digest][]oci.Descriptor{},
	}
}

func (s *memSource) Manifest(_ context.Context, repo string, d oci.Digest) (oci.Record, []byte, error) {
	b, ok := s.manifests[repo+"@"+string(d)]
	if !ok {
		return oci.Record{}, nil, fmt.Errorf("%s@%s: %w", repo, d, oci.ErrNotFound)
	}
	m, err := oci.ParseManifest(s.types[d], b)
	if err != nil {
		return oci.Record{}, nil, err
	}
	return oci.NewRecord(repo, d, int64(len(b)), m, 0), b, nil
}

func (s *memSource) Tag(_ context.Context, repo, tag string) (oci.Digest, error) {
	d, ok := s.tags[repo+":"+tag]
	if !ok {
		return "", oci.ErrNotFound
	}
	return d, nil
}

func (s *memSource) Referrers(_ context.Context, _ string, subject oci.Digest) ([]oci.Descriptor, error) {
	return s.referrers[subject], nil
}

func (s *memSource) OpenBlob(_ context.Context, d oci.Digest, offset int64) (io.ReadCloser, int64, error) {
	b, ok := s.blobs[d]
	if !ok {
		return nil, 0, oci.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b[offset:])), int64(len(b)), nil
}

func (s *memSource) blob(t *testing.T, size int) oci.Digest {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	d := oci.DigestOf(b)
	s.blobs[d] = b
	return d
}

// image adds an image manifest with a config and layers of the given
// sizes to repo (tagged tag unless ""), with subject when not "".
func (s *memSource) image(t *testing.T, repo, tag string, subject oci.Digest, artifactType string, layers ...int) oci.Digest {
	t.Helper()
	cfg := []byte(fmt.Sprintf(`{"seed":%q}`, rand.Text()))
	cd := oci.DigestOf(cfg)
	s.blobs[cd] = cfg
	var ls []string
	for _, n := range layers {
		ld := s.blob(t, n)
		ls = append(ls, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}`, ld, n))
	}
	sub := ""
	if subject != "" {
		sb := s.manifests[repo+"@"+string(subject)]
		sub = fmt.Sprintf(`,"subject":{"mediaType":%q,"digest":%q,"size":%d}`, s.types[subject], subject, len(sb))
	}
	at := ""
	if artifactType != "" {
		at = fmt.Sprintf(`,"artifactType":%q`, artifactType)
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q%s,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[%s]%s}`,
		oci.MediaTypeImageManifest, at, cd, len(cfg), strings.Join(ls, ","), sub))
	d := oci.DigestOf(body)
	s.manifests[repo+"@"+string(d)] = body
	s.types[d] = oci.MediaTypeImageManifest
	if tag != "" {
		s.tags[repo+":"+tag] = d
	}
	if subject != "" {
		s.referrers[subject] = append(s.referrers[subject], oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: d, Size: int64(len(body)), ArtifactType: artifactType})
	}
	return d
}

// index adds an index of children to repo, tagged tag.
func (s *memSource) index(repo, tag string, children ...oci.Digest) oci.Digest {
	var ms []string
	for _, c := range children {
		ms = append(ms, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, s.types[c], c, len(s.manifests[repo+"@"+string(c)])))
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, oci.MediaTypeImageIndex, strings.Join(ms, ",")))
	d := oci.DigestOf(body)
	s.manifests[repo+"@"+string(d)] = body
	s.types[d] = oci.MediaTypeImageIndex
	s.tags[repo+":"+tag] = d
	return d
}

// ociDest is a go-containerregistry registry on httptest and a Remote to
// it through faults.
func ociDest(t *testing.T, referrers bool, ft http.RoundTripper) *replicate.Remote {
	t.Helper()
	var opts []ggcrregistry.Option
	if referrers {
		opts = append(opts, ggcrregistry.WithReferrersSupport(true))
	}
	opts = append(opts, ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(ggcrregistry.New(opts...))
	t.Cleanup(srv.Close)
	ep := policy.Endpoint{Name: "dst", URL: srv.URL, Type: policy.EndpointOCI}
	r, err := replicate.NewRemote(ep, "", ft, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// berthDest is a berth registry (one node, on httptest) and a Remote to it
// through rt: unlike go-containerregistry's registry it keeps blobs per
// repository and reports an upload's offset, as distribution does.
func berthDest(t *testing.T, rt http.RoundTripper) *replicate.Remote {
	t.Helper()
	s := newSite(t, "dst")
	ep := policy.Endpoint{Name: "dst", URL: s.srv.URL, Type: policy.EndpointBerth, User: adminUser}
	r, err := replicate.NewRemote(ep, adminPass, rt, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func copyTask(repo, tag string, d oci.Digest) policy.Task {
	return policy.Task{Kind: policy.TaskCopy, Repo: repo, Tag: tag, Digest: d, DestRepo: "dst/" + repo, Endpoint: "dst"}
}

// copyUntilDone runs Copy as the engine would, attempt after attempt while
// the failure is temporary, and returns the attempts it took.
func copyUntilDone(t *testing.T, c *replicate.Copier, src replicate.Source, dst *replicate.Remote, task policy.Task, opt replicate.CopyOptions) (int, replicate.CopyResult) {
	t.Helper()
	for attempt := 1; attempt <= 10; attempt++ {
		res, err := c.Copy(t.Context(), src, dst, task, opt)
		if err == nil {
			return attempt, res
		}
		if !replicate.IsTemporary(err) {
			t.Fatalf("attempt %d: permanent error: %v", attempt, err)
		}
		t.Logf("attempt %d: temporary: %v", attempt, err)
	}
	t.Fatal("no success in 10 attempts")
	return 0, replicate.CopyResult{}
}

func TestCopyRetriesTemporaryFailures(t *testing.T) {
	tests := []struct {
		name  string
		fault *fault
	}{
		{"503 on the manifest", &fault{method: http.MethodPut, path: "/manifests/", times: 2, status: http.StatusServiceUnavailable}},
		{"429 with Retry-After", &fault{method: http.MethodPost, path: "/blobs/uploads/", times: 1, status: http.StatusTooManyRequests, retryAfter: "1"}},
		{"502 on blob checks", &fault{method: http.MethodHead, path: "/blobs/", times: 3, status: http.StatusBadGateway}},
		{"401 until credentials work", &fault{method: http.MethodPut, path: "/manifests/", times: 1, status: http.StatusUnauthorized}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource()
			d := src.image(t, "app", "v1", "", "", 1000, 2000)
			ft := newFaultTransport(tt.fault)
			dst := ociDest(t, true, ft)
			c := replicate.NewCopier(slog.New(slog.NewTextHandler(io.Discard, nil)))
			attempts, _ := copyUntilDone(t, c, src, dst, copyTask("app", "v1", d), replicate.CopyOptions{})
			if attempts < 2 {
				t.Fatalf("the fault did not make an attempt fail (attempts %d)", attempts)
			}
			desc, _, found, err := dst.Head(t.Context(), "dst/app", "v1")
			if err != nil || !found || desc.Digest != d {
				t.Fatalf("at the destination: %+v %v %v", desc, found, err)
			}
		})
	}
	t.Run("Retry-After is read", func(t *testing.T) {
		src := newMemSource()
		d := src.image(t, "app", "v1", "", "", 10)
		dst := ociDest(t, true, newFaultTransport(&fault{method: http.MethodPut, path: "/manifests/", times: 1, status: http.StatusTooManyRequests, retryAfter: "7"}))
		_, err := replicate.NewCopier(slog.Default()).Copy(t.Context(), src, dst, copyTask("app", "v1", d), replicate.CopyOptions{})
		if !replicate.IsTemporary(err) || replicate.RetryAfter(err).Seconds() != 7 {
			t.Fatalf("err %v, retry after %s", err, replicate.RetryAfter(err))
		}
	})
	t.Run("400 is permanent", func(t *testing.T) {
		src := newMemSource()
		d := src.image(t, "app", "v1", "", "", 10)
		dst := ociDest(t, true, newFaultTransport(&fault{method: http.MethodPut, path: "/manifests/", times: 1, status: http.StatusBadRequest}))
		_, err := replicate.NewCopier(slog.Default()).Copy(t.Context(), src, dst, copyTask("app", "v1", d), replicate.CopyOptions{})
		if err == nil || replicate.IsTemporary(err) {
			t.Fatalf("err %v: want a permanent error", err)
		}
	})
}

// TestCopyResumesCutUpload cuts a large blob's upload mid-body and checks
// that the copy goes on from the offset the destination reports instead
// of sending the blob again.
func TestCopyResumesCutUpload(t *testing.T) {
	const size, chunk = 40 << 20, 4 << 20
	src := newMemSource()
	d := src.image(t, "big", "v1", "", "", size)
	// The fourth PATCH dies after 1 MiB of its 4 MiB.
	ft := newFaultTransport()
	cut := &fault{method: http.MethodPatch, path: "/blobs/uploads/", times: 1, cutAfter: 1 << 20}
	dst := berthDest(t, &skipFirst{ft: ft, skip: 3, f: cut})
	dst.ChunkSize = chunk
	c := replicate.NewCopier(slog.New(slog.NewTextHandler(io.Discard, nil)))
	res, err := c.Copy(t.Context(), src, dst, copyTask("big", "v1", d), replicate.CopyOptions{})
	if err != nil {
		t.Fatalf("copy with one cut upload: %v", err)
	}
	desc, _, found, err := dst.Head(t.Context(), "dst/big", "v1")
	if err != nil || !found || desc.Digest != d {
		t.Fatalf("at the destination: %+v %v %v", desc, found, err)
	}
	// Everything sent once, plus at most the cut chunk again.
	if sent := ft.bodyBytes.Load(); sent > size+2*chunk {
		t.Fatalf("sent %d bytes for a %d-byte blob: the upload restarted instead of resuming", sent, size)
	}
	if res.Bytes < size {
		t.Fatalf("result counts %d bytes, want at least %d", res.Bytes, size)
	}
	if ft.n("GET upload") == 0 {
		t.Fatal("the copy never asked the destination for the upload's offset")
	}
}

// skipFirst lets skip matching requests through, then applies f once, on
// top of ft.
type skipFirst struct {
	ft   *faultTransport
	skip int
	f    *fault
	seen atomic.Int64
}

func (s *skipFirst) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == s.f.method && strings.Contains(r.URL.Path, s.f.path) {
		if n := s.seen.Add(1); n == int64(s.skip+1) {
			s.ft.mu.Lock()
			s.ft.faults = append(s.ft.faults, s.f)
			s.ft.mu.Unlock()
		}
	}
	return s.ft.RoundTrip(r)
}

func TestCopyIndexAccessoriesAndReferrers(t *testing.T) {
	for _, referrersAPI := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers API %v", referrersAPI), func(t *testing.T) {
			src := newMemSource()
			a := src.image(t, "app", "", "", "", 100)
			b := src.image(t, "app", "", "", "", 200)
			idx := src.index("app", "v1", a, b)
			sig := src.image(t, "app", policy.AccessoryTag(idx, ".sig"), "", "", 50)
			att := src.image(t, "app", policy.AccessoryTag(idx, ".att"), "", "", 60)
			ref := src.image(t, "app", "", idx, "application/vnd.example.sbom", 70)
			ft := newFaultTransport()
			dst := ociDest(t, referrersAPI, ft)
			c := replicate.NewCopier(slog.New(slog.NewTextHandler(io.Discard, nil)))
			task := copyTask("app", "v1", idx)
			if _, err := c.Copy(t.Context(), src, dst, task, replicate.CopyOptions{}); err != nil {
				t.Fatal(err)
			}
			for ref, want := range map[string]oci.Digest{
				"v1": idx, string(a): a, string(b): b,
				policy.AccessoryTag(idx, ".sig"): sig, policy.AccessoryTag(idx, ".att"): att, string(ref): ref,
			} {
				desc, _, found, err := dst.Head(t.Context(), "dst/app", ref)
				if err != nil || !found || desc.Digest != want {
					t.Errorf("%s at the destination: %+v %v %v; want %s", ref, desc, found, err, want)
				}
			}
			refs, supported, err := dst.Referrers(t.Context(), "dst/app", idx)
			if err != nil || supported != referrersAPI || len(refs) != 1 || refs[0].Digest != ref {
				t.Fatalf("referrers at the destination: %+v (API %v) %v; want %s", refs, supported, err, ref)
			}
			// Idempotent: a second copy uploads nothing.
			before := ft.bodyBytes.Load()
			res, err := c.Copy(t.Context(), src, dst, task, replicate.CopyOptions{})
			if err != nil || res.Bytes != 0 || ft.bodyBytes.Load() != before {
				t.Fatalf("second copy sent %d bytes (%d in the result), err %v", ft.bodyBytes.Load()-before, res.Bytes, err)
			}
		})
	}
}

func TestCopyMountsAndFilters(t *testing.T) {
	src := newMemSource()
	d := src.image(t, "one", "v1", "", "", 5000)
	// The same layer in another repository.
	body := src.manifests["one@"+string(d)]
	src.manifests["two@"+string(d)] = body
	src.tags["two:v1"] = d
	ft := newFaultTransport()
	dst := berthDest(t, ft)
	c := replicate.NewCopier(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := c.Copy(t.Context(), src, dst, copyTask("one", "v1", d), replicate.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	before := ft.bodyBytes.Load()
	if _, err := c.Copy(t.Context(), src, dst, copyTask("two", "v1", d), replicate.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if ft.n("POST mount") == 0 {
		t.Fatal("no cross-repository mount")
	}
	if sent := ft.bodyBytes.Load() - before; sent > int64(len(body))+1 {
		t.Fatalf("the second repository's copy uploaded %d bytes; blobs should have been mounted", sent)
	}

	// Only signed: an unsigned artifact is skipped, with a note.
	u := src.image(t, "three", "v1", "", "", 10)
	res, err := c.Copy(t.Context(), src, dst, copyTask("three", "v1", u), replicate.CopyOptions{OnlySigned: true})
	if err != nil || res.Note != replicate.NoteUnsigned {
		t.Fatalf("unsigned copy: %+v %v", res, err)
	}
	if _, _, found, _ := dst.Head(t.Context(), "dst/three", "v1"); found {
		t.Fatal("an unsigned artifact was copied by an only-signed policy")
	}

	// No override: a tag that points elsewhere at a plain registry stays.
	dst = ociDest(t, true, newFaultTransport())
	other := src.image(t, "one", "v2", "", "", 10)
	if _, err := c.Copy(t.Context(), src, dst, copyTask("one", "v2", other), replicate.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Copy(t.Context(), src, dst, policy.Task{Kind: policy.TaskCopy, Repo: "one", Tag: "v2", Digest: d, DestRepo: "dst/one"}, replicate.CopyOptions{})
	if err == nil || replicate.IsTemporary(err) {
		t.Fatalf("moving a tag without override: %v, want a permanent refusal", err)
	}
	if _, err := c.Copy(t.Context(), src, dst, policy.Task{Kind: policy.TaskCopy, Repo: "one", Tag: "v2", Digest: d, DestRepo: "dst/one"}, replicate.CopyOptions{Override: true}); err != nil {
		t.Fatalf("with override: %v", err)
	}

	// A delete leaves a tag that moved meanwhile alone.
	note, err := c.Delete(t.Context(), dst, policy.Task{Kind: policy.TaskDelete, Tag: "v2", Digest: other, DestRepo: "dst/one"})
	if err != nil || note != replicate.NoteMoved {
		t.Fatalf("delete of a moved tag: %q %v", note, err)
	}
	if _, _, found, _ := dst.Head(t.Context(), "dst/one", "v2"); !found {
		t.Fatal("a moved tag was deleted")
	}
	if _, err := c.Delete(t.Context(), dst, policy.Task{Kind: policy.TaskDelete, Tag: "v2", Digest: d, DestRepo: "dst/one"}); err != nil {
		t.Fatal(err)
	}
	if _, _, found, err := dst.Head(t.Context(), "dst/one", "v2"); found || err != nil {
		t.Fatalf("tag still there after its delete: %v", err)
	}
}

func TestIsTemporary(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&replicate.StatusError{Status: 503}, true},
		{&replicate.StatusError{Status: 429}, true},
		{&replicate.StatusError{Status: 401}, true},
		{&replicate.StatusError{Status: 404}, false},
		{&replicate.StatusError{Status: 400}, false},
		{fmt.Errorf("put: %w", io.ErrUnexpectedEOF), true},
		{oci.ErrNotFound, false},
		{errors.New("something else"), false},
	} {
		if got := replicate.IsTemporary(tt.err); got != tt.want {
			t.Errorf("IsTemporary(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
