package api_test

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The Harbor-compatible routes in a role matrix of their own: every
// /api/v2.0 route × the world's principals × own, foreign and public
// projects, expectations computed as for /api/v1 (matrixCase's want, from
// the hand-written tables), with the projects named by id where Harbor
// takes ids and every project holding a repository, so that the content
// endpoints have something to show, change and delete.

const v2 = "/api/v2.0"

// isHarborRoute reports whether route is one of /api/v2.0.
func isHarborRoute(route string) bool {
	return strings.Contains(route, " "+api.HarborPrefix)
}

// appRepo is the repository every project of the Harbor matrix holds:
// with a slash in its name, so that every request double-encodes it.
const (
	appRel     = "team/app"
	appEncoded = "team%252Fapp"
)

func appRepo(project string) string { return project + "/" + appRel }

// pushImage stores an image manifest in repo, tagged tag, as a push
// would (its blobs are linked; the state checks links, not files), and
// returns its digest. seed makes the content, and so the digest, unique.
func (w *world) pushImage(repo, tag, seed string) oci.Digest {
	w.t.Helper()
	return w.pushManifest(repo, tag, seed, "")
}

// pushManifest is pushImage for a manifest that may name a subject.
func (w *world) pushManifest(repo, tag, seed string, subject oci.Digest) oci.Digest {
	w.t.Helper()
	ctx := w.ctx()
	config := []byte(`{"architecture":"amd64","os":"linux","seed":"` + seed + `"}`)
	layer := []byte("layer of " + seed)
	cd, ld := oci.DigestOf(config), oci.DigestOf(layer)
	w.must(w.node.LinkBlob(ctx, repo, cd, int64(len(config))))
	w.must(w.node.LinkBlob(ctx, repo, ld, int64(len(layer))))
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}]`,
		oci.MediaTypeImageManifest, cd, len(config), ld, len(layer))
	if subject != "" {
		m += fmt.Sprintf(`,"subject":{"mediaType":%q,"digest":%q,"size":1}`, oci.MediaTypeImageManifest, subject)
	}
	payload := []byte(m + "}")
	parsed, err := oci.ParseManifest("", payload)
	if err != nil {
		w.t.Fatal(err)
	}
	rec := oci.NewRecord(repo, oci.DigestOf(payload), int64(len(payload)), parsed, time.Now().UnixNano())
	w.must(w.node.PutManifest(ctx, rec, payload, tag, oci.TagVersion{}))
	return rec.Digest
}

// ensureApp makes project's app repository hold its image, tagged v1
// and extra.
func (w *world) ensureApp(project string) oci.Digest {
	w.t.Helper()
	repo := appRepo(project)
	d, err := w.node.Tag(w.ctx(), repo, "v1")
	if errors.Is(err, oci.ErrNotFound) {
		d = w.pushImage(repo, "v1", project)
	} else if err != nil {
		w.t.Fatal(err)
	}
	if got, err := w.node.Tag(w.ctx(), repo, "extra"); err != nil || got != d {
		rec, payload, err := w.node.Manifest(w.ctx(), repo, d)
		w.must(err)
		w.must(w.node.PutManifest(w.ctx(), rec, payload, "extra", oci.TagVersion{}))
	}
	return d
}

// clearContent deletes every artifact of project, so that it may be
// deleted.
func (w *world) clearContent(project string) {
	w.t.Helper()
	ctx := w.ctx()
	repos, err := w.node.ProjectRepositories(ctx, project, "", 1000)
	w.must(err)
	for _, repo := range repos {
		arts, err := w.node.Artifacts(ctx, repo)
		if errors.Is(err, oci.ErrNotFound) {
			continue
		}
		w.must(err)
		for _, a := range arts {
			if err := w.node.DeleteManifest(ctx, repo, a.Digest); err != nil && !errors.Is(err, oci.ErrNotFound) {
				w.t.Fatal(err)
			}
		}
	}
}

func (w *world) projectID(project string) uint64 {
	w.t.Helper()
	p, err := w.node.Project(w.ctx(), project)
	w.must(err)
	return p.ID
}

func (w *world) userID(name string) uint64 {
	w.t.Helper()
	u, err := w.node.User(w.ctx(), name)
	w.must(err)
	return u.ID
}

func (w *world) robotID(name string) uint64 {
	w.t.Helper()
	rb, err := w.node.Robot(w.ctx(), name)
	w.must(err)
	return rb.ID
}

// harborTarget fills a /api/v2.0 route's wildcards for project.
func harborTarget(w *world, route, project string) string {
	_, p, _ := strings.Cut(route, " ")
	return strings.NewReplacer(
		"{project_name_or_id}", strconv.FormatUint(w.projectID(project), 10),
		"{project_name}", project,
		"{repository_name}", appEncoded,
		"{reference}", "v1",
		"{tag_name}", "extra",
		"{id}", strconv.FormatUint(w.projectID(project), 10),
	).Replace(p)
}

func harborCases() []matrixCase {
	in := func(route string, res policy.Resource, act policy.Action, ok int, body string) matrixCase {
		return matrixCase{route: route, need: needProject, res: res, act: act, ok: ok,
			build: func(w *world, project string, _ int) (string, string) {
				w.ensureApp(project)
				return harborTarget(w, route, project), body
			}}
	}
	sys := func(route string, n need, ok int, body string) matrixCase {
		return matrixCase{route: route, need: n, ok: ok,
			build: func(w *world, project string, _ int) (string, string) { return harborTarget(w, route, project), body }}
	}
	member := func(route string, act policy.Action, body string) matrixCase {
		return matrixCase{route: route, need: needProject, res: policy.ResMember, act: act, ok: 200,
			build: func(w *world, project string, _ int) (string, string) {
				w.ensureVictim(project, true)
				return strings.Replace(harborTarget(w, route, project), "{mid}", strconv.FormatUint(w.userID("victim"), 10), 1), body
			}}
	}
	robot := func(route string, act policy.Action, body string) matrixCase {
		return matrixCase{route: route, need: needProject, res: policy.ResRobot, act: act, ok: 200, usersOnly: true,
			build: func(w *world, project string, _ int) (string, string) {
				id := w.robotID(w.ensureRobot(project, "tmp"))
				return strings.Replace(harborTarget(w, route, project), "{robot_id}", strconv.FormatUint(id, 10), 1), body
			}}
	}
	sysRobot := func(route string, body string) matrixCase {
		return matrixCase{route: route, need: needAdmin, ok: 200,
			build: func(w *world, _ string, _ int) (string, string) {
				id := w.robotID(w.ensureRobot("", "sys"))
				return strings.Replace(v2+"/robots/{robot_id}", "{robot_id}", strconv.FormatUint(id, 10), 1), body
			}}
	}
	const (
		repo = v2 + "/projects/{project_name}/repositories/{repository_name}"
		art  = repo + "/artifacts/{reference}"
	)
	return []matrixCase{
		sys("GET "+v2+"/systeminfo", needNothing, 200, ""),
		sys("GET "+v2+"/health", needNothing, 200, ""),
		sys("GET "+v2+"/users/current", needAuthenticated, 200, ""),

		sys("GET "+v2+"/projects", needNothing, 200, ""),
		{route: "HEAD " + v2 + "/projects", need: needVisible, ok: 200,
			build: func(_ *world, project string, _ int) (string, string) {
				return v2 + "/projects?project_name=" + project, ""
			}},
		{route: "POST " + v2 + "/projects", need: needUser, ok: 201,
			build: func(_ *world, _ string, n int) (string, string) {
				return v2 + "/projects", fmt.Sprintf(`{"project_name":"h%d","metadata":{"public":"false"}}`, n)
			}},
		in("GET "+v2+"/projects/{project_name_or_id}", policy.ResProject, policy.ActRead, 200, ""),
		{route: "PUT " + v2 + "/projects/{project_name_or_id}", need: needProject, res: policy.ResProject, act: policy.ActUpdate, ok: 200,
			build: func(w *world, project string, _ int) (string, string) {
				return harborTarget(w, "PUT "+v2+"/projects/{project_name_or_id}", project),
					fmt.Sprintf(`{"metadata":{"public":"%t"}}`, project == publicProject)
			}},
		{route: "DELETE " + v2 + "/projects/{project_name_or_id}", need: needProject, res: policy.ResProject, act: policy.ActDelete, ok: 200,
			build: func(w *world, project string, _ int) (string, string) {
				w.clearContent(project)
				return harborTarget(w, "DELETE "+v2+"/projects/{project_name_or_id}", project), ""
			}},
		in("GET "+v2+"/projects/{project_name_or_id}/summary", policy.ResProject, policy.ActRead, 200, ""),

		in("GET "+v2+"/projects/{project_name_or_id}/members", policy.ResMember, policy.ActList, 200, ""),
		{route: "POST " + v2 + "/projects/{project_name_or_id}/members", need: needProject, res: policy.ResMember, act: policy.ActCreate, ok: 201,
			build: func(w *world, project string, _ int) (string, string) {
				w.ensureVictim(project, false)
				return harborTarget(w, "POST "+v2+"/projects/{project_name_or_id}/members", project),
					`{"role_id":3,"member_user":{"username":"victim"}}`
			}},
		member("GET "+v2+"/projects/{project_name_or_id}/members/{mid}", policy.ActRead, ""),
		member("PUT "+v2+"/projects/{project_name_or_id}/members/{mid}", policy.ActUpdate, `{"role_id":2}`),
		member("DELETE "+v2+"/projects/{project_name_or_id}/members/{mid}", policy.ActDelete, ""),

		in("GET "+v2+"/projects/{project_name}/repositories", policy.ResRepository, policy.ActList, 200, ""),
		in("GET "+repo, policy.ResRepository, policy.ActRead, 200, ""),
		in("DELETE "+repo, policy.ResRepository, policy.ActDelete, 200, ""),
		in("GET "+repo+"/artifacts", policy.ResArtifact, policy.ActList, 200, ""),
		in("GET "+art, policy.ResArtifact, policy.ActRead, 200, ""),
		in("DELETE "+art, policy.ResArtifact, policy.ActDelete, 200, ""),
		in("GET "+art+"/tags", policy.ResTag, policy.ActList, 200, ""),
		{route: "POST " + art + "/tags", need: needProject, res: policy.ResTag, act: policy.ActCreate, ok: 201,
			also: []policy.Access{{Resource: policy.ResRepository, Action: policy.ActPush}},
			build: func(w *world, project string, n int) (string, string) {
				w.ensureApp(project)
				return harborTarget(w, "POST "+art+"/tags", project), fmt.Sprintf(`{"name":"t%d"}`, n)
			}},
		in("DELETE "+art+"/tags/{tag_name}", policy.ResTag, policy.ActDelete, 200, ""),

		sys("GET "+v2+"/robots", needAdmin, 200, ""),
		{route: "GET " + v2 + "/robots", need: needProject, res: policy.ResRobot, act: policy.ActList, ok: 200,
			build: func(w *world, project string, _ int) (string, string) {
				return fmt.Sprintf("%s/robots?q=Level=project,ProjectID=%d", v2, w.projectID(project)), ""
			}},
		{route: "POST " + v2 + "/robots", need: needProject, res: policy.ResRobot, act: policy.ActCreate, ok: 201, usersOnly: true,
			build: func(_ *world, project string, n int) (string, string) {
				return v2 + "/robots", fmt.Sprintf(`{"name":"r%d","level":"project","duration":-1,"permissions":[{"kind":"project","namespace":%q,"access":[{"resource":"repository","action":"pull"}]}]}`, n, project)
			}},
		{route: "POST " + v2 + "/robots", need: needAdmin, ok: 201,
			build: func(_ *world, _ string, n int) (string, string) {
				return v2 + "/robots", fmt.Sprintf(`{"name":"s%d","level":"system","duration":30,"permissions":[{"kind":"project","namespace":"pub","access":[{"resource":"repository","action":"pull"}]}]}`, n)
			}},
		robot("GET "+v2+"/robots/{robot_id}", policy.ActRead, ""),
		robot("PUT "+v2+"/robots/{robot_id}", policy.ActUpdate, `{"description":"changed"}`),
		robot("PATCH "+v2+"/robots/{robot_id}", policy.ActUpdate, `{}`),
		robot("DELETE "+v2+"/robots/{robot_id}", policy.ActDelete, ""),
		sysRobot("GET "+v2+"/robots/{robot_id}", ""),
		sysRobot("PUT "+v2+"/robots/{robot_id}", `{"description":"changed","disable":false}`),
		sysRobot("PATCH "+v2+"/robots/{robot_id}", ""),
		sysRobot("DELETE "+v2+"/robots/{robot_id}", ""),

		sys("GET "+v2+"/quotas", needAdmin, 200, ""),
		{route: "GET " + v2 + "/quotas", need: needProject, res: policy.ResQuota, act: policy.ActRead, ok: 200,
			build: func(w *world, project string, _ int) (string, string) {
				return fmt.Sprintf("%s/quotas?reference=project&reference_id=%d", v2, w.projectID(project)), ""
			}},
		in("GET "+v2+"/quotas/{id}", policy.ResQuota, policy.ActRead, 200, ""),
		{route: "PUT " + v2 + "/quotas/{id}", need: needAdminInProject, ok: 200,
			build: func(w *world, project string, _ int) (string, string) {
				return harborTarget(w, "PUT "+v2+"/quotas/{id}", project), `{"hard":{"storage":-1}}`
			}},
	}
}

func TestHarborRoleMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the role matrix takes a while under the race detector")
	}
	w := newWorld(t)
	harborSpotChecks(t, w)
	cases := harborCases()
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.route] = true
	}
	for _, route := range api.Routes(w.h) {
		if isHarborRoute(route) && !covered[route] {
			t.Errorf("route %s is not in the Harbor role matrix", route)
		}
	}

	runMatrix(t, w, cases, readDocument(t, "harbor.json"))
}

// harborCode is Harbor's error code of status.
func harborCode(status int) string {
	return map[int]string{400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
		405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 412: "PRECONDITION"}[status]
}

// harborSpotChecks pins answers by hand, and checks that nothing tells a
// project the caller may not see from one that does not exist, whether
// named by id or by name.
func harborSpotChecks(t *testing.T, w *world) {
	t.Helper()
	own, foreign := w.projectID(ownProject), w.projectID(foreignProject)
	byName := func(r *http.Request) { r.Header.Set("X-Is-Resource-Name", "true") }
	as := func(label string, extra ...func(*http.Request)) func(*http.Request) {
		return func(r *http.Request) {
			w.principal(label).auth(r)
			for _, e := range extra {
				e(r)
			}
		}
	}
	w.ensureApp(ownProject)
	for _, tt := range []struct {
		who, method, target string
		auth                func(*http.Request)
		want                int
	}{
		{"guest", "GET", fmt.Sprintf("%s/projects/%d/members", v2, own), nil, 200},
		{"lguest", "GET", fmt.Sprintf("%s/projects/%d/members", v2, own), nil, 403},
		{"outsider", "GET", fmt.Sprintf("%s/projects/%d", v2, own), nil, 404},
		{"outsider", "GET", fmt.Sprintf("%s/projects/%d", v2, foreign), nil, 200},
		{"outsider", "GET", v2 + "/projects/own", as("outsider", byName), 404},
		{"padmin", "GET", v2 + "/projects/own", as("padmin", byName), 200},
		{"padmin", "GET", v2 + "/projects/own/summary", as("padmin", byName), 200},
		{"dev", "DELETE", v2 + "/projects/own/repositories/" + appEncoded, nil, 403},
		{"dev", "POST", v2 + "/projects/own/repositories/" + appEncoded + "/artifacts/v1/tags", nil, 400}, // allowed; the empty body is refused
		{"guest", "POST", v2 + "/projects/own/repositories/" + appEncoded + "/artifacts/v1/tags", nil, 403},
		{"anonymous", "GET", v2 + "/projects/pub/repositories", nil, 200},
		{"anonymous", "GET", v2 + "/projects/own/repositories", nil, 404},
		{"anonymous", "GET", fmt.Sprintf("%s/projects/%d/members", v2, own), nil, 401},
		{"anonymous", "GET", v2 + "/projects/999999/members", nil, 401},
		{"anonymous", "GET", v2 + "/robots/999999", nil, 401},
		{"robot$own+limited", "GET", fmt.Sprintf("%s/quotas/%d", v2, own), nil, 200},
		{"robot$own+limited", "GET", v2 + "/projects/own/repositories", nil, 403},
		{"robot$foreign+ci", "GET", v2 + "/projects/own/repositories", nil, 404},
		{"padmin", "PUT", fmt.Sprintf("%s/quotas/%d", v2, own), nil, 403},
		{"padmin", "GET", v2 + "/robots", nil, 403},
	} {
		auth := tt.auth
		if auth == nil {
			auth = w.principal(tt.who).auth
		}
		if rec := w.do(tt.method, tt.target, "", auth); rec.Code != tt.want {
			t.Errorf("%s %s as %s: %d, want %d: %s", tt.method, tt.target, tt.who, rec.Code, tt.want, rec.Body)
		}
	}

	// The same 404 for a project id nobody has and one the caller may
	// not see; for a name too; and for robots by id.
	outsider := w.principal("outsider").auth
	pairs := []struct{ invisible, absent, invisibleKey, absentKey string }{
		{fmt.Sprintf("%s/projects/%d/members", v2, own), v2 + "/projects/999999/members", strconv.FormatUint(own, 10), "999999"},
		{fmt.Sprintf("%s/quotas/%d", v2, own), v2 + "/quotas/999999", strconv.FormatUint(own, 10), "999999"},
		{v2 + "/projects/own/repositories/" + appEncoded + "/artifacts", v2 + "/projects/nothere/repositories/" + appEncoded + "/artifacts", "own", "nothere"},
		{fmt.Sprintf("%s/robots/%d", v2, w.robotID(w.ensureRobot(ownProject, "tmp"))), v2 + "/robots/999999",
			strconv.FormatUint(w.robotID(w.ensureRobot(ownProject, "tmp")), 10), "999999"},
	}
	for _, p := range pairs {
		a, b := w.do("GET", p.invisible, "", outsider), w.do("GET", p.absent, "", outsider)
		if a.Code != 404 || b.Code != 404 ||
			strings.ReplaceAll(a.Body.String(), p.invisibleKey, "X") != strings.ReplaceAll(b.Body.String(), p.absentKey, "X") {
			t.Errorf("invisible %s: %d %s; absent %s: %d %s", p.invisible, a.Code, a.Body, p.absent, b.Code, b.Body)
		}
		if strings.Contains(a.Body.String(), ownProject+"/") || strings.Contains(a.Body.String(), `"own`) {
			t.Errorf("%s tells the project's name: %s", p.invisible, a.Body)
		}
	}
}
