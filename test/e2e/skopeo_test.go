package e2e

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// insecurePolicy is a containers-policy.json that accepts any image, so
// skopeo and podman do not depend on the host's /etc/containers.
const insecurePolicy = `{"default":[{"type":"insecureAcceptAnything"}]}`

// TestSkopeo pushes an OCI archive built from files with skopeo, then pulls
// it back into a dir: and compares digests.
func TestSkopeo(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	c := newClients(t, srv)
	policy := c.path("policy.json")
	writeFiles(t, c.dir, map[string][]byte{"policy.json": []byte(insecurePolicy)})
	creds := srv.Username() + ":" + srv.Password()

	img := ociImage(t, sampleFiles())
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	digest := d.String()
	layoutDir := c.path("layout")
	lp, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": "e2e",
	})); err != nil {
		t.Fatal(err)
	}
	archive := tarDir(t, layoutDir, c.path("image.oci.tar"))

	ref := "docker://" + srv.Host() + "/skopeo/image:1"
	c.run("skopeo", "--policy", policy, "copy", "--dest-tls-verify=false", "--dest-creds", creds,
		"--digestfile", c.path("pushed.digest"), "oci-archive:"+archive+":e2e", ref)
	pushed := strings.TrimSpace(readFile(t, c.path("pushed.digest")))
	if pushed != digest {
		t.Errorf("skopeo pushed %s, the image is %s (skopeo changed the manifest)", pushed, digest)
	}
	if got := headDigest(t, srv, "skopeo/image:1"); got != digest {
		t.Errorf("HEAD skopeo/image:1 = %s, want %s", got, digest)
	}

	out := c.run("skopeo", "--policy", policy, "inspect", "--tls-verify=false", "--creds", creds,
		"--format", "{{.Digest}}", ref)
	if got := strings.TrimSpace(out); got != digest {
		t.Errorf("skopeo inspect digest = %s, want %s", got, digest)
	}

	dir := c.path("pulled")
	c.run("skopeo", "--policy", policy, "copy", "--src-tls-verify=false", "--src-creds", creds, ref, "dir:"+dir)
	if got := fileDigest(t, filepath.Join(dir, "manifest.json")); got != digest {
		t.Errorf("pulled manifest.json hashes to %s, want %s", got, digest)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if got := fileDigest(t, filepath.Join(dir, ld.Hex)); got != ld.String() {
			t.Errorf("pulled layer %s hashes to %s", ld, got)
		}
	}
}

// tarDir writes the files under dir into a tar archive at dst.
func tarDir(t testing.TB, dir, dst string) string {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatalf("tar %s: %v", dir, err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
