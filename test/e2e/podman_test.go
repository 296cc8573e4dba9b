package e2e

import (
	"strings"
	"testing"
)

// TestPodman imports a tarball made from files as an image with podman (as
// root, vfs storage in a temp root), logs in, pushes, removes the local
// image, pulls it back and compares digests.
func TestPodman(t *testing.T) {
	t.Parallel()
	requireClient(t, "podman")
	srv := startServer(t, Options{})
	c := newClients(t, srv)
	writeFiles(t, c.dir, map[string][]byte{"policy.json": []byte(insecurePolicy)})
	global := []string{
		"--root", c.path("podman", "root"),
		"--runroot", c.path("podman", "runroot"),
		"--tmpdir", c.path("podman", "tmp"),
		"--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs",
		"--events-backend", "file",
	}
	podman := func(args ...string) string {
		t.Helper()
		return c.run("podman", append(append([]string{}, global...), args...)...)
	}
	if _, stderr, err := c.try(cmdOpts{}, "podman", append(global, "info")...); err != nil {
		t.Skipf("podman cannot run here (podman info: %v): %s", err, firstLines(stderr, 5))
	}

	image := srv.Host() + "/podman/image:" + randomHex(4)
	tarPath := writeLayerTar(t, c.path("rootfs.tar"), sampleFiles())
	podman("import", tarPath, image)

	c.runOpts(cmdOpts{stdin: srv.Password()}, "podman", append(global,
		"login", "--tls-verify=false", "-u", srv.Username(), "--password-stdin", srv.Host())...)
	podman("push", "--tls-verify=false", "--signature-policy", c.path("policy.json"),
		"--digestfile", c.path("pushed.digest"), image)
	digest := strings.TrimSpace(readFile(t, c.path("pushed.digest")))
	if !digestRE.MatchString(digest) {
		t.Fatalf("podman push wrote digest %q", digest)
	}
	repoTag := strings.TrimPrefix(image, srv.Host()+"/")
	if got := headDigest(t, srv, repoTag); got != digest {
		t.Errorf("HEAD %s = %s, podman pushed %s", repoTag, got, digest)
	}

	podman("rmi", image)
	podman("pull", "--tls-verify=false", "--signature-policy", c.path("policy.json"), image)
	got := podman("image", "inspect", "--format", "{{.Digest}}", image)
	if strings.TrimSpace(got) != digest {
		t.Errorf("pulled image digest = %s, want %s", strings.TrimSpace(got), digest)
	}
	podman("rmi", image)
}
