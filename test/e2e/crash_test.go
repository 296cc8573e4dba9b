package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The bounds of the crash tests.
const (
	crashCycles        = 3
	crashWorkers       = 4
	maxPushesPerWorker = 150 // per cycle
	firstPushTimeout   = time.Minute
)

// crashSeed returns the seed of the fault schedule: E2E_SEED to replay a
// run, otherwise a new one. It is logged either way.
func crashSeed(t *testing.T) int64 {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("E2E_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("E2E_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with E2E_SEED=%d)", seed, seed)
	return seed
}

// acked is an image whose push the server acknowledged.
type acked struct {
	repo, tag string
	digest    v1.Hash
}

// TestCrashDuringPushes kills the server with SIGKILL while several clients
// push small images, restarts it on the same data directory, and checks that
// every push acknowledged before the kill is intact: pullable by tag and by
// digest with its exact digest, every blob present and hashing to its
// digest, and no blob file on disk that does not hash to its name.
func TestCrashDuringPushes(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(uint64(crashSeed(t)), 0))
	srv := startServer(t, Options{})
	base := deadlineCtx(t, 4*time.Minute)

	var (
		mu   sync.Mutex
		all  []acked
		errs []string // push failures before the kill
	)
	// Blobs count as acknowledged when their upload got its 201, even if
	// the manifest that would reference them never made it.
	blobs := &blobAcks{next: http.DefaultTransport, seen: map[repoBlob]bool{}}
	for cycle := range crashCycles {
		ctx, cancel := context.WithCancel(base)
		var killed atomic.Bool
		first := make(chan struct{})
		var firstOnce sync.Once
		var wg sync.WaitGroup
		for w := range crashWorkers {
			wg.Go(func() {
				repo := fmt.Sprintf("crash/worker-%d", w)
				for i := 0; i < maxPushesPerWorker && ctx.Err() == nil; i++ {
					tag := fmt.Sprintf("c%d-%d", cycle, i)
					d, err := pushOnce(ctx, srv, repo, tag, int64(1024+512*w), remote.WithTransport(blobs))
					if err != nil {
						if !killed.Load() && ctx.Err() == nil {
							mu.Lock()
							errs = append(errs, fmt.Sprintf("%s:%s: %v", repo, tag, err))
							mu.Unlock()
						}
						continue
					}
					// Recorded only now: the server acknowledged the manifest.
					mu.Lock()
					all = append(all, acked{repo: repo, tag: tag, digest: d})
					mu.Unlock()
					firstOnce.Do(func() { close(first) })
				}
			})
		}

		select {
		case <-first:
		case <-time.After(firstPushTimeout):
			cancel()
			wg.Wait()
			t.Fatalf("cycle %d: no push acknowledged within %s: %v", cycle, firstPushTimeout, errs)
		}
		// Fault injection, not an assertion: kill at a seeded point.
		delay := time.Duration(50+rng.IntN(1500)) * time.Millisecond
		<-time.After(delay)
		killed.Store(true)
		srv.Kill()
		cancel()
		wg.Wait()

		mu.Lock()
		n := len(all)
		mu.Unlock()
		t.Logf("cycle %d: killed %s after the first ack; %d pushes acknowledged so far", cycle, delay, n)
		if len(errs) > 0 {
			t.Errorf("cycle %d: %d pushes failed before the kill, first: %s", cycle, len(errs), errs[0])
			errs = nil
		}

		srv.Restart()
		verifyAcked(t, base, srv, all)
		verifyBlobAcks(t, base, srv, blobs.list())
		checkBlobFiles(t, srv)
		if t.Failed() {
			return
		}
	}

	// A clean stop and start keeps all of it too.
	if err := srv.Stop(); err != nil {
		t.Error(err)
	}
	srv.Restart()
	verifyAcked(t, base, srv, all)
}

// pushOnce pushes a new random image by tag with the admin's credentials.
func pushOnce(ctx context.Context, s *Server, repo, tag string, size int64, opts ...remote.Option) (v1.Hash, error) {
	img, err := random.Image(size, 2)
	if err != nil {
		return v1.Hash{}, err
	}
	ref, err := name.ParseReference(s.Host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img, append(s.remote(ctx), opts...)...); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// repoBlob is a blob acknowledged in a repository.
type repoBlob struct {
	repo   string
	digest string
}

// blobAcks is an http.RoundTripper that records every blob upload the
// server acknowledged with 201 (a PUT that completes an upload, a
// monolithic POST, a mount).
type blobAcks struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen map[repoBlob]bool
}

