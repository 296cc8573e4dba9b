package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// account is a principal of the access tests: a user or a robot and its
// password or secret.
type account struct {
	label  string // for file and repository names
	user   string
	secret string
}

// accessWorld is one berth with two private projects, alpha and beta; a
// user dev, developer in alpha; and a robot of alpha that may pull and
// push there. Everything is set up with the berth CLI, as an operator
// would.
type accessWorld struct {
	srv   *Server
	dev   account
	robot account
}

const devPassword = "Dev-e2e-Passw0rd"

func newAccessWorld(t *testing.T, srv *Server) accessWorld {
	t.Helper()
	mustBerth(t, srv, "project", "create", "alpha")
	mustBerth(t, srv, "project", "create", "beta")
	berthIn(t, srv, devPassword+"\n", "user", "create", "dev", "--email", "dev@example.com", "--password-stdin")
	mustBerth(t, srv, "member", "add", "alpha", "dev", "developer")
	secretFile := filepath.Join(t.TempDir(), "robot.secret")
	mustBerth(t, srv, "robot", "create", "ci", "--project", "alpha",
		"--perm", "repository:pull", "--perm", "repository:push", "--secret-file", secretFile)
	secret := strings.TrimSpace(readFile(t, secretFile))
	if len(secret) < 16 {
		t.Fatalf("robot secret %q", secret)
	}
	return accessWorld{
		srv:   srv,
		dev:   account{label: "dev", user: "dev", secret: devPassword},
		robot: account{label: "robot", user: "robot$alpha+ci", secret: secret},
	}
}

