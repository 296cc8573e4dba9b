package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestHelm packages a new chart, pushes it over oci:// and pulls it back
// byte for byte.
func TestHelm(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	c := newClients(t, srv)
	chart := "e2echart"
	const version = "0.1.0"

	c.run("helm", "create", chart)
	c.run("helm", "package", chart, "--version", version, "-d", c.path("packaged"))
	pkg := c.path("packaged", chart+"-"+version+".tgz")

	c.runOpts(cmdOpts{stdin: srv.Password()}, "helm", "registry", "login", "--insecure",
		"-u", srv.Username(), "--password-stdin", srv.Host())
	out, stderr, err := c.try(cmdOpts{}, "helm", "push", pkg, "oci://"+srv.Host()+"/charts", "--plain-http")
	if err != nil {
		t.Fatalf("helm push: %v\n%s%s", err, out, stderr)
	}
	// helm prints "Digest: sha256:…" (on stderr in v3.16).
	digest := digestRE.FindString(out + stderr)
	if digest == "" {
		t.Fatalf("helm push printed no digest: %s%s", out, stderr)
	}
	if got := headDigest(t, srv, "charts/"+chart+":"+version); got != digest {
		t.Errorf("HEAD charts/%s:%s = %s, helm pushed %s", chart, version, got, digest)
	}

	dest := c.path("pulled")
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	c.run("helm", "pull", "oci://"+srv.Host()+"/charts/"+chart, "--version", version, "--plain-http", "-d", dest)
	want, err := os.ReadFile(pkg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dest, chart+"-"+version+".tgz"))
	if err != nil {
		t.Fatalf("pulled chart: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("pulled chart (%d bytes) differs from the pushed package (%d bytes)", len(got), len(want))
	}
}
