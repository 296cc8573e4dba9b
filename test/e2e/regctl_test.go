package e2e

import (
	"slices"
	"strings"
	"testing"
)

// TestRegctl copies an image between repositories with regctl over plain
// HTTP, lists the tags and fetches the raw manifest.
func TestRegctl(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	digest := pushRandom(t, srv, "regctl/src:1").String()
	c := newClients(t, srv)
	host := srv.Host()

	// --skip-check: the ping needs the credentials that login adds next.
	c.run("regctl", "registry", "set", "--skip-check", "--tls", "disabled", host)
	c.runOpts(cmdOpts{stdin: srv.Password()}, "regctl", "registry", "login", host,
		"-u", srv.Username(), "--pass-stdin")

	c.run("regctl", "image", "copy", host+"/regctl/src:1", host+"/regctl/dst:copied")
	if got := headDigest(t, srv, "regctl/dst:copied"); got != digest {
		t.Errorf("copied digest = %s, want %s", got, digest)
	}
	c.run("regctl", "image", "copy", host+"/regctl/src:1", host+"/regctl/dst:second")

	tags := strings.Fields(c.run("regctl", "tag", "ls", host+"/regctl/dst"))
	if !slices.Equal(tags, []string{"copied", "second"}) {
		t.Errorf("regctl tag ls = %v, want [copied second]", tags)
	}

	raw := c.run("regctl", "manifest", "get", "--format", "raw-body", host+"/regctl/dst:copied")
	if got := sha256Hex([]byte(raw)); got != digest {
		t.Errorf("regctl manifest get body hashes to %s, want %s", got, digest)
	}
	if got := strings.TrimSpace(c.run("regctl", "image", "digest", host+"/regctl/dst:second")); got != digest {
		t.Errorf("regctl image digest = %s, want %s", got, digest)
	}
}
