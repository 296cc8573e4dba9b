package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/replicate"
)

// A world is a real single-node cluster with three projects and a cast of
// principals, behind the management API:
//
//   - own: private; its members have every role, and a robot of it has a
//     few permissions (not project:read);
//   - foreign: private; outsider is its project admin, and a robot of it
//     has every permission a robot may have;
//   - pub: public, nobody's.
//
// restore puts them back after a request changed or deleted them.

const (
	ownProject     = "own"
	foreignProject = "foreign"
	publicProject  = "pub"
)

// projectSpec is one of the world's projects.
type projectSpec struct {
	name   string
	public bool
}

var worldProjects = []projectSpec{{ownProject, false}, {foreignProject, false}, {publicProject, true}}

// principal is one caller of the matrix.
type principal struct {
	label  string
	name   string // account name; "" for anonymous
	secret string
	p      policy.Principal // as the state holds it, for the expectation
	roles  map[string]policy.Role
}

func (pr principal) auth(r *http.Request) {
	if pr.name != "" {
		r.SetBasicAuth(pr.name, pr.secret)
	}
}

func password(user string) string { return "Passw0rd-" + user }

// users of the world: name → admin, and their memberships.
var (
	worldUsers = []struct {
		name  string
		admin bool
		roles map[string]policy.Role
	}{
		{"admin", true, nil},
		{"padmin", false, map[string]policy.Role{ownProject: policy.RoleProjectAdmin}},
		{"maint", false, map[string]policy.Role{ownProject: policy.RoleMaintainer}},
		{"dev", false, map[string]policy.Role{ownProject: policy.RoleDeveloper}},
		{"guest", false, map[string]policy.Role{ownProject: policy.RoleGuest}},
		{"lguest", false, map[string]policy.Role{ownProject: policy.RoleLimitedGuest}},
		{"outsider", false, map[string]policy.Role{foreignProject: policy.RoleProjectAdmin}},
		// victims are acted upon, never act.
		{"victim", false, nil},
		{"victim2", false, nil},
	}
	ownRobotAccess = []policy.Access{
		{Resource: policy.ResRepository, Action: policy.ActPull},
		{Resource: policy.ResQuota, Action: policy.ActRead},
		{Resource: policy.ResLog, Action: policy.ActList},
		{Resource: policy.ResRetention, Action: policy.ActList},
		{Resource: policy.ResImmutableTag, Action: policy.ActList},
	}
	worldRobots = []policy.Robot{
		{
			Name: policy.RobotName(ownProject, "limited"), Level: policy.RobotProject, Project: ownProject,
			Permissions: []policy.RobotPermission{{Kind: "project", Namespace: ownProject, Access: ownRobotAccess}},
		},
		{
			Name: policy.RobotName(foreignProject, "ci"), Level: policy.RobotProject, Project: foreignProject,
			Permissions: []policy.RobotPermission{{Kind: "project", Namespace: foreignProject, Access: policy.RobotAssignable}},
		},
	}
)

func robotSecret(name string) string {
	return "secret-of-" + strings.TrimPrefix(name, policy.RobotPrefix)
}

type world struct {
	t    *testing.T
	node *cluster.Node
	auth *registry.AccessAuth
	h    *api.Handler
	cast []principal // the matrix's callers, anonymous last
}

var _ api.Store = (*cluster.Node)(nil)

// fakeRunner records retention runs as if it ran them.
type fakeRunner struct {
	node *cluster.Node
	mu   sync.Mutex
	next uint64
}

