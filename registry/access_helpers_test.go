package registry

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/policy"
)

// fakeClock is the access Authorizer's clock in tests: real time, moved
// forward on demand (to expire caches and tokens without sleeping).
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// rootUser is the system administrator of the access suite; every
// account's password is its name followed by passwordSuffix (strong
// enough for policy.ValidatePassword).
const (
	rootUser       = "root"
	passwordSuffix = "-Secret-9"
)

func passwordOf(user string) string { return user + passwordSuffix }

// newAccessAuth builds tr.access over the node behind tr.state, with a
// signing key, and makes tr.user the system administrator root.
func (tr *testRegistry) newAccessAuth(t testing.TB, anonymousPull bool, logger *slog.Logger) {
	t.Helper()
	n, ok := tr.state.State.(*cluster.Node)
	if !ok {
		t.Fatalf("the suite's state is a %T, not a *cluster.Node", tr.state.State)
	}
	ctx := context.Background()
	if err := n.EnsureTokenKey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.CreateUser(ctx, policy.User{Name: rootUser}, passwordOf(rootUser), true); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultAuthConfig()
	cfg.AnonymousPull = anonymousPull
	a, err := NewAccessAuth(cfg, n, n, n, logger)
	if err != nil {
		t.Fatal(err)
	}
	tr.clock = &fakeClock{}
	a.now = tr.clock.now
	tr.node, tr.access = n, a
	tr.user, tr.pass = rootUser, passwordOf(rootUser)
}

// The access suite's projects: a private project the role users belong
// to, a private one they do not, and a public one.
const (
	ownProject     = "own"
	foreignProject = "foreign"
	publicProject  = "pub"
)

// fixtureMembers are the members of ownProject, one per role.
var fixtureMembers = map[string]policy.Role{
	"padmin": policy.RoleProjectAdmin,
	"maint":  policy.RoleMaintainer,
	"dev":    policy.RoleDeveloper,
	"guest":  policy.RoleGuest,
	"lguest": policy.RoleLimitedGuest,
}

// fixtureRobots are the suite's robots: one of ownProject that may only
// pull, one that may push there, and one of foreignProject that may do
// everything a robot may do to content.
var fixtureRobots = []policy.Robot{
	{
		Name: policy.RobotName(ownProject, "puller"), Level: policy.RobotProject, Project: ownProject,
		Permissions: []policy.RobotPermission{{Kind: "project", Namespace: ownProject, Access: []policy.Access{
			{Resource: policy.ResRepository, Action: policy.ActPull},
		}}},
	},
	{
		Name: policy.RobotName(ownProject, "ci"), Level: policy.RobotProject, Project: ownProject,
		Permissions: []policy.RobotPermission{{Kind: "project", Namespace: ownProject, Access: []policy.Access{
			{Resource: policy.ResRepository, Action: policy.ActPull},
			{Resource: policy.ResRepository, Action: policy.ActPush},
		}}},
	},
	{
		Name: policy.RobotName(foreignProject, "ci"), Level: policy.RobotProject, Project: foreignProject,
		Permissions: []policy.RobotPermission{{Kind: "project", Namespace: foreignProject, Access: []policy.Access{
			{Resource: policy.ResRepository, Action: policy.ActPull},
			{Resource: policy.ResRepository, Action: policy.ActPush},
			{Resource: policy.ResArtifact, Action: policy.ActDelete},
		}}},
	},
}

// fixture is what setupAccess created: robot secrets by name, and the
// projects' visibility.
type fixture struct {
	secrets map[string]string
	public  map[string]bool
}

