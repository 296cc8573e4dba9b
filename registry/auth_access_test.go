package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// matrixPermission is what a registry action needs in the access model:
// the distribution token spec's actions mapped onto Harbor's matrix.
var matrixPermission = map[Action]policy.Access{
	ActionPull:   {Resource: policy.ResRepository, Action: policy.ActPull},
	ActionPush:   {Resource: policy.ResRepository, Action: policy.ActPush},
	ActionDelete: {Resource: policy.ResArtifact, Action: policy.ActDelete},
}

// harborActions is what each project role may do to content in Harbor's
// permission matrix (pull, push, delete artifact), written out here rather
// than read from policy, so that the matrix tests the role table too.
var harborActions = map[policy.Role][]Action{
	policy.RoleProjectAdmin: {ActionPull, ActionPush, ActionDelete},
	policy.RoleMaintainer:   {ActionPull, ActionPush, ActionDelete},
	policy.RoleDeveloper:    {ActionPull, ActionPush},
	policy.RoleGuest:        {ActionPull},
	policy.RoleLimitedGuest: {ActionPull},
}

// expect is what the access model says account name ("" for anonymous)
// may do with act in project, derived from Harbor's role matrix and the
// robots' permission lists rather than from the code under test.
func (f fixture) expect(name, project string, act Action, anonymousPull bool) bool {
	switch {
	case name == rootUser:
		return true
	case f.public[project] && act == ActionPull:
		return name != "" || anonymousPull
	case name == "":
		return false
	case policy.IsRobotName(name):
		for _, r := range fixtureRobots {
			for _, perm := range r.Permissions {
				if r.Name == name && perm.Namespace == project && slices.Contains(perm.Access, matrixPermission[act]) {
					return true
				}
			}
		}
		return false
	}
	role, member := fixtureMembers[name]
	return member && project == ownProject && slices.Contains(harborActions[role], act)
}

// TestAccess builds one registry with the access fixture — creating a
// user costs a bcrypt hash, slow under -race — and runs the access tests
// on it in turn. Each leaves the fixture as the others expect it: new
// repositories and projects only, passwords changed only of accounts it
// created.
func TestAccess(t *testing.T) {
	tr := newTestRegistry(t, testOpts{access: true})
	f := tr.setupAccess(t)
	for _, tt := range []struct {
		name string
		fn   func(*testing.T, *testRegistry, fixture)
	}{
		{"Matrix", testAccessMatrix},
		{"Anonymous", testAccessAnonymous},
		{"RobotClients", testAccessRobotClients},
		{"BasicAuth", testAccessBasicAuth},
		{"NoProject", testAccessNoProject},
		{"PolicyErrors", testAccessPolicyErrors},
		{"TokenAttacks", testTokenAttacks},
		{"TokenScopes", testTokenScopes},
		{"DockerLogin", testDockerLogin},
		{"RevokedAccounts", testRevokedAccounts},
		{"TokenRequests", testTokenRequests},
		// Last: it lists what the others pushed.
		{"Catalog", testAccessCatalog},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, tr, f) })
	}
}

