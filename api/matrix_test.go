package api_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/policy"
)

// The role matrix: every endpoint × every principal of the world × (for
// endpoints about a project) own, foreign and public projects. Every
// grant must succeed, every denial must be 401 (anonymous, where nobody
// anonymous could), 404 (a project the caller may not see) or 403.
//
// The expected answer is computed from the tables below, written out by
// hand from Harbor's role matrix and berth's rule for public projects, and
// from each robot's own permission list — never from policy.Allowed or
// its tables, which the handlers decide with: a mistake there must show
// here, not hide in the expectation too.

// heldBy is Harbor's project role matrix (goharbor/harbor,
// src/common/rbac/project/rbac_role.go) for the permissions berth's routes
// need and a robot may be given: for each, the roles that hold it — A
// project admin, M maintainer, D developer, G guest, L limited guest.
var heldBy = map[string]string{
	"project:read":   "AMDGL",
	"project:update": "A",
	"project:delete": "A",

	"member:list":   "AMDG",
	"member:read":   "AMDG",
	"member:create": "A",
	"member:update": "A",
	"member:delete": "A",

	"robot:list":   "AMDG",
	"robot:read":   "AMDG",
	"robot:create": "A",
	"robot:update": "A",
	"robot:delete": "A",

	"log:list":   "AMDG",
	"quota:read": "AMDGL",

	"immutable-tag:list":   "AM",
	"immutable-tag:create": "AM",
	"immutable-tag:update": "AM",
	"immutable-tag:delete": "AM",

	"tag-retention:read":    "AMD",
	"tag-retention:list":    "AMD",
	"tag-retention:create":  "AMD",
	"tag-retention:update":  "AMD",
	"tag-retention:delete":  "AMD",
	"tag-retention:operate": "AMD",

	"repository:list":   "AMDGL",
	"repository:read":   "AMDG",
	"repository:pull":   "AMDGL",
	"repository:push":   "AMD",
	"repository:delete": "AM",

	"artifact:list":   "AMDGL",
	"artifact:read":   "AMDGL",
	"artifact:create": "AMD",
	"artifact:delete": "AM",

	"tag:list":   "AMDGL",
	"tag:create": "AMD",
	"tag:delete": "AM",

	"accessory:list": "AMDGL",
}

// roleLetter is each role's letter in heldBy.
var roleLetter = map[policy.Role]string{
	policy.RoleProjectAdmin: "A", policy.RoleMaintainer: "M", policy.RoleDeveloper: "D",
	policy.RoleGuest: "G", policy.RoleLimitedGuest: "L",
}

// publicMay is what anyone, anonymous included, may do in a public
// project: read its content.
var publicMay = map[string]bool{
	"project:read": true, "repository:read": true, "repository:list": true, "repository:pull": true,
	"artifact:read": true, "artifact:list": true, "tag:list": true, "accessory:list": true,
}

// roleHolds reports whether role holds perm, by heldBy.
func roleHolds(t *testing.T, role policy.Role, perm string) bool {
	t.Helper()
	held, ok := heldBy[perm]
	letter := roleLetter[role]
	if !ok || letter == "" {
		t.Fatalf("no row for %s or letter for role %q in the expected matrix", perm, role)
	}
	return strings.Contains(held, letter)
}

// may reports whether pr may do perm in project ps: an administrator
// anything; anyone public content; a robot what its list grants there
// (or in "*"); a member what its role holds.
func may(t *testing.T, pr principal, ps projectSpec, perm string) bool {
	t.Helper()
	switch {
	case pr.p.Kind == policy.PrincipalUser && pr.p.Admin:
		return true
	case ps.public && publicMay[perm]:
		return true
	case pr.p.Robot != nil:
		for _, rp := range pr.p.Robot.Permissions {
			if rp.Namespace == ps.name || rp.Namespace == "*" {
				for _, a := range rp.Access {
					if string(a.Resource)+":"+string(a.Action) == perm {
						return true
					}
				}
			}
		}
		return false
	}
	role, member := pr.roles[ps.name]
	return member && roleHolds(t, role, perm)
}

// sees reports whether pr may know that project ps exists: it may read
// it, or it is a robot whose permissions name it.
func sees(t *testing.T, pr principal, ps projectSpec) bool {
	t.Helper()
	if may(t, pr, ps, "project:read") {
		return true
	}
	if pr.p.Robot != nil {
		for _, rp := range pr.p.Robot.Permissions {
			if rp.Namespace == ps.name || rp.Namespace == "*" {
				return true
			}
		}
	}
	return false
}