// setupAccess creates the suite's projects, users, members and robots,
// and pushes <project>/img:v1 into every project.
func (tr *testRegistry) setupAccess(t *testing.T) fixture {
	t.Helper()
	ctx := t.Context()
	n := tr.node
	f := fixture{secrets: map[string]string{}, public: map[string]bool{}}
	for _, p := range []policy.Project{
		{Name: ownProject, Quota: policy.NoQuota},
		{Name: foreignProject, Quota: policy.NoQuota},
		{Name: publicProject, Public: true, Quota: policy.NoQuota},
	} {
		if _, err := n.CreateProject(ctx, p); err != nil {
			t.Fatalf("create project %s: %v", p.Name, err)
		}
		f.public[p.Name] = p.Public
	}
	for _, u := range []string{"padmin", "maint", "dev", "guest", "lguest", "outsider"} {
		if _, err := n.CreateUser(ctx, policy.User{Name: u}, passwordOf(u), false); err != nil {
			t.Fatalf("create user %s: %v", u, err)
		}
		if role, ok := fixtureMembers[u]; ok {
			if err := n.PutMember(ctx, policy.Member{Project: ownProject, User: u, Role: role}, true); err != nil {
				t.Fatalf("member %s: %v", u, err)
			}
		}
	}
	for _, r := range fixtureRobots {
		_, secret, err := n.CreateRobot(ctx, r, "")
		if err != nil {
			t.Fatalf("create robot %s: %v", r.Name, err)
		}
		f.secrets[r.Name] = secret
	}
	for _, p := range []string{ownProject, foreignProject, publicProject} {
		repo := p + "/img"
		wantStatus(t, tr.putManifest(t, repo, "v1", mustJSON(t, tr.image(t, repo, p)), "application/vnd.oci.image.manifest.v1+json"), http.StatusCreated)
	}
	return f
}

// credentials returns the basic credentials of account name ("" for
// anonymous).
func (f fixture) credentials(name string) (user, pass string) {
	switch {
	case name == "":
		return "", ""
	case policy.IsRobotName(name):
		return name, f.secrets[name]
	}
	return name, passwordOf(name)
}

// asAccount sends the credentials of name, or none for "".
func (f fixture) asAccount(name string) reqOpt {
	if name == "" {
		return anonymous()
	}
	return asUser(f.credentials(name))
}

func bearer(tok string) reqOpt { return withHeader("Authorization", "Bearer "+tok) }

// tokenFor asks the token service for scopes with opt's credentials, and
// returns the response (its token when it is 200).
func (tr *testRegistry) tokenFor(t *testing.T, opt reqOpt, scopes ...string) (*response, tokenResponse) {
	t.Helper()
	q := url.Values{"service": {"berth"}, "scope": scopes}
	resp := tr.do(t, http.MethodGet, TokenPath+"?"+q.Encode(), nil, opt)
	var tok tokenResponse
	if resp.status == http.StatusOK {
		if err := json.Unmarshal(resp.body, &tok); err != nil {
			t.Fatalf("token response %s: %v", resp.body, err)
		}
	}
	return resp, tok
}

// mustToken is tokenFor that fails unless the service answers a token.
func (tr *testRegistry) mustToken(t *testing.T, opt reqOpt, scopes ...string) tokenResponse {
	t.Helper()
	resp, tok := tr.tokenFor(t, opt, scopes...)
	wantStatus(t, resp, http.StatusOK)
	if tok.Token == "" || tok.Token != tok.AccessToken {
		t.Fatalf("token response %s", resp.body)
	}
	return tok
}

// postToken sends the OAuth2 form.
func (tr *testRegistry) postToken(t *testing.T, form url.Values) (*response, tokenResponse) {
	t.Helper()
	resp := tr.do(t, http.MethodPost, TokenPath, []byte(form.Encode()),
		anonymous(), withHeader("Content-Type", "application/x-www-form-urlencoded"))
	var tok tokenResponse
	if resp.status == http.StatusOK {
		if err := json.Unmarshal(resp.body, &tok); err != nil {
			t.Fatalf("token response %s: %v", resp.body, err)
		}
	}
	return resp, tok
}

// claimsOf decodes a token's claims without verifying it.
func claimsOf(t *testing.T, tok string) *accessClaims {
	t.Helper()
	c := &accessClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, c); err != nil {
		t.Fatalf("decode token: %v", err)
	}
	return c
}

// grantedActions returns the actions a token grants on repo.
func grantedActions(t *testing.T, tok, repo string) []string {
	t.Helper()
	for _, a := range claimsOf(t, tok).Access {
		if a.Type == scopeRepository && a.Name == repo {
			return a.Actions
		}
	}
	return nil
}

// wantChallenge fails unless resp is a 401 with the Bearer challenge for
// scope ("" for none).
func wantChallenge(t *testing.T, tr *testRegistry, resp *response, scope string) {
	t.Helper()
	wantError(t, resp, http.StatusUnauthorized, codeUnauthorized)
	want := `Bearer realm="` + tr.srv.URL + TokenPath + `",service="berth"`
	if scope != "" {
		want += `,scope="` + scope + `"`
	}
	if got := resp.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, want) {
		t.Fatalf("WWW-Authenticate = %q, want %q", got, want)
	}
}
