package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	orasArtifactType = "application/vnd.berth.e2e.bundle"
	orasSigType      = "application/vnd.berth.e2e.signature"
)

// TestOras pushes an artifact of files with a custom artifact type, pulls it
// back byte for byte, attaches a second artifact to it through the referrers
// API and finds it with oras discover and with GET /v2/<name>/referrers.
func TestOras(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	c := newClients(t, srv)
	c.writeDockerAuth()
	repo := srv.Host() + "/artifacts/oras"

	files := map[string][]byte{
		"config.yaml": []byte("name: berth-e2e\nreplicas: 3\n"),
		"payload.bin": randomBytes(256 << 10),
	}
	src := c.path("src")
	writeFiles(t, src, files)
	out := c.runOpts(cmdOpts{dir: src}, "oras", "push", "--plain-http", "--no-tty",
		"--artifact-type", orasArtifactType, "--format", "json",
		repo+":v1", "config.yaml:application/yaml", "payload.bin")
	var pushed struct {
		Digest       string `json:"digest"`
		ArtifactType string `json:"artifactType"`
	}
	decodeOutput(t, out, &pushed)
	if pushed.Digest == "" || pushed.ArtifactType != orasArtifactType {
		t.Fatalf("oras push output %s: want a digest and artifactType %s", out, orasArtifactType)
	}
	if got := headDigest(t, srv, "artifacts/oras:v1"); got != pushed.Digest {
		t.Errorf("HEAD artifacts/oras:v1 = %s, oras push said %s", got, pushed.Digest)
	}

	dst := c.path("pulled")
	c.run("oras", "pull", "--plain-http", "--no-tty", "-o", dst, repo+":v1")
	for n, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, n))
		if err != nil {
			t.Errorf("pulled artifact: %v", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("pulled %s: %d bytes differ from the %d pushed", n, len(got), len(want))
		}
	}

	// Through the referrers API; a reference registry without it (only
	// when checking the harness) gets the tag schema instead.
	spec := "v1.1-referrers-api"
	if !srv.ReferrersAPI() {
		spec = "v1.1-referrers-tag"
		t.Logf("%s has no referrers API: attach and discover use the tag schema", srv.Name())
	}
	sigDir := c.path("sig")
	writeFiles(t, sigDir, map[string][]byte{"signature.txt": []byte("signed by berth e2e\n")})
	subject := repo + "@" + pushed.Digest
	out = c.runOpts(cmdOpts{dir: sigDir}, "oras", "attach", "--plain-http", "--no-tty",
		"--distribution-spec", spec, "--artifact-type", orasSigType,
		"--format", "json", subject, "signature.txt")
	var attached struct {
		Digest string `json:"digest"`
	}
	decodeOutput(t, out, &attached)
	if attached.Digest == "" {
		t.Fatalf("oras attach printed no digest: %s", out)
	}

	out = c.run("oras", "discover", "--plain-http", "--distribution-spec", spec,
		"--format", "json", subject)
	var discovered struct {
		Manifests []struct {
			Digest       string `json:"digest"`
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	decodeOutput(t, out, &discovered)
	found := false
	for _, m := range discovered.Manifests {
		found = found || (m.Digest == attached.Digest && m.ArtifactType == orasSigType)
	}
	if !found {
		t.Errorf("oras discover %s = %s, want %s of type %s", subject, out, attached.Digest, orasSigType)
	}

	if !srv.ReferrersAPI() {
		return
	}
	// The server answers the referrers API itself, with the artifact type
	// filter, rather than a client falling back to the tag schema.
	ctx := deadlineCtx(t, time.Minute)
	req, err := srv.newRequest(ctx, http.MethodGet,
		"/v2/artifacts/oras/referrers/"+pushed.Digest+"?artifactType="+orasSigType, nil, !srv.AnonymousPull())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET referrers: %s", resp.Status)
	}
	var index v1.IndexManifest
	if err := json.NewDecoder(resp.Body).Decode(&index); err != nil {
		t.Fatalf("decode referrers: %v", err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Digest.String() != attached.Digest {
		t.Errorf("referrers of %s filtered by %s = %+v, want only %s", pushed.Digest, orasSigType, index.Manifests, attached.Digest)
	}
}

// decodeOutput decodes a client's JSON output.
func decodeOutput(t testing.TB, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decode client output %q: %v", out, err)
	}
}
