package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/replicate"
)

// Credentials of every site's admin.
const (
	adminUser = "admin"
	adminPass = "site-admin-password"
)

// users knows the admin only.
type users struct{}

func (users) CheckPassword(_ context.Context, user, password string) (bool, bool, error) {
	ok := user == adminUser && password == adminPass
	return ok, ok, nil
}

// site is one berth cluster of one node in this process: its state, its
// registry on an httptest server, and its replication engine. Requests the
// engine sends to endpoints go through gate, which a test closes to cut the
// site off.
type site struct {
	name   string
	node   *cluster.Node
	reg    *registry.Registry
	srv    *httptest.Server
	engine *replicate.Engine
	gate   *gate
}

// gate fails every request while closed, as a network partition would.
type gate struct {
	closed atomic.Bool
	next   http.RoundTripper
}

func (g *gate) RoundTrip(r *http.Request) (*http.Response, error) {
	if g.closed.Load() {
		return nil, errors.New("partitioned (test)")
	}
	return g.next.RoundTrip(r)
}

func newSite(t *testing.T, name string) *site {
	t.Helper()
	c := clustertest.New(t, 1, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		cfg.Secret = []byte(name + "-cluster-secret-0123456789")
	}))
	s := &site{name: name, node: c.Node(0), gate: &gate{next: http.DefaultTransport}}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rcfg := registry.DefaultConfig()
	rcfg.DataDir = t.TempDir()
	rcfg.GCInterval = 0
	reg, err := registry.New(rcfg, s.node, registry.NewAdminAuth(users{}, true, "berth"), logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	s.reg = reg
	mux := http.NewServeMux()
	mux.Handle("/v2/", reg.Handler())
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)

	ecfg := replicate.DefaultConfig()
	ecfg.NodeID = c.ID(0)
	ecfg.CredentialKey = []byte(strings.Repeat("k", 32))
	ecfg.Poll = 20 * time.Millisecond
	ecfg.Lease = 3 * time.Second
	ecfg.RetryMin, ecfg.RetryMax = 50*time.Millisecond, 300*time.Millisecond
	ecfg.ReconcileInterval = time.Second
	ecfg.HealthInterval = 200 * time.Millisecond
	ecfg.Transport = s.gate
	s.engine, err = replicate.New(ecfg, s.node, reg.Content(), s.node, s.node, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.engine.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return s
}