// testAccessMatrix runs every registry action (pull, push, delete) of
// every kind of caller — each project role, a system administrator, a
// user of no project, a robot of the project that may only pull, a robot
// that may push there, a robot of another project, anonymous — on a
// private project the role users belong to, a private one they do not,
// and a public one; with basic auth and with a token from the token
// service. Every grant the matrix gives must work and every other request
// must be refused: 401 with the challenge for anonymous callers; 401
// insufficient_scope with DENIED for a token; 403 DENIED for basic auth.
func testAccessMatrix(t *testing.T, tr *testRegistry, f fixture) {
	accounts := []string{"padmin", "maint", "dev", "guest", "lguest", rootUser, "outsider", ""}
	for _, r := range fixtureRobots {
		accounts = append(accounts, r.Name)
	}
	manifests := map[string][]byte{}
	for _, p := range []string{ownProject, foreignProject, publicProject} {
		resp := tr.do(t, http.MethodGet, "/v2/"+p+"/img/manifests/v1", nil)
		wantStatus(t, resp, http.StatusOK)
		manifests[p] = resp.body
	}
	seq := 0
	for _, mode := range []string{"basic", "token"} {
		for _, account := range accounts {
			for _, project := range []string{ownProject, foreignProject, publicProject} {
				for _, act := range []Action{ActionPull, ActionPush, ActionDelete} {
					seq++
					label := account
					if label == "" {
						label = "anonymous"
					}
					t.Run(fmt.Sprintf("%s/%s/%s/%s", mode, label, project, act), func(t *testing.T) {
						repo := project + "/img"
						want := f.expect(account, project, act, true)
						opt := f.asAccount(account)
						if mode == "token" {
							tok := tr.mustToken(t, opt, "repository:"+repo+":"+string(act))
							if got := slices.Contains(grantedActions(t, tok.Token, repo), string(act)); got != want {
								t.Fatalf("token grants %s: %t, the matrix says %t", act, got, want)
							}
							opt = bearer(tok.Token)
						}
						var resp *response
						okStatus := http.StatusOK
						switch act {
						case ActionPull:
							resp = tr.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v1", nil, opt)
						case ActionPush:
							content := fmt.Appendf(nil, "blob %d", seq)
							resp = tr.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+oci.DigestOf(content).String(), content, opt)
							okStatus = http.StatusCreated
						case ActionDelete:
							tag := fmt.Sprintf("del%d", seq)
							wantStatus(t, tr.putManifest(t, repo, tag, manifests[project], oci.MediaTypeImageManifest), http.StatusCreated)
							resp = tr.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/"+tag, nil, opt)
							okStatus = http.StatusAccepted
						}
						switch {
						case want:
							wantStatus(t, resp, okStatus)
						case account == "":
							scope := "repository:" + repo + ":" + string(act)
							if act == ActionPush {
								scope = "repository:" + repo + ":pull,push"
							}
							wantChallenge(t, tr, resp, scope)
						case mode == "token":
							// As distribution: a valid token without the
							// scope is 401 insufficient_scope (DENIED in
							// the body), which docker does not retry.
							wantError(t, resp, http.StatusUnauthorized, codeDenied)
							if h := resp.header.Get("WWW-Authenticate"); !strings.HasSuffix(h, `,error="insufficient_scope"`) {
								t.Fatalf("WWW-Authenticate = %q", h)
							}
						default:
							wantError(t, resp, http.StatusForbidden, codeDenied)
						}
					})
				}
			}
		}
	}
}

// testAccessAnonymous: without credentials, a public project can be pulled
// (by plain requests and by go-containerregistry's anonymous token flow)
// while a private one answers the challenge; with AnonymousPull off, even
// the public one does.
func testAccessAnonymous(t *testing.T, tr *testRegistry, _ fixture) {
	host := strings.TrimPrefix(tr.srv.URL, "http://")
	ctx := t.Context()

	wantStatus(t, tr.do(t, http.MethodGet, "/v2/pub/img/manifests/v1", nil, anonymous()), http.StatusOK)
	wantChallenge(t, tr, tr.do(t, http.MethodGet, "/v2/own/img/manifests/v1", nil, anonymous()), "repository:own/img:pull")
	// The root challenges, without a scope, so that docker logs in.
	wantChallenge(t, tr, tr.do(t, http.MethodGet, "/v2/", nil, anonymous()), "")
	wantChallenge(t, tr, tr.do(t, http.MethodGet, "/v2/_catalog", nil, anonymous()), "registry:catalog:*")

	ref, err := name.ParseReference(host+"/pub/img:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("anonymous pull of a public project: %v", err)
	}
	readImage(t, img)
	priv, _ := name.ParseReference(host+"/own/img:v1", name.Insecure)
	_, err = remote.Image(priv, remote.WithContext(ctx))
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous pull of a private project = %v, want 401", err)
	}
	// An anonymous token grants nothing in a private project.
	tok := tr.mustToken(t, anonymous(), "repository:own/img:pull", "repository:pub/img:pull,push")
	if got := grantedActions(t, tok.Token, "own/img"); got != nil {
		t.Fatalf("anonymous token grants %v in a private project", got)
	}
	if got := grantedActions(t, tok.Token, "pub/img"); !slices.Equal(got, []string{"pull"}) {
		t.Fatalf("anonymous token grants %v in a public project, want pull", got)
	}
	if tok.RefreshToken != "" {
		t.Fatal("an anonymous caller got a refresh token")
	}

}