// need is the rule an endpoint follows.
type need int

const (
	needProject        need = iota // res:act (and also) in the path's project
	needAdminInProject             // an administrator, 404 for a project the caller cannot see
	needVisible                    // anyone with credentials who may see the project, else 404
	needAdmin                      // a system administrator
	needUser                       // any user, not a robot
	needAuthenticated              // anyone with credentials
	needNothing                    // anyone
)

type matrixCase struct {
	route string // "METHOD /pattern", as registered
	need  need
	res   policy.Resource
	act   policy.Action
	// also are further permissions the endpoint needs after res:act,
	// decided in order.
	also []policy.Access
	// ok is the status of a success; 0: anything but 401, 403 (the
	// replication fake answers what it answers).
	ok int
	// usersOnly: robots are refused even where their permissions would
	// grant them.
	usersOnly bool
	// build returns the request's target and body for project (n is
	// unique per request); nil: the route's path with {project}.
	build func(w *world, project string, n int) (target, body string)
}

func (c matrixCase) method() string { m, _, _ := strings.Cut(c.route, " "); return m }

func (c matrixCase) projectScoped() bool {
	return c.need == needProject || c.need == needAdminInProject || c.need == needVisible
}

// perms are the permissions ("resource:action") a needProject case needs,
// in order.
func (c matrixCase) perms() []string {
	out := []string{string(c.res) + ":" + string(c.act)}
	for _, a := range c.also {
		out = append(out, string(a.Resource)+":"+string(a.Action))
	}
	return out
}

// want computes the expected status of c for pr in project ps.
func (c matrixCase) want(t *testing.T, pr principal, ps projectSpec) int {
	t.Helper()
	anon := pr.p.IsAnonymous()
	isAdmin := pr.p.Kind == policy.PrincipalUser && pr.p.Admin
	switch c.need {
	case needNothing:
		return c.ok
	case needAuthenticated:
		if anon {
			return http.StatusUnauthorized
		}
		return c.ok
	case needUser:
		switch {
		case anon:
			return http.StatusUnauthorized
		case pr.p.Kind != policy.PrincipalUser:
			return http.StatusForbidden
		}
		return c.ok
	case needAdmin:
		switch {
		case anon:
			return http.StatusUnauthorized
		case !isAdmin:
			return http.StatusForbidden
		}
		return c.ok
	case needAdminInProject:
		switch {
		case anon:
			return http.StatusUnauthorized
		case !sees(t, pr, ps):
			return http.StatusNotFound
		case !isAdmin:
			return http.StatusForbidden
		}
		return c.ok
	case needVisible:
		switch {
		case anon:
			return http.StatusUnauthorized
		case !sees(t, pr, ps):
			return http.StatusNotFound
		}
		return c.ok
	}
	perms := c.perms()
	for _, perm := range perms {
		if anon && !publicMay[perm] {
			return http.StatusUnauthorized
		}
	}
	for _, perm := range perms {
		if !may(t, pr, ps, perm) {
			switch {
			case !sees(t, pr, ps):
				return http.StatusNotFound
			case anon:
				return http.StatusUnauthorized
			}
			return http.StatusForbidden
		}
	}
	if c.usersOnly && pr.p.Kind != policy.PrincipalUser {
		return http.StatusForbidden
	}
	return c.ok
}

// target fills the route's wildcards: {project}, {user} (the victim),
// {name} and {id} as a case's build chose.
func target(route, project string) string {
	_, p, _ := strings.Cut(route, " ")
	return strings.NewReplacer("{project}", project, "{user}", "victim", "{name}", "x", "{id}", "1").Replace(p)
}

// ensureVictim makes victim a member of project (guest) or not.
func (w *world) ensureVictim(project string, member bool) {
	ctx := w.ctx()
	pa, err := w.node.ProjectAccess(ctx, "victim", project)
	w.must(err)
	switch {
	case member && pa.Role == "":
		w.must(w.node.PutMember(ctx, policy.Member{Project: project, User: "victim", Role: policy.RoleGuest}, true))
	case !member && pa.Role != "":
		w.must(w.node.DeleteMember(ctx, project, "victim"))
	}
}

