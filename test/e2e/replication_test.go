package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/replicate"
)

// Replication settings of the berths in these tests: short leases, quick
// retries and frequent reconciliation, so that recoveries take seconds.
var replArgs = []string{
	"--replication-lease", "3s", "--replication-retry-max", "2s", "--reconcile-interval", "3s",
}

const replTimeout = 60 * time.Second

func startRepl(t *testing.T) *Server {
	t.Helper()
	return startBerth(t, Options{Args: replArgs})
}

// berth runs the berth CLI against srv as its admin and returns stdout; a
// non-zero exit is returned as the error, with stderr.
func berth(t *testing.T, srv *Server, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBinary(t), args...)
	cmd.Env = append(os.Environ(), "BERTH_SERVER="+srv.URL(), "BERTH_USER=admin", "BERTH_PASSWORD="+srv.Password(),
		"BERTH_LOGIN_FILE="+filepath.Join(t.TempDir(), "login.json"))
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	t.Logf("berth %s: %v", strings.Join(args, " "), exitText(err))
	if err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

func mustBerth(t *testing.T, srv *Server, args ...string) string {
	t.Helper()
	out, err := berth(t, srv, args...)
	if err != nil {
		t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// endpoint adds, at from, an endpoint name for the registry at url with
// dst's admin credentials.
func endpoint(t *testing.T, from *Server, name, url string, dst *Server, typ string) {
	t.Helper()
	mustBerth(t, from, "endpoint", "add", name, "--url", url, "--user", dst.Username(), "--password", dst.Password(), "--type", typ)
}

// digestAt is what repo:ref points to at srv ("" when absent).
func digestAt(t *testing.T, srv *Server, repoRef string) string {
	t.Helper()
	ctx := deadlineCtx(t, 10*time.Second)
	desc, err := remote.Head(srv.ref(t, repoRef), srv.remote(ctx)...)
	if err != nil {
		return ""
	}
	return desc.Digest.String()
}

// eventually polls check until it returns nil, and fails with its last
// error after timeout. It returns how long it took.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := check()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

func hasDigest(t *testing.T, srv *Server, repoRef, want string) func() error {
	return func() error {
		if got := digestAt(t, srv, repoRef); got != want {
			return fmt.Errorf("%s at %s is %q, want %q", repoRef, srv.Host(), got, want)
		}
		return nil
	}
}

// dockerAuth writes a docker config with the admin credentials of every
// server into the clients' DOCKER_CONFIG.
func dockerAuth(t *testing.T, c *clients, servers ...*Server) {
	t.Helper()
	auths := map[string]any{}
	for _, s := range servers {
		auths[s.Host()] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(s.Username() + ":" + s.Password()))}
	}
	b, _ := json.Marshal(map[string]any{"auths": auths})
	if err := os.WriteFile(c.path("docker", "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

var cosignInsecure = []string{"--allow-insecure-registry", "--allow-http-registry"}

// TestReplicationEventSignaturesAndDeletes is the basic promise: a push at
// a reaches b through an event policy, with its cosign signature and its
// OCI referrers, `berth replicate wait` says so, `cosign verify` passes at
// b; filters hold; a delete at a removes the tag at b; promotion checks
// the signature.
func TestReplicationEventSignaturesAndDeletes(t *testing.T) {
	t.Parallel()
	// b has no project team: the engine creates it there (private, as
	// Harbor's replication does) before its first push.
	a, b := startRepl(t), startBerth(t, Options{Args: replArgs, NoProjects: true})
	endpoint(t, a, "b", b.URL(), b, policy.EndpointBerth)
	mustBerth(t, a, "policy", "add", "to-b", "--endpoint", "b", "--repos", "team/**", "--exclude-tags", "*-rc*", "--trigger", "event", "--delete")

	d := pushRandom(t, a, "team/app:v1")
	mustBerth(t, a, "replicate", "wait", "team/app:v1", "--timeout", "60s")
	if got := digestAt(t, b, "team/app:v1"); got != d.String() {
		t.Fatalf("after wait, b has %q, want %s", got, d)
	}
	// The project the engine created at b is private: anonymous callers,
	// who may pull from public projects, cannot read it.
	{
		ctx := deadlineCtx(t, time.Minute)
		_, err := remote.Head(b.ref(t, "team/app:v1"), remote.WithContext(ctx))
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous HEAD of team/app:v1 at b: %v, want 401 (a private project)", err)
		}
	}

	c := newClients(t, a)
	dockerAuth(t, c, a, b)
	env := cmdOpts{env: []string{"COSIGN_PASSWORD=e2e-key-password", "COSIGN_YES=true"}}
	c.runOpts(env, "cosign", "generate-key-pair")
	ref := a.Host() + "/team/app@" + d.String()
	c.runOpts(env, "cosign", append([]string{"sign", "--key", "cosign.key", "--tlog-upload=false", "-y"}, append(cosignInsecure, ref)...)...)
	writeFiles(t, c.path(), map[string][]byte{"sbom.json": []byte(`{"sbom":true}`)})
	c.run("oras", "attach", "--plain-http", "--artifact-type", "application/vnd.example.sbom", ref, "sbom.json")

	// Wait covers the signature: it is present only when accessories are.
	mustBerth(t, a, "replicate", "wait", "team/app:v1", "--timeout", "60s")
	c.runOpts(env, "cosign", append([]string{"verify", "--key", "cosign.pub", "--insecure-ignore-tlog"},
		append(cosignInsecure, b.Host()+"/team/app@"+d.String())...)...)
	out := c.run("oras", "discover", "--plain-http", "--format", "json", b.Host()+"/team/app@"+d.String())
	if !strings.Contains(out, "application/vnd.example.sbom") {
		t.Fatalf("the referrer is not at b:\n%s", out)
	}

	// Filters: an excluded tag and an unselected repository stay at a.
	pushRandom(t, a, "team/app:v2-rc1")
	pushRandom(t, a, "other/app:v1")
	d3 := pushRandom(t, a, "team/app:v3")
	eventually(t, replTimeout, "v3 at b", hasDigest(t, b, "team/app:v3", d3.String()))
	for _, r := range []string{"team/app:v2-rc1", "other/app:v1"} {
		if got := digestAt(t, b, r); got != "" {
			t.Errorf("%s was replicated (%s) though the policy leaves it out", r, got)
		}
	}
	if _, err := berth(t, a, "replicate", "wait", "other/app:v1", "--timeout", "2s"); err == nil {
		t.Error("wait for an artifact no policy selects succeeded")
	}

	// Status, for scripts.
	var st replicate.ArtifactStatus
	if err := json.Unmarshal([]byte(mustBerth(t, a, "replicate", "status", "team/app:v1", "--output", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Destinations) != 1 || st.Destinations[0].State != replicate.StatePresent {
		t.Fatalf("status %+v", st)
	}

	// Deletes propagate.
	ctx := deadlineCtx(t, time.Minute)
	if err := remote.Delete(a.ref(t, "team/app:v3"), a.remote(ctx)...); err != nil {
		t.Fatal(err)
	}
	eventually(t, replTimeout, "delete of v3 at b", hasDigest(t, b, "team/app:v3", ""))

	// Promotion: signed goes, unsigned is refused with the reason.
	mustBerth(t, a, "promote", "team/app:v1", "prod/app:1", "--require-signature", c.path("cosign.pub"))
	if got := digestAt(t, a, "prod/app:1"); got != d.String() {
		t.Fatalf("promoted prod/app:1 is %q, want %s", got, d)
	}
	c.runOpts(env, "cosign", append([]string{"verify", "--key", "cosign.pub", "--insecure-ignore-tlog"},
		append(cosignInsecure, a.Host()+"/prod/app:1")...)...)
	pushRandom(t, a, "team/unsigned:1")
	_, err := berth(t, a, "promote", "team/unsigned:1", "prod/unsigned:1", "--require-signature", c.path("cosign.pub"))
	if err == nil || !strings.Contains(err.Error(), "no cosign signature") {
		t.Fatalf("promote of an unsigned image: %v", err)
	}
	if got := digestAt(t, a, "prod/unsigned:1"); got != "" {
		t.Fatalf("a refused promotion copied %s", got)
	}
}

// TestReplicationToDistribution replicates to a CNCF distribution registry
// as a plain OCI endpoint (basic auth, no referrers API, no versions).
func TestReplicationToDistribution(t *testing.T) {
	t.Parallel()
	requireClient(t, "registry")
	a := startRepl(t)
	d := startFlavor(t, distributionFlavor{}, Options{})
	endpoint(t, a, "dist", d.URL(), d, policy.EndpointOCI)
	mustBerth(t, a, "policy", "add", "mirror", "--endpoint", "dist", "--trigger", "event", "--delete")

	dg := pushRandom(t, a, "pair/app:v1")
	c := newClients(t, a)
	dockerAuth(t, c, a, d)
	env := cmdOpts{env: []string{"COSIGN_PASSWORD=e2e-key-password", "COSIGN_YES=true"}}
	c.runOpts(env, "cosign", "generate-key-pair")
	c.runOpts(env, "cosign", append([]string{"sign", "--key", "cosign.key", "--tlog-upload=false", "-y"},
		append(cosignInsecure, a.Host()+"/pair/app@"+dg.String())...)...)
	mustBerth(t, a, "replicate", "wait", "pair/app:v1", "--timeout", "60s")
	c.runOpts(env, "cosign", append([]string{"verify", "--key", "cosign.pub", "--insecure-ignore-tlog"},
		append(cosignInsecure, d.Host()+"/pair/app:v1")...)...)

	ctx := deadlineCtx(t, time.Minute)
	if err := remote.Delete(a.ref(t, "pair/app:v1"), a.remote(ctx)...); err != nil {
		t.Fatal(err)
	}
	eventually(t, replTimeout, "delete at distribution", hasDigest(t, d, "pair/app:v1", ""))
}

// TestReplicationChainFanOutManualCron: a → b → c by events on each hop,
// a → d as well, a manual policy that copies only when run, and a cron
// policy that copies by itself.
func TestReplicationChainFanOutManualCron(t *testing.T) {
	t.Parallel()
	a, b, c, d, e, f := startRepl(t), startRepl(t), startRepl(t), startRepl(t), startRepl(t), startRepl(t)
	endpoint(t, a, "b", b.URL(), b, policy.EndpointBerth)
	endpoint(t, b, "c", c.URL(), c, policy.EndpointBerth)
	endpoint(t, a, "d", d.URL(), d, policy.EndpointBerth)
	endpoint(t, a, "e", e.URL(), e, policy.EndpointBerth)
	endpoint(t, a, "f", f.URL(), f, policy.EndpointBerth)
	mustBerth(t, a, "policy", "add", "to-b", "--endpoint", "b", "--trigger", "event")
	mustBerth(t, b, "policy", "add", "to-c", "--endpoint", "c", "--trigger", "event")
	mustBerth(t, a, "policy", "add", "to-d", "--endpoint", "d", "--trigger", "event")
	mustBerth(t, a, "policy", "add", "to-e", "--endpoint", "e", "--trigger", "manual")
	mustBerth(t, a, "policy", "add", "to-f", "--endpoint", "f", "--trigger", "cron:'@every 2s'")

	dg := pushRandom(t, a, "lib/app:1")
	took := eventually(t, replTimeout, "a → b → c", hasDigest(t, c, "lib/app:1", dg.String()))
	t.Logf("two hops in %s", took.Round(time.Millisecond))
	eventually(t, replTimeout, "fan-out to d", hasDigest(t, d, "lib/app:1", dg.String()))
	eventually(t, replTimeout, "cron to f", hasDigest(t, f, "lib/app:1", dg.String()))
	if got := digestAt(t, e, "lib/app:1"); got != "" {
		t.Fatalf("a manual policy copied before it was run: %s", got)
	}
	out := mustBerth(t, a, "replicate", "run", "to-e", "--output", "json")
	var ex policy.Execution
	if err := json.Unmarshal([]byte(out), &ex); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if ex.Status != policy.ExecSucceeded || ex.Succeeded != 1 {
		t.Fatalf("manual execution %+v", ex)
	}
	if got := digestAt(t, e, "lib/app:1"); got != dg.String() {
		t.Fatalf("after the run, e has %q", got)
	}
}

// cutProxy forwards TCP connections to a target until cut: then it
// refuses new ones and closes those open, as a network partition would.
type cutProxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go func() { _, _ = io.Copy(in, out); in.Close() }()
	}
}

func (p *cutProxy) setCut(cut bool) {
	p.cut.Store(cut)
	if !cut {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// tagMap is repo's tags and digests at srv.
func tagMap(t *testing.T, srv *Server, repo string) map[string]string {
	t.Helper()
	ctx := deadlineCtx(t, 30*time.Second)
	tags, err := remote.List(srv.ref(t, repo+":x").Context(), srv.remote(ctx)...)
	if err != nil {
		return map[string]string{}
	}
	out := map[string]string{}
	for _, tag := range tags {
		out[tag] = digestAt(t, srv, repo+":"+tag)
	}
	return out
}

// TestReplicationDualMasterPartition: a ⇄ b, each writable while the link
// between them is cut, with conflicting writes and a delete racing a
// re-push. After the heal both hold the same tags and digests, the newer
// write of each tag wins, and the executions stop growing (no loop).
func TestReplicationDualMasterPartition(t *testing.T) {
	t.Parallel()
	a, b := startRepl(t), startRepl(t)
	toB, toA := newCutProxy(t, b.Host()), newCutProxy(t, a.Host())
	endpoint(t, a, "b", toB.URL(), b, policy.EndpointBerth)
	endpoint(t, b, "a", toA.URL(), a, policy.EndpointBerth)
	mustBerth(t, a, "policy", "add", "to-b", "--endpoint", "b", "--trigger", "event", "--delete")
	mustBerth(t, b, "policy", "add", "to-a", "--endpoint", "a", "--trigger", "event", "--delete")

	gone := pushRandom(t, a, "pair/app:gone")
	eventually(t, replTimeout, "first copy", hasDigest(t, b, "pair/app:gone", gone.String()))

	toB.setCut(true)
	toA.setCut(true)
	pushRandom(t, a, "pair/app:both")         // older
	pushRandom(t, b, "pair/app:only-b")       // one side only
	pushRandom(t, b, "pair/app:gone")         // re-pushed at b, then deleted at a: the delete is newer
	last := pushRandom(t, b, "pair/app:both") // newer: wins on both sides
	<-time.After(10 * time.Millisecond)       // the clocks move on (not an assertion)
	ctx := deadlineCtx(t, time.Minute)
	if err := remote.Delete(a.ref(t, "pair/app:gone"), a.remote(ctx)...); err != nil {
		t.Fatal(err)
	}
	onlyA := pushRandom(t, a, "pair/app:only-a")
	toB.setCut(false)
	toA.setCut(false)

	want := map[string]string{"both": last.String(), "only-a": onlyA.String(), "only-b": digestAt(t, b, "pair/app:only-b")}
	took := eventually(t, 2*replTimeout, "both sides converge", func() error {
		ma, mb := tagMap(t, a, "pair/app"), tagMap(t, b, "pair/app")
		for _, m := range []map[string]string{ma, mb} {
			if len(m) != len(want) {
				return fmt.Errorf("a %v, b %v; want %v", ma, mb, want)
			}
			for k, v := range want {
				if m[k] != v {
					return fmt.Errorf("a %v, b %v; want %v", ma, mb, want)
				}
			}
		}
		return nil
	})
	t.Logf("converged %s after the heal", took.Round(time.Millisecond))

	// No loop: a few reconciliations later, no new execution appears.
	count := func(s *Server) int {
		var execs []policy.Execution
		_ = json.Unmarshal([]byte(mustBerth(t, s, "replicate", "executions", "--limit", "500", "--output", "json")), &execs)
		n := 0
		for _, e := range execs {
			if e.Trigger == policy.TriggerEvent {
				n++
			}
		}
		return n
	}
	ca, cb := count(a), count(b)
	<-time.After(7 * time.Second) // two reconcile intervals: time for a loop to show (not an assertion on speed)
	if na, nb := count(a), count(b); na != ca || nb != cb {
		t.Fatalf("event executions still growing: a %d → %d, b %d → %d", ca, na, cb, nb)
	}
}

// TestReplicationDestinationDown: b is down while a takes pushes; tasks
// retry (status says pending, with the reason); b comes back and everything
// arrives with nobody doing anything.
func TestReplicationDestinationDown(t *testing.T) {
	t.Parallel()
	a, b := startRepl(t), startRepl(t)
	endpoint(t, a, "b", b.URL(), b, policy.EndpointBerth)
	mustBerth(t, a, "policy", "add", "to-b", "--endpoint", "b", "--trigger", "event")
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	digests := map[string]string{}
	for i := range 5 {
		tag := fmt.Sprintf("pair/app:%d", i)
		digests[tag] = pushRandom(t, a, tag).String()
	}
	var st replicate.ArtifactStatus
	eventually(t, replTimeout, "status pending", func() error {
		out, err := berth(t, a, "replicate", "status", "pair/app:0", "--output", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		if len(st.Destinations) != 1 || st.Destinations[0].State != replicate.StatePending || st.Destinations[0].Reason == "" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	t.Logf("while b is down: %s: %s", st.Destinations[0].State, st.Destinations[0].Reason)
	if _, err := berth(t, a, "replicate", "wait", "pair/app:0", "--timeout", "2s"); err == nil {
		t.Fatal("wait succeeded while the destination is down")
	} else if !strings.Contains(err.Error(), "b (pair/app)") {
		t.Fatalf("wait's failure does not name the destination: %v", err)
	}
	<-time.After(3 * time.Second) // down a while longer: backoff grows (fault timing, not an assertion)
	b.Restart()
	took := eventually(t, 2*replTimeout, "converge after the restart", func() error {
		for tag, d := range digests {
			if got := digestAt(t, b, tag); got != d {
				return fmt.Errorf("%s at b is %q", tag, got)
			}
		}
		return nil
	})
	t.Logf("b converged %s after its restart", took.Round(time.Millisecond))
}

// TestReplicationTakeover kills -9 the node of a three-node source cluster
// that copies a large image (slowed by a bandwidth limit); another node
// takes the task over when the lease ends and finishes it.
func TestReplicationTakeover(t *testing.T) {
	t.Parallel()
	src := startCluster(t, 3, clusterOptions{Args: replArgs})
	dst := startRepl(t)
	leader := src.leader()
	endpoint(t, leader.Server, "dst", dst.URL(), dst, policy.EndpointBerth)
	mustBerth(t, leader.Server, "policy", "add", "slow", "--endpoint", "dst", "--trigger", "event", "--bandwidth", "4MB/s")

	ack, err := pushImage(deadlineCtx(t, 2*time.Minute), leader, "big/app", "v1", 24<<20)
	if err != nil {
		t.Fatal(err)
	}
	// Find the node copying it.
	var owner string
	eventually(t, replTimeout, "a node runs the task", func() error {
		out, err := berth(t, leader.Server, "replicate", "executions", "--policy", "slow", "--output", "json")
		if err != nil {
			return err
		}
		var execs []policy.Execution
		if err := json.Unmarshal([]byte(out), &execs); err != nil || len(execs) == 0 {
			return fmt.Errorf("no execution yet (%v)", err)
		}
		var ex struct {
			Tasks []policy.Task `json:"tasks"`
		}
		out, err = berth(t, leader.Server, "replicate", "execution", fmt.Sprint(execs[0].ID), "--output", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &ex); err != nil || len(ex.Tasks) == 0 || ex.Tasks[0].Status != policy.StatusRunning {
			return fmt.Errorf("task not running yet: %s", out)
		}
		owner = ex.Tasks[0].Owner
		return nil
	})
	victim := src.node(owner)
	<-time.After(2 * time.Second) // mid-copy (fault timing)
	t.Logf("killing %s, which runs the copy", owner)
	victim.markDown()
	victim.Kill()
	took := eventually(t, 2*replTimeout, "another node finishes the copy", hasDigest(t, dst, "big/app:v1", ack.digest.String()))
	t.Logf("copied by another node %s after the kill", took.Round(time.Millisecond))
	ctx := deadlineCtx(t, 2*time.Minute)
	img, err := remote.Image(dst.ref(t, "big/app@"+ack.digest.String()), dst.remote(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed() // verifies the digest as it reads
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("layer at the destination: %v", err)
		}
		rc.Close()
	}
}
