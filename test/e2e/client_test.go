package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clientTimeout bounds one client command.
const clientTimeout = 3 * time.Minute

// installHints says how to install each client by hand; `make test` runs
// scripts/install-clients.sh, which installs the missing ones.
var installHints = map[string]string{
	"crane":    "GOFLAGS= go install github.com/google/go-containerregistry/cmd/crane@v0.20.6",
	"oras":     "GOFLAGS= go install oras.land/oras/cmd/oras@v1.2.3",
	"regctl":   "GOFLAGS= go install github.com/regclient/regclient/cmd/regctl@v0.8.3",
	"helm":     "GOFLAGS= go install helm.sh/helm/v3/cmd/helm@v3.16.4",
	"cosign":   "GOFLAGS= go install github.com/sigstore/cosign/v2/cmd/cosign@v2.4.3",
	"registry": "GOFLAGS= go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2",
	"skopeo":   "apt-get install -y skopeo",
	"podman":   "apt-get install -y podman",
	"docker":   "install the Docker engine (https://docs.docker.com/engine/install/)",
}

// findClient looks for a binary in PATH, then in GOBIN and GOPATH/bin.
func findClient(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		fields := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(fields) == 2 {
			if gobin := strings.TrimSpace(fields[0]); gobin != "" {
				dirs = append(dirs, gobin)
			}
			for _, gp := range filepath.SplitList(strings.TrimSpace(fields[1])) {
				dirs = append(dirs, filepath.Join(gp, "bin"))
			}
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(dirs, ", "))
}

// requireClient returns the path of a client binary or fails the test,
// saying how to install it.
func requireClient(t testing.TB, name string) string {
	t.Helper()
	p, err := findClient(name)
	if err != nil {
		t.Fatalf("%v: run scripts/install-clients.sh (make test runs it) or %s", err, installHints[name])
	}
	return p
}

// clients runs client processes against one server, each with a private
// HOME, DOCKER_CONFIG, XDG and tool directories under one temp dir.
type clients struct {
	t   testing.TB
	srv *Server
	dir string
	env []string
}

func newClients(t testing.TB, srv *Server) *clients {
	t.Helper()
	dir := t.TempDir()
	c := &clients{t: t, srv: srv, dir: dir}
	for _, d := range []string{"home", "docker", "config", "cache", "data", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	keep := func(k string) bool {
		switch {
		case k == "HOME", k == "DOCKER_CONFIG", k == "REGISTRY_AUTH_FILE", k == "TMPDIR",
			k == "TUF_ROOT", k == "REGCTL_CONFIG",
			strings.HasPrefix(k, "XDG_"), strings.HasPrefix(k, "HELM_"),
			strings.HasPrefix(k, "COSIGN_"), strings.HasPrefix(k, "SIGSTORE_"),
			strings.HasPrefix(k, "ORAS_"), strings.HasPrefix(k, "BERTH_"):
			return false
		}
		return true
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); keep(k) {
			c.env = append(c.env, kv)
		}
	}
	c.env = append(c.env,
		"HOME="+c.path("home"),
		"DOCKER_CONFIG="+c.path("docker"),
		"REGISTRY_AUTH_FILE="+c.path("docker", "config.json"),
		"XDG_CONFIG_HOME="+c.path("config"),
		"XDG_CACHE_HOME="+c.path("cache"),
		"XDG_DATA_HOME="+c.path("data"),
		"XDG_RUNTIME_DIR="+c.path("run"),
		"TMPDIR="+c.path("tmp"),
		"HELM_CACHE_HOME="+c.path("cache", "helm"),
		"HELM_CONFIG_HOME="+c.path("config", "helm"),
		"HELM_DATA_HOME="+c.path("data", "helm"),
		"HELM_REGISTRY_CONFIG="+c.path("config", "helm", "registry.json"),
		"TUF_ROOT="+c.path("home", ".sigstore"),
		"REGCTL_CONFIG="+c.path("config", "regctl.json"),
	)
	return c
}

// path joins elem under the clients' temp dir.
func (c *clients) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// writeDockerAuth writes DOCKER_CONFIG/config.json with the server's admin
// credentials, which crane, oras, regctl, cosign, skopeo and podman read.
func (c *clients) writeDockerAuth() {
	c.t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(c.srv.Username() + ":" + c.srv.Password()))
	cfg := map[string]any{"auths": map[string]any{c.srv.Host(): map[string]string{"auth": auth}}}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(c.path("docker", "config.json"), data, 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// cmdOpts are the less common settings of one client run.
type cmdOpts struct {
	dir   string   // working directory; the clients' temp dir when empty
	stdin string   // standard input
	env   []string // added to the environment
}

// run runs a client and fails the test unless it exits 0; it returns stdout.
func (c *clients) run(name string, args ...string) string {
	c.t.Helper()
	return c.runOpts(cmdOpts{}, name, args...)
}

func (c *clients) runOpts(o cmdOpts, name string, args ...string) string {
	c.t.Helper()
	stdout, stderr, err := c.try(o, name, args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// try runs a client and returns its output and exit error.
func (c *clients) try(o cmdOpts, name string, args ...string) (stdout, stderr string, err error) {
	c.t.Helper()
	bin := requireClient(c.t, name)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = c.dir
	if o.dir != "" {
		cmd.Dir = o.dir
	}
	cmd.Env = append(append([]string{}, c.env...), o.env...)
	if o.stdin != "" {
		cmd.Stdin = strings.NewReader(o.stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err = cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", clientTimeout, err)
	}
	c.t.Logf("%s %s (%s, %v)", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), exitText(err))
	return out.String(), errOut.String(), err
}