// TestAccessAnonymousPullOff: with AnonymousPull off, even a public
// project answers the challenge to anonymous callers, and their tokens
// grant nothing.
func TestAccessAnonymousPullOff(t *testing.T) {
	closed := newTestRegistry(t, testOpts{access: true, noAnonymousPull: true})
	if _, err := closed.node.CreateProject(t.Context(), policy.Project{Name: publicProject, Public: true, Quota: policy.NoQuota}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, closed.putManifest(t, "pub/img", "v1", mustJSON(t, closed.image(t, "pub/img", "pub")), oci.MediaTypeImageManifest), http.StatusCreated)
	wantChallenge(t, closed, closed.do(t, http.MethodGet, "/v2/pub/img/manifests/v1", nil, anonymous()), "repository:pub/img:pull")
	tok := closed.mustToken(t, anonymous(), "repository:pub/img:pull")
	if got := grantedActions(t, tok.Token, "pub/img"); got != nil {
		t.Fatalf("with anonymous pulls off, an anonymous token grants %v", got)
	}
	wantChallenge(t, closed, closed.do(t, http.MethodGet, "/v2/pub/img/manifests/v1", nil, bearer(tok.Token)), "repository:pub/img:pull")
}

// testAccessRobotClients: robots log in through go-containerregistry's
// token flow; one of project own pushes and pulls there and cannot push
// to project foreign, nor pull from it.
func testAccessRobotClients(t *testing.T, tr *testRegistry, f fixture) {
	host := strings.TrimPrefix(tr.srv.URL, "http://")
	robot := policy.RobotName(ownProject, "ci")
	user, pass := f.credentials(robot)
	opts := []remote.Option{
		remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})),
		remote.WithContext(t.Context()), remote.WithJobs(1),
	}
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := name.ParseReference(host+"/own/robot:v1", name.Insecure)
	if err := remote.Write(own, img, opts...); err != nil {
		t.Fatalf("robot push into its project: %v", err)
	}
	got, err := remote.Image(own, opts...)
	if err != nil {
		t.Fatalf("robot pull from its project: %v", err)
	}
	readImage(t, got)

	foreign, _ := name.ParseReference(host+"/foreign/robot:v1", name.Insecure)
	err = remote.Write(foreign, img, opts...)
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
		t.Fatalf("robot of own pushing into foreign = %v, want 401 (the token's scope)", err)
	}
	if _, err := tr.node.Tag(t.Context(), "foreign/robot", "v1"); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("foreign/robot:v1 exists after a refused push: %v", err)
	}
	ref, _ := name.ParseReference(host+"/foreign/img:v1", name.Insecure)
	if _, err := remote.Image(ref, opts...); !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
		t.Fatalf("robot of own pulling from foreign = %v, want 401", err)
	}
	// With basic auth too.
	content := []byte("robot blob")
	resp := tr.do(t, http.MethodPost, "/v2/foreign/img/blobs/uploads/?digest="+oci.DigestOf(content).String(), content, asUser(user, pass))
	wantError(t, resp, http.StatusForbidden, codeDenied)
}

