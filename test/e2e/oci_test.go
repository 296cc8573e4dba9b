package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// digestRE matches a sha256 digest in client output.
var digestRE = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

// ref parses "repo:tag" or "repo@digest" on the server.
func (s *Server) ref(t testing.TB, repoRef string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s.Host()+"/"+repoRef, name.Insecure)
	if err != nil {
		t.Fatalf("parse %q: %v", repoRef, err)
	}
	return r
}

// Auth is the admin's basic-auth authenticator.
func (s *Server) Auth() authn.Authenticator {
	return &authn.Basic{Username: s.Username(), Password: s.Password()}
}

// remote returns go-containerregistry options with the admin's credentials.
func (s *Server) remote(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithAuth(s.Auth()), remote.WithContext(ctx)}
}

// pushRandom pushes a small random image by tag and returns its digest.
func pushRandom(t testing.TB, s *Server, repoTag string) v1.Hash {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := deadlineCtx(t, time.Minute)
	if err := remote.Write(s.ref(t, repoTag), img, s.remote(ctx)...); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// headDigest returns the digest the server reports for a manifest reference.
func headDigest(t testing.TB, s *Server, repoRef string) string {
	t.Helper()
	ctx := deadlineCtx(t, time.Minute)
	desc, err := remote.Head(s.ref(t, repoRef), s.remote(ctx)...)
	if err != nil {
		t.Fatalf("head %s: %v", repoRef, err)
	}
	return desc.Digest.String()
}

// newRequest builds a request to the server, with the admin's credentials
// when auth is true.
func (s *Server) newRequest(ctx context.Context, method, urlOrPath string, body io.Reader, auth bool) (*http.Request, error) {
	u := urlOrPath
	if strings.HasPrefix(u, "/") {
		u = s.URL() + u
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if auth {
		req.SetBasicAuth(s.Username(), s.Password())
	}
	return req, nil
}

// verifyBlob fetches a blob and checks that its bytes hash to its digest.
func verifyBlob(ctx context.Context, s *Server, repo string, d v1.Hash) error {
	req, err := s.newRequest(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil, true)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get blob %s@%s: %w", repo, d, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get blob %s@%s: %s", repo, d, resp.Status)
	}
	got, _, err := v1.SHA256(resp.Body)
	if err != nil {
		return fmt.Errorf("read blob %s@%s: %w", repo, d, err)
	}
	if got != d {
		return fmt.Errorf("blob %s@%s: content hashes to %s", repo, d, got)
	}
	return nil
}

// checkBlobFiles walks the server's blob directory and fails the test
// unless every blob file hashes to the digest its path names: no partial
// blob is visible. A blob file is named by its hex digest (berth), or is
// "data" in a directory so named (distribution); other files (temporary
// ones) are reported in the log. It returns the number of blobs checked.
func checkBlobFiles(t testing.TB, s *Server) int {
	t.Helper()
	root := s.BlobsDir()
	checked := 0
	var others []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		hexName := d.Name()
		if hexName == "data" {
			hexName = filepath.Base(filepath.Dir(p))
		}
		var h hash.Hash
		switch {
		case isHex(hexName, 64) && !strings.Contains(p, "sha512"):
			h = sha256.New()
		case isHex(hexName, 128):
			h = sha512.New()
		default:
			others = append(others, strings.TrimPrefix(p, root+"/"))
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != hexName {
			t.Errorf("blob file %s hashes to %s: a partial or corrupt blob is visible", p, got)
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	if len(others) > 0 {
		sort.Strings(others)
		t.Logf("%d files under %s not named by a digest: %s", len(others), root, strings.Join(others[:min(len(others), 10)], ", "))
	}
	t.Logf("%d blob files under %s hash to their names", checked, root)
	if checked == 0 {
		t.Errorf("no blob files found under %s (other files: %v): the layout check would be vacuous", root, others)
	}
	return checked
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// randomHex returns 2n random hex characters, for unique names.
func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }

// writeFiles writes name → content under dir.
func writeFiles(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for n, b := range files {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sampleFiles is the content of a small image layer: a few files, one of
// them random so every run's image is new.
func sampleFiles() map[string][]byte {
	return map[string][]byte{
		"etc/berth-e2e/hello.txt": []byte("hello from berth e2e\n"),
		"etc/berth-e2e/random":    randomBytes(64 << 10),
		"usr/share/berth/README":  []byte("an image built from files by test/e2e\n"),
	}
}

// writeLayerTar writes files as an uncompressed tar (a layer, or an input to
// docker and podman import) and returns its path.
func writeLayerTar(t testing.TB, path string, files map[string][]byte) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range names {
		for d := filepath.Dir(n); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		b := files[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// ociImage builds an OCI image (OCI manifest, config and layer media types)
// with one layer made of files.
func ociImage(t testing.TB, files map[string][]byte) v1.Image {
	t.Helper()
	layerPath := writeLayerTar(t, filepath.Join(t.TempDir(), "layer.tar"), files)
	layer, err := tarball.LayerFromFile(layerPath, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/bin/true"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// sha256Hex is the sha256 digest of b as "sha256:<hex>".
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// fileDigest is the sha256 digest of a file's bytes.
func fileDigest(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256Hex(b)
}

// verifyImage checks that repo:tag names digest, that the manifest fetched
// by digest hashes to it, and that its config and layers are fetchable and
// hash to their digests.
func verifyImage(ctx context.Context, s *Server, repo, tag string, digest v1.Hash) error {
	opts := s.remote(ctx)
	byTag, err := name.ParseReference(s.Host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	desc, err := remote.Head(byTag, opts...)
	if err != nil {
		return fmt.Errorf("head %s:%s: %w", repo, tag, err)
	}
	if desc.Digest != digest {
		return fmt.Errorf("%s:%s names %s, want %s", repo, tag, desc.Digest, digest)
	}
	return verifyBlobsOf(ctx, s, repo+"@"+digest.String())
}

// verifyBlobsOf fetches an image manifest, checks that its bytes hash to the
// digest the server gives, and verifies its config and every layer.
func verifyBlobsOf(ctx context.Context, s *Server, repoRef string) error {
	ref, err := name.ParseReference(s.Host()+"/"+repoRef, name.Insecure)
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, s.remote(ctx)...)
	if err != nil {
		return fmt.Errorf("get %s: %w", repoRef, err)
	}
	if got := sha256Hex(desc.Manifest); got != desc.Digest.String() {
		return fmt.Errorf("manifest %s: bytes hash to %s, server says %s", repoRef, got, desc.Digest)
	}
	if d, ok := ref.(name.Digest); ok && d.DigestStr() != desc.Digest.String() {
		return fmt.Errorf("manifest %s: server says %s", repoRef, desc.Digest)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return fmt.Errorf("manifest %s: %w", repoRef, err)
	}
	repo := ref.Context().RepositoryStr()
	if err := verifyBlob(ctx, s, repo, m.Config.Digest); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if err := verifyBlob(ctx, s, repo, l.Digest); err != nil {
			return err
		}
	}
	return nil
}