func (b *blobAcks) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		return resp, err
	}
	before, _, ok := strings.Cut(req.URL.Path, "/blobs/uploads/")
	if !ok {
		return resp, err
	}
	d := resp.Header.Get("Docker-Content-Digest")
	for _, k := range []string{"digest", "mount"} {
		if d == "" {
			d = req.URL.Query().Get(k)
		}
	}
	if d != "" {
		b.mu.Lock()
		b.seen[repoBlob{repo: strings.TrimPrefix(before, "/v2/"), digest: d}] = true
		b.mu.Unlock()
	}
	return resp, err
}

func (b *blobAcks) list() []repoBlob {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]repoBlob, 0, len(b.seen))
	for rb := range b.seen {
		out = append(out, rb)
	}
	return out
}

// verifyBlobAcks checks that every acknowledged blob is fetchable from its
// repository and hashes to its digest.
func verifyBlobAcks(t *testing.T, ctx context.Context, s *Server, acks []repoBlob) {
	t.Helper()
	var failures []string
	for _, a := range acks {
		h, err := v1.NewHash(a.digest)
		if err == nil {
			err = verifyBlob(ctx, s, a.repo, h)
		}
		if err != nil {
			failures = append(failures, err.Error())
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d acknowledged blobs lost or damaged after restart; first ones:\n%s",
			len(failures), len(acks), strings.Join(failures[:min(len(failures), 10)], "\n"))
		return
	}
	t.Logf("all %d acknowledged blob uploads intact", len(acks))
}

// verifyAcked checks every acknowledged image, in parallel.
func verifyAcked(t *testing.T, ctx context.Context, s *Server, images []acked) {
	t.Helper()
	start := time.Now()
	work := make(chan acked)
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for a := range work {
				if err := verifyImage(ctx, s, a.repo, a.tag, a.digest); err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	for _, a := range images {
		work <- a
	}
	close(work)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d acknowledged images lost or damaged on %s; first ones:\n%s",
			len(failures), len(images), s.URL(), strings.Join(failures[:min(len(failures), 10)], "\n"))
		return
	}
	t.Logf("all %d acknowledged images intact on %s (%s)", len(images), s.URL(), time.Since(start).Round(time.Millisecond))
}

// The sizes of the chunked upload.
const (
	uploadChunk    = 1 << 20  // each acknowledged PATCH
	uploadChunks   = 3        // acknowledged before the kill
	uploadBig      = 24 << 20 // the PATCH that the kill interrupts
	sentBeforeKill = 8 << 20  // of the big PATCH, written before the kill
	resumeChunk    = 8 << 20
)