// testAccessBasicAuth: clients that send basic credentials to /v2/ keep
// working, with the same decisions; wrong credentials are 401 and a
// login_failed audit event.
func testAccessBasicAuth(t *testing.T, tr *testRegistry, f fixture) {
	dev := f.asAccount("dev")
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/", nil, dev), http.StatusOK)

	// A developer pushes an image and its manifest, and pulls it.
	tr.user, tr.pass = f.credentials("dev")
	defer func() { tr.user, tr.pass = rootUser, passwordOf(rootUser) }()
	m := tr.image(t, "own/basic", "basic")
	wantStatus(t, tr.putManifest(t, "own/basic", "v1", mustJSON(t, m), oci.MediaTypeImageManifest), http.StatusCreated)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/own/basic/manifests/v1", nil), http.StatusOK)
	// It may not delete (developers have no artifact:delete).
	wantError(t, tr.do(t, http.MethodDelete, "/v2/own/basic/manifests/v1", nil), http.StatusForbidden, codeDenied)
	tr.user, tr.pass = rootUser, passwordOf(rootUser)

	resp := tr.do(t, http.MethodGet, "/v2/own/img/manifests/v1", nil, asUser("dev", "wrong-Password-1"))
	wantChallenge(t, tr, resp, "repository:own/img:pull")
	resp = tr.do(t, http.MethodGet, "/v2/", nil, asUser("nobody", "x"))
	wantChallenge(t, tr, resp, "")
	waitAudit(t, tr, policy.AuditFilter{Op: policy.AuditLoginFailed, Target: "nobody"})

	// Pushes are audited as their actor, from the client's address.
	events := waitAudit(t, tr, policy.AuditFilter{Op: policy.AuditPush, Actor: "dev"})
	if events[0].Addr != "127.0.0.1" || events[0].Target != "own/basic:v1" {
		t.Fatalf("push event = %+v", events[0])
	}
	// A manifest GET is a pull, counted in the audit log.
	waitAudit(t, tr, policy.AuditFilter{Op: policy.AuditPull, Actor: "dev", Target: "own/basic@"})
}

