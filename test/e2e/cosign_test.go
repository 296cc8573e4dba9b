package e2e

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestCosign signs an image by digest with a key pair and no transparency
// log, then verifies the signature, credentials coming from DOCKER_CONFIG.
func TestCosign(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	digest := pushRandom(t, srv, "cosign/image:1")
	c := newClients(t, srv)
	c.writeDockerAuth()
	env := cmdOpts{env: []string{"COSIGN_PASSWORD=e2e-key-password", "COSIGN_YES=true"}}
	ref := srv.Host() + "/cosign/image@" + digest.String()
	insecure := []string{"--allow-insecure-registry", "--allow-http-registry"}

	c.runOpts(env, "cosign", "generate-key-pair")
	c.runOpts(env, "cosign", append([]string{"sign", "--key", "cosign.key", "--tlog-upload=false", "-y"},
		append(insecure, ref)...)...)
	out := c.runOpts(env, "cosign", append([]string{"verify", "--key", "cosign.pub", "--insecure-ignore-tlog"},
		append(insecure, ref)...)...)
	if !strings.Contains(out, digest.String()) {
		t.Errorf("cosign verify output does not name %s:\n%s", digest, out)
	}

	// The signature is stored under cosign's tag for the digest.
	ctx := deadlineCtx(t, time.Minute)
	repo := srv.ref(t, "cosign/image:1").Context()
	tags, err := remote.List(repo, srv.remote(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	sigTag := "sha256-" + digest.Hex + ".sig"
	if !slices.Contains(tags, sigTag) {
		t.Errorf("tags %v: no signature tag %s", tags, sigTag)
	}

	// A signature from another key does not verify.
	other := c.path("other")
	if err := os.MkdirAll(other, 0o700); err != nil {
		t.Fatal(err)
	}
	c.runOpts(cmdOpts{dir: other, env: env.env}, "cosign", "generate-key-pair")
	if _, _, err := c.try(cmdOpts{dir: other, env: env.env}, "cosign",
		append([]string{"verify", "--key", "cosign.pub", "--insecure-ignore-tlog"}, append(insecure, ref)...)...); err == nil {
		t.Errorf("cosign verify with an unrelated key succeeded")
	}
}
