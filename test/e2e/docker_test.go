package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestDocker imports a tarball made from files into the local Docker engine,
// logs in, tags and pushes it, removes it, pulls it back and compares the
// repository digest. The images are removed afterwards.
func TestDocker(t *testing.T) {
	t.Parallel()
	requireClient(t, "docker")
	srv := startServer(t, Options{})
	c := newClients(t, srv)
	if _, stderr, err := c.try(cmdOpts{}, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("no Docker daemon answers (docker info: %v): %s", err, firstLines(stderr, 5))
	}

	id := randomHex(6)
	local := "berth-e2e-docker-" + id + ":src"
	repo := srv.Host() + "/e2e/docker-" + id
	remoteRef := repo + ":1"
	t.Cleanup(func() {
		// Best effort: the images may already be gone.
		_, _, _ = c.try(cmdOpts{}, "docker", "rmi", "-f", local, remoteRef)
	})

	tarPath := writeLayerTar(t, c.path("rootfs.tar"), sampleFiles())
	c.run("docker", "import", tarPath, local)
	if _, _, err := c.try(cmdOpts{stdin: "not-" + srv.Password()}, "docker", "login", srv.Host(),
		"-u", srv.Username(), "--password-stdin"); err == nil {
		t.Errorf("docker login with a wrong password succeeded")
	}
	c.runOpts(cmdOpts{stdin: srv.Password()}, "docker", "login", srv.Host(), "-u", srv.Username(), "--password-stdin")
	c.run("docker", "tag", local, remoteRef)
	out := c.run("docker", "push", remoteRef)
	digest := digestRE.FindString(out)
	if digest == "" {
		t.Fatalf("docker push printed no digest:\n%s", out)
	}
	if got := headDigest(t, srv, "e2e/docker-"+id+":1"); got != digest {
		t.Errorf("HEAD = %s, docker pushed %s", got, digest)
	}

	c.run("docker", "rmi", local, remoteRef)
	c.run("docker", "pull", remoteRef)
	var repoDigests []string
	decodeOutput(t, c.run("docker", "image", "inspect", "--format", "{{json .RepoDigests}}", remoteRef), &repoDigests)
	if want := repo + "@" + digest; !slices.Contains(repoDigests, want) {
		t.Errorf("pulled image repo digests %v, want %s", repoDigests, want)
	}
	c.run("docker", "rmi", remoteRef)

	// docker login stored the credentials in the test's DOCKER_CONFIG.
	var cfg struct {
		Auths map[string]json.RawMessage `json:"auths"`
	}
	readJSON(t, c.path("docker", "config.json"), &cfg)
	if _, ok := cfg.Auths[srv.Host()]; !ok {
		t.Errorf("docker login left no auth for %s in DOCKER_CONFIG (%v)", srv.Host(), strings.Join(keys(cfg.Auths), ", "))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