// TestCrashDuringChunkedUpload PATCHes an upload in acknowledged chunks,
// kills the server in the middle of a large PATCH body, restarts it, and
// checks that the session reports an offset at or past the last
// acknowledged one, resumes from exactly that offset and completes to a
// blob with the right digest; no partial blob is visible on disk.
func TestCrashDuringChunkedUpload(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	ctx := deadlineCtx(t, 3*time.Minute)
	const repo = "crash/chunked"
	data := randomBytes(uploadChunks*uploadChunk + uploadBig)
	digest := sha256Hex(data)

	resp := doUpload(t, ctx, srv, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	expectStatus(t, resp, http.StatusAccepted, "POST upload")
	loc := location(t, srv, resp)

	off := 0
	for i := range uploadChunks {
		loc, off = patchChunk(t, ctx, srv, loc, data, off, uploadChunk)
		if want := (i + 1) * uploadChunk; off != want {
			t.Fatalf("PATCH %d acknowledged offset %d, want %d", i, off, want)
		}
	}
	ackedOff := off

	// The big PATCH: its body is a pipe that the kill leaves half written.
	pr, pw := io.Pipe()
	req, err := srv.newRequest(ctx, http.MethodPatch, loc, pr, true)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = uploadBig
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", ackedOff, ackedOff+uploadBig-1))
	patchDone := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the interrupted PATCH was answered %s", resp.Status)
		}
		patchDone <- err
	}()
	var written atomic.Int64
	go func() {
		const piece = 256 << 10
		for p := ackedOff; p < ackedOff+sentBeforeKill; p += piece {
			n, err := pw.Write(data[p : p+piece])
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for written.Load() < sentBeforeKill && time.Now().Before(deadline) {
		<-time.After(10 * time.Millisecond)
	}
	sent := written.Load()
	srv.Kill()
	pw.CloseWithError(errors.New("server killed"))
	if err := <-patchDone; err != nil && strings.Contains(err.Error(), "was answered") {
		t.Fatal(err)
	}
	t.Logf("killed with %d bytes acknowledged and %d of the next %d-byte PATCH written", ackedOff, sent, uploadBig)

	srv.Restart()
	resp = doUpload(t, ctx, srv, http.MethodGet, loc, nil, nil)
	expectStatus(t, resp, http.StatusNoContent, "GET upload status after restart")
	off = rangeEnd(t, resp)
	if off < ackedOff || off > ackedOff+int(sent) {
		t.Fatalf("after restart the upload is at offset %d, want between the acknowledged %d and %d sent", off, ackedOff, ackedOff+int(sent))
	}
	if resp.Header.Get("Location") != "" {
		loc = location(t, srv, resp)
	}
	t.Logf("after restart the upload resumes at offset %d", off)

	// The client resends from the offset the server recorded.
	for off < len(data) {
		loc, off = patchChunk(t, ctx, srv, loc, data, off, min(resumeChunk, len(data)-off))
	}
	resp = doUpload(t, ctx, srv, http.MethodPut, withQuery(t, loc, "digest", digest), nil, nil)
	expectStatus(t, resp, http.StatusCreated, "PUT upload")
	if got := resp.Header.Get("Docker-Content-Digest"); got != digest {
		t.Errorf("PUT upload: Docker-Content-Digest %q, want %s", got, digest)
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyBlob(ctx, srv, repo, h); err != nil {
		t.Fatal(err)
	}
	checkBlobFiles(t, srv)
}

// patchChunk PATCHes data[off:off+n] with its Content-Range and returns the
// next Location and the acknowledged offset from the 202's Range header.
func patchChunk(t *testing.T, ctx context.Context, s *Server, loc string, data []byte, off, n int) (string, int) {
	t.Helper()
	hdr := http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {fmt.Sprintf("%d-%d", off, off+n-1)},
	}
	resp := doUpload(t, ctx, s, http.MethodPatch, loc, data[off:off+n], hdr)
	expectStatus(t, resp, http.StatusAccepted, fmt.Sprintf("PATCH %d-%d", off, off+n-1))
	end := rangeEnd(t, resp)
	if end != off+n {
		t.Fatalf("PATCH %d-%d: Range says %d bytes received", off, off+n-1, end)
	}
	return location(t, s, resp), end
}

// doUpload sends one authenticated upload request and returns the response
// with its body read and closed.
func doUpload(t *testing.T, ctx context.Context, s *Server, method, urlOrPath string, body []byte, hdr http.Header) *http.Response {
	t.Helper()
	req, err := s.newRequest(ctx, method, urlOrPath, bytes.NewReader(body), true)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, urlOrPath, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func expectStatus(t *testing.T, resp *http.Response, want int, what string) {
	t.Helper()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s, want %d: %s", what, resp.Status, want, b)
	}
}

// location resolves the Location header against the server URL.
func location(t *testing.T, s *Server, resp *http.Response) string {
	t.Helper()
	l := resp.Header.Get("Location")
	if l == "" {
		t.Fatalf("%s %s: %s without Location", resp.Request.Method, resp.Request.URL, resp.Status)
	}
	base, err := url.Parse(s.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	u, err := base.Parse(l)
	if err != nil {
		t.Fatalf("Location %q: %v", l, err)
	}
	return u.String()
}

// rangeEnd parses a "0-<last>" Range header into the number of bytes held.
func rangeEnd(t *testing.T, resp *http.Response) int {
	t.Helper()
	r := resp.Header.Get("Range")
	first, last, ok := strings.Cut(strings.TrimPrefix(r, "bytes="), "-")
	if !ok || first != "0" {
		t.Fatalf("%s %s: Range %q, want 0-<last>", resp.Request.Method, resp.Request.URL, r)
	}
	n, err := strconv.Atoi(last)
	if err != nil {
		t.Fatalf("Range %q: %v", r, err)
	}
	return n + 1
}

// withQuery adds key=value to the query of u.
func withQuery(t *testing.T, u, key, value string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := parsed.Query()
	q.Set(key, value)
	parsed.RawQuery = q.Encode()
	return parsed.String()
}