func (f *fakeRunner) RunRetention(ctx context.Context, project string, dryRun bool) (policy.RetentionRun, error) {
	f.mu.Lock()
	f.next++
	id := 1000 + f.next
	f.mu.Unlock()
	run := policy.RetentionRun{ID: id, Project: project, DryRun: dryRun, Trigger: "manual", Status: policy.RunRunning, Started: time.Now().UnixNano()}
	return run, f.node.PutRetentionRun(ctx, run)
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, node: clustertest.SingleNode(t)}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	gc := &fakeGC{GCFunc: func(context.Context, bool) (registry.GCResult, error) { return registry.GCResult{}, nil }}
	auth, err := registry.NewAccessAuth(registry.DefaultAuthConfig(), w.node, w.node, w.node, logger)
	if err != nil {
		t.Fatal(err)
	}
	w.auth = auth
	w.h = api.New(gc, w.node, api.Info{Version: "test", NodeID: "test"}, logger).
		WithRetention(&fakeRunner{node: w.node}).WithAuthenticator(auth).
		WithCluster(fakeCluster{}).WithReplication(emptyRepl{})

	ctx := w.ctx()
	if err := w.node.EnsureTokenKey(ctx); err != nil {
		t.Fatal(err)
	}
	// bcrypt is slow under the race detector: hash on every core.
	var wg sync.WaitGroup
	errs := make(chan error, len(worldUsers))
	for _, u := range worldUsers {
		wg.Go(func() {
			if _, err := w.node.CreateUser(ctx, policy.User{Name: u.name}, password(u.name), u.admin); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	w.restore()

	for _, u := range worldUsers {
		if strings.HasPrefix(u.name, "victim") {
			continue
		}
		w.cast = append(w.cast, principal{
			label: u.name, name: u.name, secret: password(u.name), roles: u.roles,
			p: policy.Principal{Kind: policy.PrincipalUser, Name: u.name, Admin: u.admin},
		})
	}
	for _, rb := range worldRobots {
		w.cast = append(w.cast, principal{
			label: rb.Name, name: rb.Name, secret: robotSecret(rb.Name),
			p: policy.Principal{Kind: policy.PrincipalRobot, Name: rb.Name, Robot: &rb},
		})
	}
	w.cast = append(w.cast, principal{label: "anonymous", p: policy.Anonymous})

	// Warm the credential cache on every core, for the same reason.
	for _, pr := range w.cast {
		wg.Go(func() {
			if rec := w.do("GET", "/api/v1/projects", "", pr.auth); rec.Code != http.StatusOK {
				t.Errorf("%s: GET /projects: %d %s", pr.label, rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	return w
}

func (w *world) ctx() context.Context {
	return policy.WithActor(w.t.Context(), policy.Actor{Name: "test-setup"})
}

func (w *world) principal(label string) principal {
	for _, pr := range w.cast {
		if pr.label == label {
			return pr
		}
	}
	w.t.Fatalf("no principal %s", label)
	return principal{}
}

func (w *world) must(err error) {
	w.t.Helper()
	if err != nil && !errors.Is(err, policy.ErrExists) {
		w.t.Fatal(err)
	}
}

// restore brings the world back: its projects with their public flag and
// no immutability rules, the members, the robots with their secrets, the
// victims.
func (w *world) restore() {
	w.t.Helper()
	ctx := w.ctx()
	for _, ps := range worldProjects {
		p, err := w.node.Project(ctx, ps.name)
		switch {
		case errors.Is(err, oci.ErrNotFound):
			_, err = w.node.CreateProject(ctx, policy.Project{Name: ps.name, Public: ps.public})
			w.must(err)
		case err != nil:
			w.t.Fatal(err)
		case p.Public != ps.public || len(p.Immutable) > 0:
			_, err = w.node.UpdateProject(ctx, policy.Project{Name: ps.name, Public: ps.public}, "public", "immutable")
			w.must(err)
		}
	}
	for _, u := range worldUsers {
		if _, err := w.node.User(ctx, u.name); errors.Is(err, oci.ErrNotFound) {
			_, err = w.node.CreateUser(ctx, policy.User{Name: u.name}, password(u.name), u.admin)
			w.must(err)
		}
		for project, role := range u.roles {
			pa, err := w.node.ProjectAccess(ctx, u.name, project)
			w.must(err)
			if pa.Role != role {
				w.must(w.node.PutMember(ctx, policy.Member{Project: project, User: u.name, Role: role}, pa.Role == ""))
			}
		}
	}
	for _, rb := range worldRobots {
		if _, err := w.node.Robot(ctx, rb.Name); errors.Is(err, oci.ErrNotFound) {
			_, _, err = w.node.CreateRobot(ctx, rb, robotSecret(rb.Name))
			w.must(err)
		}
	}
}

// do sends one request to the handler, from 192.0.2.1.
func (w *world) do(method, target, body string, auth func(*http.Request)) *httptest.ResponseRecorder {
	return do(w.t, w.h, method, target, body, auth)
}

// as sends a request as principal label ("anonymous" included) and
// checks the status.
func (w *world) as(t *testing.T, label, method, target, body string, want int) *httptest.ResponseRecorder {
	t.Helper()
	rec := w.do(method, target, body, w.principal(label).auth)
	if rec.Code != want {
		t.Fatalf("%s %s %s as %s: %d, want %d: %s", method, target, clip(body), label, rec.Code, want, rec.Body)
	}
	return rec
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// bearer authenticates a request with an access token of principal label,
// fetched from the token service.
func (w *world) bearer(t *testing.T, label string) func(*http.Request) {
	t.Helper()
	pr := w.principal(label)
	return bearerAuth(tokenFor(t, w.auth, pr.name, pr.secret))
}

func decodeJSON[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
	return v
}

// fakeCluster is a Cluster that does nothing.
type fakeCluster struct{}

func (fakeCluster) ClusterStatus(context.Context, bool) (any, error) { return map[string]string{}, nil }
func (fakeCluster) LeaveCluster(context.Context) error               { return nil }

// emptyRepl is a replication engine with nothing in it.
type emptyRepl struct{}

var errNone = fmt.Errorf("nothing here: %w", oci.ErrNotFound)

func (emptyRepl) ListEndpoints(context.Context) ([]replicate.EndpointView, error) {
	return []replicate.EndpointView{}, nil
}
func (emptyRepl) GetEndpoint(context.Context, string) (replicate.EndpointView, error) {
	return replicate.EndpointView{}, errNone
}
func (emptyRepl) PutEndpoint(context.Context, replicate.EndpointSpec) (replicate.EndpointView, error) {
	return replicate.EndpointView{}, errNone
}
func (emptyRepl) RemoveEndpoint(context.Context, string) error { return errNone }
func (emptyRepl) CheckEndpoint(context.Context, string) (replicate.Health, error) {
	return replicate.Health{}, errNone
}
func (emptyRepl) ListRules(context.Context) ([]policy.Rule, error)     { return []policy.Rule{}, nil }
func (emptyRepl) GetRule(context.Context, string) (policy.Rule, error) { return policy.Rule{}, errNone }
func (emptyRepl) PutRule(context.Context, policy.Rule) (policy.Rule, error) {
	return policy.Rule{}, errNone
}
func (emptyRepl) RemoveRule(context.Context, string) error { return errNone }
func (emptyRepl) SetRuleEnabled(context.Context, string, bool) (policy.Rule, error) {
	return policy.Rule{}, errNone
}
func (emptyRepl) RunRule(context.Context, string) (uint64, error) { return 0, errNone }
func (emptyRepl) Executions(context.Context, string, uint64, int) ([]policy.Execution, error) {
	return []policy.Execution{}, nil
}
func (emptyRepl) Execution(context.Context, uint64) (policy.Execution, error) {
	return policy.Execution{}, errNone
}
func (emptyRepl) Tasks(context.Context, uint64, string, uint64, int) ([]policy.Task, error) {
	return []policy.Task{}, nil
}
func (emptyRepl) StopExecution(context.Context, uint64) error { return errNone }
func (emptyRepl) Status(context.Context, string, string) (replicate.ArtifactStatus, error) {
	return replicate.ArtifactStatus{}, errNone
}
func (emptyRepl) Promote(context.Context, replicate.PromoteRequest) (replicate.PromoteResult, error) {
	return replicate.PromoteResult{}, errNone
}

var _ api.Replication = emptyRepl{}