func (s *site) ref(t *testing.T, repo, tag string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(strings.TrimPrefix(s.srv.URL, "http://")+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var auth = remote.WithAuth(&authn.Basic{Username: adminUser, Password: adminPass})

// push writes a random image to repo:tag at s and returns its digest.
func (s *site) push(t *testing.T, repo, tag string) v1.Hash {
	t.Helper()
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(s.ref(t, repo, tag), img, auth); err != nil {
		t.Fatalf("push %s:%s to %s: %v", repo, tag, s.name, err)
	}
	d, _ := img.Digest()
	return d
}

// digest is what repo:tag points to at s ("" when absent).
func (s *site) digest(t *testing.T, repo, tag string) string {
	t.Helper()
	desc, err := remote.Head(s.ref(t, repo, tag), auth)
	if err != nil {
		return ""
	}
	return desc.Digest.String()
}

// to makes an endpoint of s pointing at dst and an enabled policy using it.
func (s *site) to(t *testing.T, dst *site, rule policy.Rule) {
	t.Helper()
	ctx := t.Context()
	if _, err := s.engine.PutEndpoint(ctx, replicate.EndpointSpec{
		Name: dst.name, URL: dst.srv.URL, Type: policy.EndpointBerth, User: adminUser, Password: adminPass,
	}); err != nil {
		t.Fatalf("endpoint %s at %s: %v", dst.name, s.name, err)
	}
	rule.Endpoint, rule.Enabled = dst.name, true
	if rule.Name == "" {
		rule.Name = "to-" + dst.name
	}
	if rule.Trigger == "" {
		rule.Trigger = policy.TriggerEvent
	}
	if _, err := s.engine.PutRule(ctx, rule); err != nil {
		t.Fatalf("policy at %s: %v", s.name, err)
	}
}

// eventually polls check until it returns nil, failing with its last error
// after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantDigest(t *testing.T, s *site, repo, tag, want string) func() error {
	return func() error {
		if got := s.digest(t, repo, tag); got != want {
			return fmt.Errorf("%s: %s:%s is %q, want %q", s.name, repo, tag, got, want)
		}
		return nil
	}
}

func TestEventReplicationAndDelete(t *testing.T) {
	a, b := newSite(t, "a"), newSite(t, "b")
	a.to(t, b, policy.Rule{Repos: "team/**", ExcludeTags: "*-rc*", Delete: true})

	d := a.push(t, "team/app", "v1")
	eventually(t, 10*time.Second, "event copy", wantDigest(t, b, "team/app", "v1", d.String()))

	// The version travels with the tag.
	va, _, err := a.node.TagVersion(t.Context(), "team/app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	vb, _, err := b.node.TagVersion(t.Context(), "team/app", "v1")
	if err != nil || vb != va {
		t.Fatalf("version at b %v (%v), want a's %v", vb, err, va)
	}

	// Filters: neither an excluded tag nor another repository is copied.
	a.push(t, "team/app", "v2-rc1")
	a.push(t, "other/app", "v1")
	d3 := a.push(t, "team/app", "v3")
	eventually(t, 10*time.Second, "event copy of v3", wantDigest(t, b, "team/app", "v3", d3.String()))
	if got := b.digest(t, "team/app", "v2-rc1"); got != "" {
		t.Errorf("excluded tag copied: %s", got)
	}
	if got := b.digest(t, "other/app", "v1"); got != "" {
		t.Errorf("unselected repository copied: %s", got)
	}

	// Status says present, from the destination itself.
	st, err := a.engine.Status(t.Context(), "team/app", "v1")
	if err != nil || len(st.Destinations) != 1 || st.Destinations[0].State != replicate.StatePresent {
		t.Fatalf("status = %+v, %v", st, err)
	}

	// Delete propagation.
	if err := a.node.DeleteTag(t.Context(), "team/app", "v1", oci.TagVersion{}, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "delete propagation", wantDigest(t, b, "team/app", "v1", ""))
}

func TestChain(t *testing.T) {
	a, b, c := newSite(t, "a"), newSite(t, "b"), newSite(t, "c")
	a.to(t, b, policy.Rule{})
	b.to(t, c, policy.Rule{})
	d := a.push(t, "lib/app", "1.0")
	eventually(t, 15*time.Second, "a → b → c", wantDigest(t, c, "lib/app", "1.0", d.String()))
}

// TestDualMasterConverges writes the same tags on both sides of a pair cut
// off from each other, deletes one on one side, heals, and checks that both
// end with the same tags and digests, the deleted tag gone where its delete
// was the last write.
func TestDualMasterConverges(t *testing.T) {
	a, b := newSite(t, "a"), newSite(t, "b")
	a.to(t, b, policy.Rule{Delete: true})
	b.to(t, a, policy.Rule{Delete: true})

	d0 := a.push(t, "app", "gone")
	eventually(t, 10*time.Second, "first copy", wantDigest(t, b, "app", "gone", d0.String()))

	a.gate.closed.Store(true)
	b.gate.closed.Store(true)
	a.push(t, "app", "both")         // older
	last := b.push(t, "app", "both") // newer: wins on both sides
	// Give the deletion the higher version: b re-pushes gone first.
	b.push(t, "app", "gone")
	time.Sleep(5 * time.Millisecond) // the HLC moves on (a clock, not an assertion)
	if err := a.node.DeleteTag(t.Context(), "app", "gone", oci.TagVersion{}, ""); err != nil {
		t.Fatal(err)
	}
	a.gate.closed.Store(false)
	b.gate.closed.Store(false)

	for _, s := range []*site{a, b} {
		eventually(t, 20*time.Second, "newer write wins at "+s.name, wantDigest(t, s, "app", "both", last.String()))
		eventually(t, 20*time.Second, "delete wins at "+s.name, wantDigest(t, s, "app", "gone", ""))
	}
}

func TestOCIDestination(t *testing.T) {
	a := newSite(t, "a")
	dst := httptest.NewServer(ggcrregistry.New(ggcrregistry.WithReferrersSupport(true)))
	t.Cleanup(dst.Close)
	ctx := t.Context()
	if _, err := a.engine.PutEndpoint(ctx, replicate.EndpointSpec{Name: "plain", URL: dst.URL, Type: policy.EndpointOCI}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.engine.PutRule(ctx, policy.Rule{Name: "mirror", Endpoint: "plain", Trigger: policy.TriggerManual, DestPrefix: "mirror", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	d := a.push(t, "app", "v1")
	id, err := a.engine.RunRule(ctx, "mirror")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "manual execution ends", func() error {
		ex, err := a.engine.Execution(ctx, id)
		if err != nil {
			return err
		}
		if ex.Status != policy.ExecSucceeded || ex.Succeeded != 1 {
			return fmt.Errorf("execution %+v", ex)
		}
		return nil
	})
	ref, _ := name.ParseReference(strings.TrimPrefix(dst.URL, "http://")+"/mirror/app:v1", name.Insecure)
	desc, err := remote.Head(ref)
	if err != nil || desc.Digest != d {
		t.Fatalf("at the OCI destination: %v, %v; want %s", desc, err, d)
	}
	// A second run finds nothing to do.
	id2, err := a.engine.RunRule(ctx, "mirror")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "second execution ends", func() error {
		ex, err := a.engine.Execution(ctx, id2)
		if err != nil {
			return err
		}
		if ex.Status != policy.ExecSucceeded || ex.Total != 0 {
			return fmt.Errorf("execution %+v", ex)
		}
		return nil
	})
}
