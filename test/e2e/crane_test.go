package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestCrane pushes an image made from files with crane, then pulls, copies,
// lists, tags and deletes it, checking that every operation agrees on the
// digest.
func TestCrane(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	c := newClients(t, srv)
	c.writeDockerAuth()
	host := srv.Host()
	src := host + "/library/crane"
	dst := host + "/library/crane-copy"

	layer := writeLayerTar(t, c.path("layer.tar"), sampleFiles())
	out := c.run("crane", "append", "--insecure", "--oci-empty-base", "-f", layer, "-t", src+":1")
	digest := digestRE.FindString(out)
	if digest == "" {
		t.Fatalf("crane append printed no digest: %q", out)
	}

	if got := strings.TrimSpace(c.run("crane", "digest", "--insecure", src+":1")); got != digest {
		t.Errorf("crane digest %s:1 = %s, append said %s", src, got, digest)
	}
	if got := headDigest(t, srv, "library/crane:1"); got != digest {
		t.Errorf("HEAD library/crane:1 = %s, append said %s", got, digest)
	}

	// Pull into an OCI layout and check the manifest and every blob in it.
	layout := c.path("pulled")
	c.run("crane", "pull", "--insecure", "--format", "oci", src+":1", layout)
	var index v1.IndexManifest
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	if len(index.Manifests) != 1 || index.Manifests[0].Digest.String() != digest {
		t.Fatalf("pulled layout index = %+v, want one manifest %s", index.Manifests, digest)
	}
	checkLayoutBlobs(t, layout)

	// The raw manifest crane prints hashes to the digest.
	if got := sha256Hex([]byte(c.run("crane", "manifest", "--insecure", src+"@"+digest))); got != digest {
		t.Errorf("crane manifest bytes hash to %s, want %s", got, digest)
	}

	c.run("crane", "copy", "--insecure", src+":1", dst+":1")
	if got := strings.TrimSpace(c.run("crane", "digest", "--insecure", dst+":1")); got != digest {
		t.Errorf("copied digest = %s, want %s", got, digest)
	}

	c.run("crane", "tag", "--insecure", src+":1", "2")
	tags := strings.Fields(c.run("crane", "ls", "--insecure", src))
	if !slices.Equal(tags, []string{"1", "2"}) {
		t.Errorf("crane ls %s = %v, want [1 2]", src, tags)
	}
	repos := strings.Fields(c.run("crane", "catalog", "--insecure", host))
	for _, want := range []string{"library/crane", "library/crane-copy"} {
		if !slices.Contains(repos, want) {
			t.Errorf("crane catalog = %v, missing %s", repos, want)
		}
	}

	// Delete the copy by digest: it is gone from there, the source remains.
	c.run("crane", "delete", "--insecure", dst+"@"+digest)
	if _, stderr, err := c.try(cmdOpts{}, "crane", "digest", "--insecure", dst+":1"); err == nil {
		t.Errorf("crane digest %s:1 succeeded after delete", dst)
	} else if !strings.Contains(stderr, "MANIFEST_UNKNOWN") && !strings.Contains(stderr, "404") {
		t.Errorf("crane digest after delete: want MANIFEST_UNKNOWN/404, got %s", stderr)
	}
	if got := strings.TrimSpace(c.run("crane", "digest", "--insecure", src+":2")); got != digest {
		t.Errorf("source digest after deleting the copy = %s, want %s", got, digest)
	}
}

// readJSON decodes a JSON file into v.
func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
}

// checkLayoutBlobs checks that every blob of an OCI layout hashes to its name.
func checkLayoutBlobs(t testing.TB, layout string) {
	t.Helper()
	dir := filepath.Join(layout, "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 3 {
		t.Errorf("layout %s has %d blobs, want at least manifest, config and a layer", layout, len(entries))
	}
	for _, e := range entries {
		if got := fileDigest(t, filepath.Join(dir, e.Name())); got != "sha256:"+e.Name() {
			t.Errorf("layout blob %s hashes to %s", e.Name(), got)
		}
	}
}