// waitAudit polls the audit log until f selects an event (the batched
// ones are flushed about every second) and returns what it selects.
func waitAudit(t *testing.T, tr *testRegistry, f policy.AuditFilter) []policy.AuditEvent {
	t.Helper()
	f.Limit = 10
	deadline := time.Now().Add(20 * time.Second)
	for {
		events, err := tr.node.Audit(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) > 0 {
			return events
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event matches %+v", f)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// testAccessNoProject: a push outside any existing project is refused
// with an error that says what to do. An administrator is told the
// project does not exist; anyone else gets the answer of a private project
// it may not see (it must not learn which private projects exist), and an
// anonymous caller the challenge.
func testAccessNoProject(t *testing.T, tr *testRegistry, f fixture) {
	content := []byte("nowhere")
	path := "/v2/nope/img/blobs/uploads/?digest=" + oci.DigestOf(content).String()

	resp := tr.do(t, http.MethodPost, path, content, f.asAccount(rootUser))
	wantError(t, resp, http.StatusNotFound, codeNameUnknown)
	if msg := resp.apiErr().Message; msg != "project nope does not exist; create it first" {
		t.Fatalf("message = %q", msg)
	}
	// A missing project and a private one dev may not see answer alike.
	for _, p := range []string{"nope", foreignProject} {
		resp := tr.do(t, http.MethodPost, "/v2/"+p+"/img/blobs/uploads/?digest="+oci.DigestOf(content).String(), content, f.asAccount("dev"))
		wantError(t, resp, http.StatusForbidden, codeDenied)
		if msg := resp.apiErr().Message; msg != "project "+p+" does not exist, or you have no access to it" {
			t.Fatalf("%s: message = %q", p, msg)
		}
	}
	// With a token too: the token service grants nothing there.
	tok := tr.mustToken(t, f.asAccount("dev"), "repository:nope/img:pull,push")
	if len(claimsOf(t, tok.Token).Access) != 0 {
		t.Fatalf("token grants %+v in a missing project", claimsOf(t, tok.Token).Access)
	}
	wantError(t, tr.do(t, http.MethodPost, path, content, bearer(tok.Token)), http.StatusUnauthorized, codeDenied)
	rootTok := tr.mustToken(t, f.asAccount(rootUser), "repository:nope/img:pull,push")
	wantError(t, tr.do(t, http.MethodPost, path, content, bearer(rootTok.Token)), http.StatusNotFound, codeNameUnknown)
	// A repository with no project component.
	resp = tr.do(t, http.MethodPost, "/v2/alpine/blobs/uploads/", nil, f.asAccount("dev"))
	wantError(t, resp, http.StatusNotFound, codeNameUnknown)
	if msg := resp.apiErr().Message; !strings.Contains(msg, "<project>/alpine") {
		t.Fatalf("message = %q", msg)
	}
	wantChallenge(t, tr, tr.do(t, http.MethodPost, path, content, anonymous()), "repository:nope/img:pull,push")
	wantChallenge(t, tr, tr.do(t, http.MethodGet, "/v2/nope/img/manifests/v1", nil, anonymous()), "repository:nope/img:pull")
}

// testAccessCatalog: the catalog lists the repositories of the projects
// the caller may pull from (all of them for an administrator), paged.
func testAccessCatalog(t *testing.T, tr *testRegistry, f fixture) {
	all, err := tr.node.Repositories(t.Context(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	accounts := []string{rootUser, "dev", "lguest", "outsider", policy.RobotName(ownProject, "puller"), policy.RobotName(foreignProject, "ci")}
	for _, account := range accounts {
		tt := struct {
			account string
			want    []string
		}{account: account, want: []string{}}
		for _, repo := range all {
			project, _ := policy.ProjectOf(repo)
			if f.expect(account, project, ActionPull, true) {
				tt.want = append(tt.want, repo)
			}
		}
		if len(tt.want) == 0 || (account != rootUser && len(tt.want) == len(all)) {
			t.Fatalf("%s would see %v of %v: the fixture does not test the filter", account, tt.want, all)
		}
		t.Run(tt.account, func(t *testing.T) {
			for _, mode := range []string{"basic", "token"} {
				opt := f.asAccount(tt.account)
				if mode == "token" {
					tok := tr.mustToken(t, opt, "registry:catalog:*")
					opt = bearer(tok.Token)
				}
				resp := tr.do(t, http.MethodGet, "/v2/_catalog", nil, opt)
				wantStatus(t, resp, http.StatusOK)
				var c catalog
				if err := json.Unmarshal(resp.body, &c); err != nil || !slices.Equal(c.Repositories, tt.want) {
					t.Fatalf("%s: catalog = %s, want %v", mode, resp.body, tt.want)
				}
				// One by one, following the links.
				var paged []string
				next := "/v2/_catalog?n=1"
				for next != "" {
					resp := tr.do(t, http.MethodGet, next, nil, opt)
					wantStatus(t, resp, http.StatusOK)
					if err := json.Unmarshal(resp.body, &c); err != nil || len(c.Repositories) > 1 {
						t.Fatalf("page %s = %s", next, resp.body)
					}
					paged = append(paged, c.Repositories...)
					next = ""
					if l := resp.header.Get("Link"); l != "" {
						next = strings.TrimPrefix(strings.Split(l, ">")[0], "<")
					}
				}
				if !slices.Equal(paged, tt.want) {
					t.Fatalf("%s: paged catalog = %v, want %v", mode, paged, tt.want)
				}
			}
		})
	}
	// A token without the catalog scope does not list.
	tok := tr.mustToken(t, f.asAccount("dev"), "repository:own/img:pull")
	resp := tr.do(t, http.MethodGet, "/v2/_catalog", nil, bearer(tok.Token))
	wantChallenge(t, tr, resp, "registry:catalog:*")
}

// testAccessPolicyErrors: quota and immutability refusals are 403 DENIED
// with the state's reason, for docker to print.
func testAccessPolicyErrors(t *testing.T, tr *testRegistry, _ fixture) {
	ctx := t.Context()
	p, err := tr.node.CreateProject(ctx, policy.Project{Name: "strict", Quota: policy.NoQuota})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, tr.putManifest(t, "strict/img", "v1", mustJSON(t, tr.image(t, "strict/img", "strict")), oci.MediaTypeImageManifest), http.StatusCreated)
	p.Immutable = []policy.ImmutableRule{{Repos: "**", Tags: "v1"}}
	if _, err := tr.node.UpdateProject(ctx, p, "immutable"); err != nil {
		t.Fatal(err)
	}
	m := mustJSON(t, tr.image(t, "strict/img", "other"))
	resp := tr.putManifest(t, "strict/img", "v1", m, oci.MediaTypeImageManifest)
	wantError(t, resp, http.StatusForbidden, codeDenied)
	if msg := resp.apiErr().Message; !strings.Contains(msg, "strict/img:v1") || !strings.Contains(msg, "tag is immutable") {
		t.Fatalf("immutable message = %q", msg)
	}
	resp = tr.do(t, http.MethodDelete, "/v2/strict/img/manifests/v1", nil)
	wantError(t, resp, http.StatusForbidden, codeDenied)
	if msg := resp.apiErr().Message; !strings.Contains(msg, "tag is immutable") {
		t.Fatalf("immutable delete message = %q", msg)
	}

	p.Quota = policy.Quota{Storage: policy.Unlimited, Count: 1}
	if _, err := tr.node.UpdateProject(ctx, p, "quota"); err != nil {
		t.Fatal(err)
	}
	resp = tr.putManifest(t, "strict/img", "v2", m, oci.MediaTypeImageManifest)
	wantError(t, resp, http.StatusForbidden, codeDenied)
	if msg := resp.apiErr().Message; !strings.Contains(msg, "quota exceeded") || !strings.Contains(msg, "project strict") {
		t.Fatalf("quota message = %q", msg)
	}
	// A project at its limit refuses a new upload at once, before layers
	// are sent.
	resp = tr.do(t, http.MethodPost, "/v2/strict/other/blobs/uploads/", nil)
	wantError(t, resp, http.StatusForbidden, codeDenied)
	if msg := resp.apiErr().Message; !strings.Contains(msg, "quota exceeded") || !strings.Contains(msg, "1 of its 1 artifacts") {
		t.Fatalf("upload into a full project: %q", msg)
	}
}

// TestAccessAcrossNodes: an account, project and membership created
// through one node work through another at once — the token service and
// the registry catch up with the leader before they refuse.
func TestAccessAcrossNodes(t *testing.T) {
	c := clustertest.New(t, 3)
	ctx := t.Context()
	writer, reader := c.Node(0), c.Node(2)
	if err := writer.EnsureTokenKey(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := NewAccessAuth(DefaultAuthConfig(), reader, reader, reader, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		user, project := fmt.Sprintf("u%d", i), fmt.Sprintf("p%d", i)
		if _, err := writer.CreateProject(ctx, policy.Project{Name: project, Quota: policy.NoQuota}); err != nil {
			t.Fatal(err)
		}
		if _, err := writer.CreateUser(ctx, policy.User{Name: user}, passwordOf(user), false); err != nil {
			t.Fatal(err)
		}
		if err := writer.PutMember(ctx, policy.Member{Project: project, User: user, Role: policy.RoleDeveloper}, true); err != nil {
			t.Fatal(err)
		}
		// At once, through the other node: a token that grants the push,
		// and basic auth that allows it.
		q := url.Values{"service": {"berth"}, "scope": {"repository:" + project + "/app:pull,push"}}
		req := httptest.NewRequest(http.MethodGet, TokenPath+"?"+q.Encode(), nil)
		req.SetBasicAuth(user, passwordOf(user))
		rec := httptest.NewRecorder()
		a.TokenHandler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("token through node 2: %d %s", rec.Code, rec.Body)
		}
		var tok tokenResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil {
			t.Fatal(err)
		}
		if got := grantedActions(t, tok.Token, project+"/app"); !slices.Equal(got, []string{"pull", "push"}) {
			t.Fatalf("token through node 2 grants %v", got)
		}
		req = httptest.NewRequest(http.MethodPost, "/v2/"+project+"/app/blobs/uploads/", nil)
		req.SetBasicAuth(user, passwordOf(user))
		if _, err := a.Authorize(req, Access{Repo: project + "/app", Action: ActionPush}); err != nil {
			t.Fatalf("basic push through node 2: %v", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		if _, err := a.Authorize(req, Access{Repo: project + "/app", Action: ActionPush}); err != nil {
			t.Fatalf("bearer push through node 2: %v", err)
		}
	}
}