// berthIn runs the berth CLI as admin with stdin and fails the test on an
// error.
func berthIn(t *testing.T, srv *Server, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBinary(t), args...)
	cmd.Env = append(os.Environ(), "BERTH_SERVER="+srv.URL(), "BERTH_USER=admin", "BERTH_PASSWORD="+srv.Password(),
		"BERTH_LOGIN_FILE="+filepath.Join(t.TempDir(), "login.json"))
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dockerConfigFor writes a docker config holding a's credentials for srv
// into c's DOCKER_CONFIG (crane, oras, regctl, cosign, skopeo and podman
// read it).
func dockerConfigFor(t *testing.T, c *clients, srv *Server, a account) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(a.user + ":" + a.secret))
	data, _ := json.Marshal(map[string]any{"auths": map[string]any{srv.Host(): map[string]string{"auth": auth}}})
	if err := os.WriteFile(c.path("docker", "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAccessRealClients logs real clients in as a user and as a robot:
// each pushes to and pulls from its project, and cannot push to another
// project; anonymous callers cannot read a private project.
func TestAccessRealClients(t *testing.T) {
	t.Parallel()
	srv := startBerth(t, Options{})
	w := newAccessWorld(t, srv)
	for _, a := range []account{w.dev, w.robot} {
		t.Run(a.label, func(t *testing.T) {
			c := newClients(t, srv)
			host := srv.Host()
			refused := func(what string, err error, out string) {
				t.Helper()
				switch {
				case err == nil:
					t.Errorf("%s as %s succeeded; want it refused", what, a.user)
				case !isRefusal(out):
					t.Errorf("%s as %s failed, but not for want of access: %s", what, a.user, firstLines(out, 5))
				default:
					t.Logf("%s refused as expected: %s", what, firstLines(out, 3))
				}
			}

			// crane: log in, push, pull; not into beta.
			c.run("crane", "auth", "login", host, "-u", a.user, "-p", a.secret)
			layer := writeLayerTar(t, c.path("layer.tar"), sampleFiles())
			out := c.run("crane", "append", "--insecure", "-f", layer, "-t", host+"/alpha/crane-"+a.label+":1")
			digest := digestRE.FindString(out)
			if digest == "" {
				t.Fatalf("crane append printed no digest: %s", out)
			}
			if got := strings.TrimSpace(c.run("crane", "digest", "--insecure", host+"/alpha/crane-"+a.label+":1")); got != digest {
				t.Errorf("crane digest = %s, pushed %s", got, digest)
			}
			o, e, err := c.try(cmdOpts{}, "crane", "append", "--insecure", "-f", layer, "-t", host+"/beta/crane-"+a.label+":1")
			refused("crane push into beta", err, o+e)
			// Neither may delete: a developer has no delete, the robot was
			// not given it.
			o, e, err = c.try(cmdOpts{}, "crane", "delete", "--insecure", host+"/alpha/crane-"+a.label+"@"+digest)
			refused("crane delete", err, o+e)

			// oras: push and pull an artifact.
			src := c.path("oras-src")
			writeFiles(t, src, map[string][]byte{"note.txt": []byte("pushed by " + a.user)})
			c.runOpts(cmdOpts{stdin: a.secret}, "oras", "login", "--plain-http", "-u", a.user, "--password-stdin", host)
			c.runOpts(cmdOpts{dir: src}, "oras", "push", "--plain-http", "--no-tty", host+"/alpha/oras-"+a.label+":1", "note.txt")
			c.run("oras", "pull", "--plain-http", "--no-tty", "-o", c.path("oras-dst"), host+"/alpha/oras-"+a.label+":1")
			if got := readFile(t, c.path("oras-dst", "note.txt")); got != "pushed by "+a.user {
				t.Errorf("oras pulled %q", got)
			}
			o, e, err = c.try(cmdOpts{dir: src}, "oras", "push", "--plain-http", "--no-tty", host+"/beta/oras-"+a.label+":1", "note.txt")
			refused("oras push into beta", err, o+e)

			// skopeo: copy an OCI archive in, inspect it.
			writeFiles(t, c.dir, map[string][]byte{"policy.json": []byte(insecurePolicy)})
			creds := a.user + ":" + a.secret
			archive := ociArchive(t, c)
			c.run("skopeo", "--policy", c.path("policy.json"), "copy", "--dest-tls-verify=false", "--dest-creds", creds,
				"oci-archive:"+archive+":e2e", "docker://"+host+"/alpha/skopeo-"+a.label+":1")
			c.run("skopeo", "--policy", c.path("policy.json"), "inspect", "--tls-verify=false", "--creds", creds,
				"docker://"+host+"/alpha/skopeo-"+a.label+":1")
			o, e, err = c.try(cmdOpts{}, "skopeo", "--policy", c.path("policy.json"), "copy", "--dest-tls-verify=false", "--dest-creds", creds,
				"oci-archive:"+archive+":e2e", "docker://"+host+"/beta/skopeo-"+a.label+":1")
			refused("skopeo copy into beta", err, o+e)

			// regctl: log in, copy within alpha, list tags.
			c.run("regctl", "registry", "set", "--tls", "disabled", host)
			c.runOpts(cmdOpts{stdin: a.secret}, "regctl", "registry", "login", host, "-u", a.user, "--pass-stdin")
			c.run("regctl", "image", "copy", host+"/alpha/crane-"+a.label+":1", host+"/alpha/crane-"+a.label+":copy")
			if tags := c.run("regctl", "tag", "ls", host+"/alpha/crane-"+a.label); !strings.Contains(tags, "copy") {
				t.Errorf("regctl tag ls: %s", tags)
			}

			// helm: push a chart over oci://, pull it back.
			chart := "chart" + a.label
			c.run("helm", "create", chart)
			c.run("helm", "package", chart, "--version", "0.1.0", "-d", c.path("packaged"))
			pkg := c.path("packaged", chart+"-0.1.0.tgz")
			c.runOpts(cmdOpts{stdin: a.secret}, "helm", "registry", "login", "--insecure", "-u", a.user, "--password-stdin", host)
			c.run("helm", "push", pkg, "oci://"+host+"/alpha", "--plain-http")
			if err := os.MkdirAll(c.path("pulled"), 0o755); err != nil {
				t.Fatal(err)
			}
			c.run("helm", "pull", "oci://"+host+"/alpha/"+chart, "--version", "0.1.0", "--plain-http", "-d", c.path("pulled"))
			o, e, err = c.try(cmdOpts{}, "helm", "push", pkg, "oci://"+host+"/beta", "--plain-http")
			refused("helm push into beta", err, o+e)

			// cosign: sign the crane image with the account's credentials.
			dockerConfigFor(t, c, srv, a)
			env := cmdOpts{env: []string{"COSIGN_PASSWORD=e2e-key-password", "COSIGN_YES=true"}}
			c.runOpts(env, "cosign", "generate-key-pair")
			ref := host + "/alpha/crane-" + a.label + "@" + digest
			c.runOpts(env, "cosign", append([]string{"sign", "--key", "cosign.key", "--tlog-upload=false", "-y"}, append(cosignInsecure, ref)...)...)
			c.runOpts(env, "cosign", append([]string{"verify", "--key", "cosign.pub", "--insecure-ignore-tlog"}, append(cosignInsecure, ref)...)...)

			dockerAndPodman(t, c, srv, a)
		})
	}

	// Anonymous callers cannot read alpha (private); the challenge names
	// the token service.
	ctx := deadlineCtx(t, time.Minute)
	_, err := remote.Head(srv.ref(t, "alpha/crane-dev:1"), remote.WithContext(ctx))
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous HEAD in a private project: %v, want 401", err)
	}
	// Every push above is in the audit log with its actor.
	out := mustBerth(t, srv, "audit", "--project", "alpha", "--operation", "push", "--output", "json", "--limit", "500")
	for _, who := range []string{w.dev.user, w.robot.user} {
		if !strings.Contains(out, `"actor":"`+who+`"`) && !strings.Contains(out, `"actor": "`+who+`"`) {
			t.Errorf("no push by %s in the audit log of alpha", who)
		}
	}
}

// isRefusal reports whether a client's output says the registry refused
// access (a 401 or 403, with DENIED or UNAUTHORIZED), rather than failing
// for another reason: each client words it its own way.
func isRefusal(out string) bool {
	out = strings.ToLower(out)
	for _, w := range []string{"denied", "unauthorized", "forbidden", "authentication required", "no access", "401", "403"} {
		if strings.Contains(out, w) {
			return true
		}
	}
	return false
}

// ociArchive writes a small OCI archive (tag e2e) for skopeo.
func ociArchive(t *testing.T, c *clients) string {
	t.Helper()
	img := ociImage(t, sampleFiles())
	dir := c.path("layout-" + randomHex(4))
	return writeOCIArchive(t, img, dir, c.path("image-"+randomHex(4)+".oci.tar"))
}

// dockerAndPodman logs docker and podman in as a, pushes into alpha, pulls
// back, and fails to push into beta. Each is skipped where it cannot run.
func dockerAndPodman(t *testing.T, c *clients, srv *Server, a account) {
	t.Helper()
	host := srv.Host()
	tarPath := writeLayerTar(t, c.path("rootfs.tar"), sampleFiles())
	if _, err := findClient("docker"); err == nil {
		if _, _, err := c.try(cmdOpts{}, "docker", "info", "--format", "{{.ServerVersion}}"); err == nil {
			id := randomHex(6)
			local := "berth-e2e-access-" + id + ":src"
			alpha := host + "/alpha/docker-" + a.label + ":" + id
			beta := host + "/beta/docker-" + a.label + ":" + id
			t.Cleanup(func() { _, _, _ = c.try(cmdOpts{}, "docker", "rmi", "-f", local, alpha, beta) })
			c.run("docker", "import", tarPath, local)
			c.runOpts(cmdOpts{stdin: a.secret}, "docker", "login", host, "-u", a.user, "--password-stdin")
			c.run("docker", "tag", local, alpha)
			c.run("docker", "push", alpha)
			c.run("docker", "rmi", alpha)
			c.run("docker", "pull", alpha)
			c.run("docker", "tag", local, beta)
			// Refused, and docker says why.
			if out, stderr, err := c.try(cmdOpts{}, "docker", "push", beta); err == nil {
				t.Errorf("docker push into beta as %s succeeded", a.user)
			} else if !strings.Contains(out+stderr, "denied") {
				t.Errorf("docker push into beta as %s: %q; want it to say denied", a.user, firstLines(out+stderr, 3))
			}
		} else {
			t.Logf("no Docker daemon: docker skipped")
		}
	}
	if _, err := findClient("podman"); err != nil {
		return
	}
	writeFiles(t, c.dir, map[string][]byte{"policy.json": []byte(insecurePolicy)})
	global := []string{
		"--root", c.path("podman", "root"), "--runroot", c.path("podman", "runroot"), "--tmpdir", c.path("podman", "tmp"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
	}
	if _, _, err := c.try(cmdOpts{}, "podman", append(global, "info")...); err != nil {
		t.Logf("podman cannot run here: skipped")
		return
	}
	podman := func(args ...string) (string, string, error) {
		return c.try(cmdOpts{}, "podman", append(append([]string{}, global...), args...)...)
	}
	image := host + "/alpha/podman-" + a.label + ":1"
	if _, e, err := podman("import", tarPath, image); err != nil {
		t.Fatalf("podman import: %v %s", err, e)
	}
	c.runOpts(cmdOpts{stdin: a.secret}, "podman", append(global, "login", "--tls-verify=false", "-u", a.user, "--password-stdin", host)...)
	if _, e, err := podman("push", "--tls-verify=false", "--signature-policy", c.path("policy.json"), image); err != nil {
		t.Fatalf("podman push as %s: %v %s", a.user, err, e)
	}
	if _, e, err := podman("pull", "--tls-verify=false", "--signature-policy", c.path("policy.json"), image); err != nil {
		t.Fatalf("podman pull as %s: %v %s", a.user, err, e)
	}
	beta := host + "/beta/podman-" + a.label + ":1"
	if _, e, err := podman("tag", image, beta); err != nil {
		t.Fatalf("podman tag: %v %s", err, e)
	}
	switch o, e, err := podman("push", "--tls-verify=false", "--signature-policy", c.path("policy.json"), beta); {
	case err == nil:
		t.Errorf("podman push into beta as %s succeeded", a.user)
	case !isRefusal(o + e):
		t.Errorf("podman push into beta as %s failed, but not for want of access: %s", a.user, firstLines(o+e, 5))
	}
}

// TestAccessClusterAtOnce: a user, its membership and a robot created
// through node 1 of a 3-node cluster log in and push through node 3 at
// once — no wait for the followers to apply.
func TestAccessClusterAtOnce(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, clusterOptions{})
	n1, n3 := c.nodes[0], c.nodes[2]
	mustBerth(t, n1.Server, "project", "create", "gamma")
	for i := range 3 {
		name := fmt.Sprintf("u%d", i)
		berthIn(t, n1.Server, devPassword+"\n", "user", "create", name, "--password-stdin")
		mustBerth(t, n1.Server, "member", "add", "gamma", name, "maintainer")
		// At once, through node 3: the token service there, then a push.
		ctx := deadlineCtx(t, time.Minute)
		img, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref := n3.ref(t, "gamma/app:"+name)
		if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: name, Password: devPassword}), remote.WithContext(ctx)); err != nil {
			t.Fatalf("push as %s through node 3 right after its creation through node 1: %v", name, err)
		}
	}
	secretFile := filepath.Join(t.TempDir(), "secret")
	mustBerth(t, n1.Server, "robot", "create", "deploy", "--project", "gamma", "--perm", "repository:pull", "--secret-file", secretFile)
	robot := &authn.Basic{Username: "robot$gamma+deploy", Password: strings.TrimSpace(readFile(t, secretFile))}
	ctx := deadlineCtx(t, time.Minute)
	if _, err := remote.Head(n3.ref(t, "gamma/app:u0"), remote.WithAuth(robot), remote.WithContext(ctx)); err != nil {
		t.Fatalf("pull as a robot through node 3 right after its creation through node 1: %v", err)
	}
	img, _ := random.Image(512, 1)
	err := remote.Write(n3.ref(t, "gamma/app:robot"), img, remote.WithAuth(robot), remote.WithContext(ctx))
	var terr *transport.Error
	if !errors.As(err, &terr) || (terr.StatusCode != http.StatusForbidden && terr.StatusCode != http.StatusUnauthorized) {
		t.Fatalf("a pull-only robot's push: %v, want 401 or 403", err)
	}
}