// ensureRobot makes robot name exist, with repository:pull in project
// ("" for a system robot: in pub).
func (w *world) ensureRobot(project, short string) string {
	ctx := w.ctx()
	name := policy.RobotName(project, short)
	if _, err := w.node.Robot(ctx, name); err == nil {
		return name
	}
	rb := policy.Robot{Name: name, Level: policy.RobotProject, Project: project,
		Permissions: []policy.RobotPermission{{Kind: "project", Namespace: project,
			Access: []policy.Access{{Resource: policy.ResRepository, Action: policy.ActPull}}}}}
	if project == "" {
		rb.Level = policy.RobotSystem
		rb.Permissions[0].Namespace = publicProject
	}
	_, _, err := w.node.CreateRobot(ctx, rb, "")
	w.must(err)
	return name
}

// ensureRule gives project one immutability rule and returns its id.
func (w *world) ensureRule(project string) uint64 {
	ctx := w.ctx()
	p, err := w.node.UpdateProject(ctx, policy.Project{Name: project,
		Immutable: []policy.ImmutableRule{{Repos: "**", Tags: "fixture"}}}, "immutable")
	w.must(err)
	return p.Immutable[0].ID
}

func matrixCases() []matrixCase {
	in := func(route string, res policy.Resource, act policy.Action, ok int, b string) matrixCase {
		return matrixCase{route: route, need: needProject, res: res, act: act, ok: ok,
			build: func(_ *world, project string, _ int) (string, string) { return target(route, project), b }}
	}
	sys := func(route string, n need, ok int, b string) matrixCase {
		return matrixCase{route: route, need: n, ok: ok,
			build: func(_ *world, project string, _ int) (string, string) { return target(route, project), b }}
	}
	robotCase := func(route string, act policy.Action, ok int, b string) matrixCase {
		return matrixCase{route: route, need: needProject, res: policy.ResRobot, act: act, ok: ok, usersOnly: true,
			build: func(w *world, project string, _ int) (string, string) {
				name := w.ensureRobot(project, "tmp")
				return strings.Replace(target(route, project), "/x", "/"+name, 1), b
			}}
	}
	sysRobot := func(route string, ok int, b string) matrixCase {
		return matrixCase{route: route, need: needAdmin, ok: ok,
			build: func(w *world, _ string, _ int) (string, string) {
				name := w.ensureRobot("", "sys")
				return strings.Replace(target(route, ""), "/x", "/"+name, 1), b
			}}
	}
	rule := func(route string, act policy.Action, ok int, b string) matrixCase {
		return matrixCase{route: route, need: needProject, res: policy.ResImmutableTag, act: act, ok: ok,
			build: func(w *world, project string, _ int) (string, string) {
				id := w.ensureRule(project)
				t := target(route, project)
				return strings.TrimSuffix(t, "/1") + fmt.Sprintf("/%d", id), b
			}}
	}
	const v1 = "/api/v1"
	return []matrixCase{
		in("GET "+v1+"/projects/{project}", policy.ResProject, policy.ActRead, 200, ""),
		{route: "PUT " + v1 + "/projects/{project}", need: needProject, res: policy.ResProject, act: policy.ActUpdate, ok: 200,
			build: func(_ *world, project string, _ int) (string, string) {
				return target("PUT "+v1+"/projects/{project}", project), fmt.Sprintf(`{"public": %t}`, project == publicProject)
			}},
		in("DELETE "+v1+"/projects/{project}", policy.ResProject, policy.ActDelete, 204, ""),

		in("GET "+v1+"/projects/{project}/members", policy.ResMember, policy.ActList, 200, ""),
		{route: "POST " + v1 + "/projects/{project}/members", need: needProject, res: policy.ResMember, act: policy.ActCreate, ok: 201,
			build: func(w *world, project string, _ int) (string, string) {
				w.ensureVictim(project, false)
				return target("POST "+v1+"/projects/{project}/members", project), `{"username":"victim","role":"guest"}`
			}},
		{route: "PUT " + v1 + "/projects/{project}/members/{user}", need: needProject, res: policy.ResMember, act: policy.ActUpdate, ok: 200,
			build: func(w *world, project string, _ int) (string, string) {
				w.ensureVictim(project, true)
				return target("PUT "+v1+"/projects/{project}/members/{user}", project), `{"role":"developer"}`
			}},
		{route: "DELETE " + v1 + "/projects/{project}/members/{user}", need: needProject, res: policy.ResMember, act: policy.ActDelete, ok: 204,
			build: func(w *world, project string, _ int) (string, string) {
				w.ensureVictim(project, true)
				return target("DELETE "+v1+"/projects/{project}/members/{user}", project), ""
			}},

		in("GET "+v1+"/projects/{project}/robots", policy.ResRobot, policy.ActList, 200, ""),
		{route: "POST " + v1 + "/projects/{project}/robots", need: needProject, res: policy.ResRobot, act: policy.ActCreate, ok: 201, usersOnly: true,
			build: func(_ *world, project string, n int) (string, string) {
				return target("POST "+v1+"/projects/{project}/robots", project),
					fmt.Sprintf(`{"name":"r%d","permissions":[{"resource":"repository","action":"pull"}]}`, n)
			}},
		robotCase("GET "+v1+"/robots/{name}", policy.ActRead, 200, ""),
		robotCase("PUT "+v1+"/robots/{name}", policy.ActUpdate, 200, `{"description":"changed"}`),
		robotCase("DELETE "+v1+"/robots/{name}", policy.ActDelete, 204, ""),
		robotCase("POST "+v1+"/robots/{name}/secret", policy.ActUpdate, 200, ""),

		in("GET "+v1+"/projects/{project}/quota", policy.ResQuota, policy.ActRead, 200, ""),
		{route: "PUT " + v1 + "/projects/{project}/quota", need: needAdminInProject, ok: 200,
			build: func(_ *world, project string, _ int) (string, string) {
				return target("PUT "+v1+"/projects/{project}/quota", project), `{"storage":-1,"count":-1}`
			}},

		in("GET "+v1+"/projects/{project}/immutable", policy.ResImmutableTag, policy.ActList, 200, ""),
		in("POST "+v1+"/projects/{project}/immutable", policy.ResImmutableTag, policy.ActCreate, 201, `{"repos":"**","tags":"v*"}`),
		rule("PUT "+v1+"/projects/{project}/immutable/{id}", policy.ActUpdate, 200, `{"repos":"**","tags":"release-*"}`),
		rule("DELETE "+v1+"/projects/{project}/immutable/{id}", policy.ActDelete, 204, ""),

		in("GET "+v1+"/projects/{project}/retention", policy.ResRetention, policy.ActRead, 200, ""),
		in("PUT "+v1+"/projects/{project}/retention", policy.ResRetention, policy.ActUpdate, 200,
			`{"rules":[{"kind":"latestPushedK","param":3,"repos":"**","tags":"**"}],"schedule":"@daily"}`),
		in("POST "+v1+"/projects/{project}/retention/run", policy.ResRetention, policy.ActOperate, 202, `{"dry_run":true}`),
		in("GET "+v1+"/projects/{project}/retention/runs", policy.ResRetention, policy.ActList, 200, ""),
		{route: "GET " + v1 + "/projects/{project}/retention/runs/{id}", need: needProject, res: policy.ResRetention, act: policy.ActRead, ok: 200,
			build: func(w *world, project string, _ int) (string, string) {
				w.must(w.node.PutRetentionRun(w.ctx(), policy.RetentionRun{ID: 1, Project: project, Trigger: "manual", Status: policy.RunSucceeded}))
				return target("GET "+v1+"/projects/{project}/retention/runs/{id}", project), ""
			}},
		{route: "GET " + v1 + "/audit", need: needProject, res: policy.ResLog, act: policy.ActList, ok: 200,
			build: func(_ *world, project string, _ int) (string, string) { return v1 + "/audit?project=" + project, "" }},
		sys("GET "+v1+"/audit", needAdmin, 200, ""), // the whole log

		// Not about one project.
		sys("GET "+v1+"/users/current", needAuthenticated, 200, ""),
		sys("GET "+v1+"/projects", needNothing, 200, ""),
		{route: "POST " + v1 + "/projects", need: needUser, ok: 201,
			build: func(_ *world, _ string, n int) (string, string) {
				return v1 + "/projects", fmt.Sprintf(`{"name":"new%d"}`, n)
			}},
		sys("GET "+v1+"/robots", needAdmin, 200, ""),
		{route: "POST " + v1 + "/robots", need: needAdmin, ok: 201,
			build: func(_ *world, _ string, n int) (string, string) {
				return v1 + "/robots", fmt.Sprintf(`{"name":"sys%d","permissions":[{"namespace":"pub","access":[{"resource":"repository","action":"pull"}]}]}`, n)
			}},
		sysRobot("GET "+v1+"/robots/{name}", 200, ""),
		sysRobot("PUT "+v1+"/robots/{name}", 200, `{"description":"changed"}`),
		sysRobot("DELETE "+v1+"/robots/{name}", 204, ""),
		sysRobot("POST "+v1+"/robots/{name}/secret", 200, `{}`),
		sys("GET "+v1+"/users", needAdmin, 200, ""),
		{route: "POST " + v1 + "/users", need: needAdmin, ok: 201,
			build: func(_ *world, _ string, n int) (string, string) {
				return v1 + "/users", fmt.Sprintf(`{"username":"u%d","password":"Passw0rd-new"}`, n)
			}},
		sys("GET "+v1+"/users/{user}", needAdmin, 200, ""),
		sys("PUT "+v1+"/users/{user}", needAdmin, 200, `{"comment":"changed"}`),
		sys("PUT "+v1+"/users/{user}/password", needAdmin, 204, `{"new_password":"Passw0rd-victim"}`),
		sys("PUT "+v1+"/users/{user}/sysadmin", needAdmin, 200, `{"sysadmin_flag":false}`),
		{route: "DELETE " + v1 + "/users/{user}", need: needAdmin, ok: 204,
			build: func(_ *world, _ string, _ int) (string, string) { return v1 + "/users/victim2", "" }},
		sys("GET "+v1+"/quotas", needAdmin, 200, ""),
		sys("GET "+v1+"/system/token-keys", needAdmin, 200, ""),
		sys("POST "+v1+"/system/token-keys/rotate", needAdmin, 200, ""),
		sys("POST "+v1+"/gc", needAdmin, 200, ""),
		sys("GET "+v1+"/cluster", needAdmin, 200, ""),
		sys("POST "+v1+"/cluster/leave", needAdmin, 200, ""),
		sys("GET "+v1+"/system/info", needNothing, 200, ""),
		sys("GET "+v1+"/openapi.json", needNothing, 200, ""),
	}
}

func TestRoleMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the role matrix takes a while under the race detector")
	}
	w := newWorld(t)
	spotChecks(t, w)
	cases := matrixCases()
	// Every route must be in the matrix: the replication routes follow
	// one rule (administrators), so they are generated.
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.route] = true
	}
	for _, route := range api.Routes(w.h) {
		if !covered[route] && isReplicationRoute(route) {
			cases = append(cases, matrixCase{route: route, need: needAdmin, ok: 0,
				build: func(_ *world, project string, _ int) (string, string) { return target(route, project), "" }})
			covered[route] = true
		}
	}
	for _, route := range api.Routes(w.h) {
		// The Harbor-compatible routes have their own matrix
		// (TestHarborRoleMatrix), over the same principals and projects.
		if !covered[route] && !isHarborRoute(route) {
			t.Errorf("route %s is not in the role matrix", route)
		}
	}

	runMatrix(t, w, cases, readDocument(t, "openapi.json"))
}

// runMatrix sends every case as every principal of w — in own, foreign
// and pub for a case about a project — and compares each answer with the
// expectation; then it checks that doc, the routes' document, says what
// each case needs and lists every status expected of it.
func runMatrix(t *testing.T, w *world, cases []matrixCase, doc map[string]any) {
	t.Helper()
	statuses := map[string]map[int]bool{}
	var grants, denials, n int
	for _, c := range cases {
		projects := []projectSpec{{name: ownProject}}
		if c.projectScoped() {
			projects = worldProjects
		}
		if statuses[c.route] == nil {
			statuses[c.route] = map[int]bool{}
		}
		for _, ps := range projects {
			for _, pr := range w.cast {
				n++
				tgt, b := c.build(w, ps.name, n)
				rec := w.do(c.method(), tgt, b, pr.auth)
				want := c.want(t, pr, ps)
				if want != 0 {
					statuses[c.route][want] = true
				}
				where := fmt.Sprintf("%s (target %s) as %s", c.route, tgt, pr.label)
				switch {
				case want == 0:
					if rec.Code == http.StatusUnauthorized || rec.Code == http.StatusForbidden {
						t.Errorf("%s: %d, want it allowed: %s", where, rec.Code, rec.Body)
					}
					grants++
				case rec.Code != want:
					t.Errorf("%s: %d, want %d: %s", where, rec.Code, want, rec.Body)
				case want < 300:
					grants++
				default:
					denials++
					if want == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
						t.Errorf("%s: 401 without a challenge", where)
					}
					if isHarborRoute(c.route) && c.method() != http.MethodHead {
						if e := decodeHarborErrors(t, rec); e.Errors[0].Code != harborCode(want) {
							t.Errorf("%s: error code %s, want %s", where, e.Errors[0].Code, harborCode(want))
						}
					}
				}
				w.restore()
			}
		}
	}
	t.Logf("%d requests: %d granted, %d denied", n, grants, denials)
	if grants == 0 || denials == 0 {
		t.Fatalf("a matrix with %d grants and %d denials tests nothing", grants, denials)
	}

	for _, c := range cases {
		op := operation(doc, c.route)
		if op == nil {
			t.Errorf("%s is not in the document", c.route)
			continue
		}
		var says []string
		switch c.need {
		case needProject:
			says = c.perms()
		case needAdmin, needAdminInProject:
			says = []string{"admin"}
		case needUser:
			says = []string{"user"}
		case needVisible, needAuthenticated:
			says = []string{"authenticated"}
		case needNothing:
			says = []string{"none"}
		}
		perm, _ := op["x-permission"].(string)
		for _, s := range says {
			if !strings.Contains(perm, s) {
				t.Errorf("%s: x-permission %q does not say %s", c.route, perm, s)
			}
		}
		responses, _ := op["responses"].(map[string]any)
		for status := range statuses[c.route] {
			if _, ok := responses[strconv.Itoa(status)]; !ok {
				t.Errorf("%s answers %d, which its document does not list", c.route, status)
			}
		}
	}
}

func isReplicationRoute(route string) bool {
	for _, p := range []string{"/endpoints", "/policies", "/executions", "/replication/", "/promote"} {
		if strings.HasPrefix(route[strings.Index(route, " ")+1:], "/api/v1"+p) {
			return true
		}
	}
	return false
}

// spotChecks pins a few answers by hand, so that a mistake shared by the
// handlers and the matrix's expectation still shows.
func spotChecks(t *testing.T, w *world) {
	for _, tt := range []struct {
		who, method, target string
		want                int
	}{
		{"guest", "GET", "/api/v1/projects/own/members", 200},
		{"lguest", "GET", "/api/v1/projects/own/members", 403},
		{"dev", "DELETE", "/api/v1/projects/own", 403},
		{"maint", "GET", "/api/v1/projects/own/immutable", 200},
		{"guest", "GET", "/api/v1/projects/own/immutable", 403},
		{"outsider", "GET", "/api/v1/projects/own", 404},
		{"outsider", "GET", "/api/v1/projects/own/members", 404},
		{"outsider", "GET", "/api/v1/projects/foreign/members", 200},
		{"outsider", "GET", "/api/v1/projects/pub/members", 403},
		{"robot$foreign+ci", "GET", "/api/v1/projects/own", 404},
		{"robot$foreign+ci", "GET", "/api/v1/projects/foreign/members", 403},
		{"robot$own+limited", "GET", "/api/v1/projects/own/quota", 200},
		{"robot$own+limited", "GET", "/api/v1/projects/own", 403},
		{"robot$own+limited", "GET", "/api/v1/projects/foreign/quota", 404},
		{"anonymous", "GET", "/api/v1/projects/pub", 200},
		{"anonymous", "GET", "/api/v1/projects/own", 404},
		{"anonymous", "GET", "/api/v1/projects/own/members", 401},
		{"anonymous", "GET", "/api/v1/projects/nope/members", 401},
		{"padmin", "PUT", "/api/v1/projects/own/quota", 403},
		{"padmin", "GET", "/api/v1/projects/nope", 404},
	} {
		if rec := w.do(tt.method, tt.target, "", w.principal(tt.who).auth); rec.Code != tt.want {
			t.Errorf("%s %s as %s: %d, want %d: %s", tt.method, tt.target, tt.who, rec.Code, tt.want, rec.Body)
		}
	}
	// The same 404 for a project that does not exist and one the caller
	// may not see: nothing tells them apart.
	a := w.do("GET", "/api/v1/projects/own/quota", "", w.principal("outsider").auth)
	b := w.do("GET", "/api/v1/projects/nothere/quota", "", w.principal("outsider").auth)
	if a.Code != 404 || b.Code != 404 || strings.ReplaceAll(a.Body.String(), "own", "X") != strings.ReplaceAll(b.Body.String(), "nothere", "X") {
		t.Errorf("invisible %d %s vs absent %d %s", a.Code, a.Body, b.Code, b.Body)
	}
}