// TestTokenAttacksProcess sends forged and altered tokens to a running
// berth: each is refused, while the genuine token works. (The unit tests
// of registry cover the attacks that need the signing key.)
func TestTokenAttacksProcess(t *testing.T) {
	t.Parallel()
	srv := startBerth(t, Options{})
	w := newAccessWorld(t, srv)
	pushRandom(t, srv, "alpha/app:1")
	pushRandom(t, srv, "beta/app:1")
	get := func(token, path string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	token := func(a account, scope string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL()+"/service/token?service=berth&scope="+url.QueryEscape(scope), nil)
		req.SetBasicAuth(a.user, a.secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Token string `json:"token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("token for %s: %s %v", a.user, resp.Status, err)
		}
		return body.Token
	}
	genuine := token(w.robot, "repository:alpha/app:pull")
	if code := get(genuine, "/v2/alpha/app/manifests/1"); code != http.StatusOK {
		t.Fatalf("the genuine token: %d", code)
	}
	parts := strings.Split(genuine, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWS", genuine)
	}
	enc := base64.RawURLEncoding
	payload, err := enc.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	// The same claims with their scope moved to beta (signature kept).
	moved := strings.Replace(string(payload), `"alpha/app"`, `"beta/app"`, 1)
	if moved == string(payload) {
		t.Fatalf("claims %s name no alpha/app", payload)
	}
	head, err := enc.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var header struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(head, &header); err != nil || header.Kid == "" {
		t.Fatalf("token header %s: no kid (%v)", head, err)
	}
	sig, err := enc.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	sig[5] ^= 1
	none := enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	// Each token is tried where its claims would grant access if the
	// registry took it: the genuine claims on alpha/app, the moved ones on
	// beta/app.
	const alpha, beta = "/v2/alpha/app/manifests/1", "/v2/beta/app/manifests/1"
	for name, tc := range map[string]struct{ token, path string }{
		"alg none":             {none + "." + enc.EncodeToString([]byte(moved)) + ".", beta},
		"scope edited":         {parts[0] + "." + enc.EncodeToString([]byte(moved)) + "." + parts[2], beta},
		"signature tampered":   {parts[0] + "." + parts[1] + "." + enc.EncodeToString(sig), alpha},
		"hs256 with the kid":   {hs256(t, header.Kid, enc.EncodeToString([]byte(moved)), "berth"), beta},
		"not a token":          {"garbage", alpha},
		"genuine, other scope": {genuine, beta},
	} {
		if code := get(tc.token, tc.path); code != http.StatusUnauthorized && code != http.StatusForbidden {
			t.Errorf("%s: GET %s: %d, want 401 or 403", name, tc.path, code)
		}
	}
	// A deleted robot's token stops working (within the account cache's
	// few seconds), long before it expires.
	mustBerth(t, srv, "robot", "delete", "ci", "--project", "alpha")
	eventually(t, 30*time.Second, "the deleted robot's token refused", func() error {
		if code := get(genuine, "/v2/alpha/app/manifests/1"); code != http.StatusUnauthorized {
			return fmt.Errorf("deleted robot's token: %d, want 401", code)
		}
		return nil
	})
}

// writeOCIArchive writes img as an OCI layout in dir (tag e2e) and tars it
// into dst.
func writeOCIArchive(t *testing.T, img v1.Image, dir, dst string) string {
	t.Helper()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "e2e"})); err != nil {
		t.Fatal(err)
	}
	return tarDir(t, dir, dst)
}

// hs256 signs payload (base64url) with HMAC-SHA-256 under key, with the
// header naming kid: a verifier that pins no asymmetric algorithm would
// accept it.
func hs256(t *testing.T, kid, payload, key string) string {
	t.Helper()
	head := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"alg":"HS256","typ":"JWT","kid":%q}`, kid))
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(head + "." + payload))
	return head + "." + payload + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
