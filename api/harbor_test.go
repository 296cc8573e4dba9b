package api_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Shape tests of the Harbor-compatible subset: answers are decoded into
// structs that mirror Harbor's swagger models as its clients read them
// (goharbor/go-client, Harbor's terraform provider: the fields named
// here), and requests are what those clients send.

// Harbor's models, the fields clients read. Times are date-times.
type (
	hProject struct {
		ProjectID         int64     `json:"project_id"`
		OwnerID           int64     `json:"owner_id"`
		Name              string    `json:"name"`
		OwnerName         string    `json:"owner_name"`
		RepoCount         int64     `json:"repo_count"`
		CurrentUserRoleID int64     `json:"current_user_role_id"`
		CreationTime      time.Time `json:"creation_time"`
		Metadata          struct {
			Public string `json:"public"`
		} `json:"metadata"`
	}
	hSummary struct {
		RepoCount         int64 `json:"repo_count"`
		ProjectAdminCount int64 `json:"project_admin_count"`
		Quota             *struct {
			Hard map[string]int64 `json:"hard"`
			Used map[string]int64 `json:"used"`
		} `json:"quota"`
	}
	hRepository struct {
		ID            int64     `json:"id"`
		ProjectID     int64     `json:"project_id"`
		Name          string    `json:"name"`
		ArtifactCount int64     `json:"artifact_count"`
		UpdateTime    time.Time `json:"update_time"`
	}
	hTag struct {
		Name      string    `json:"name"`
		PushTime  time.Time `json:"push_time"`
		Immutable bool      `json:"immutable"`
		Signed    bool      `json:"signed"`
	}
	hArtifact struct {
		ID                int64     `json:"id"`
		Type              string    `json:"type"`
		Digest            string    `json:"digest"`
		MediaType         string    `json:"media_type"`
		ManifestMediaType string    `json:"manifest_media_type"`
		Size              int64     `json:"size"`
		PushTime          time.Time `json:"push_time"`
		PullTime          time.Time `json:"pull_time"`
		Tags              []hTag    `json:"tags"`
		References        []struct {
			ChildDigest string `json:"child_digest"`
		} `json:"references"`
		Accessories []struct {
			Digest string `json:"digest"`
			Type   string `json:"type"`
		} `json:"accessories"`
	}
	hMember struct {
		ID         int64  `json:"id"`
		ProjectID  int64  `json:"project_id"`
		EntityName string `json:"entity_name"`
		EntityID   int64  `json:"entity_id"`
		EntityType string `json:"entity_type"`
		RoleID     int64  `json:"role_id"`
		RoleName   string `json:"role_name"`
	}
	hAccess struct {
		Resource string `json:"resource"`
		Action   string `json:"action"`
	}
	hRobot struct {
		ID          int64  `json:"id"`
		Name        string `json:"name"`
		Level       string `json:"level"`
		Duration    int64  `json:"duration"`
		Disable     bool   `json:"disable"`
		ExpiresAt   int64  `json:"expires_at"`
		Description string `json:"description"`
		Permissions []struct {
			Kind      string    `json:"kind"`
			Namespace string    `json:"namespace"`
			Access    []hAccess `json:"access"`
		} `json:"permissions"`
	}
	hRobotCreated struct {
		ID        int64  `json:"id"`
		Name      string `json:"name"`
		Secret    string `json:"secret"`
		ExpiresAt int64  `json:"expires_at"`
	}
	hQuota struct {
		ID  int64 `json:"id"`
		Ref struct {
			ID   int64  `json:"id"`
			Name string `json:"name"`
		} `json:"ref"`
		Hard map[string]int64 `json:"hard"`
		Used map[string]int64 `json:"used"`
	}
	hErrors struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
)

func decodeHarborErrors(t *testing.T, rec *httptest.ResponseRecorder) hErrors {
	t.Helper()
	e := decodeJSON[hErrors](t, rec)
	if len(e.Errors) != 1 || e.Errors[0].Code == "" || e.Errors[0].Message == "" {
		t.Fatalf("not Harbor's error shape: %d %s", rec.Code, rec.Body)
	}
	return e
}

// hreq sends a request as label with extra headers (name, value, ...)
// and checks the status.
func (w *world) hreq(t *testing.T, label, method, target, body string, want int, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	pr := w.principal(label)
	rec := w.do(method, target, body, func(r *http.Request) {
		pr.auth(r)
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Set(headers[i], headers[i+1])
		}
	})
	if rec.Code != want {
		t.Fatalf("%s %s %s as %s: %d, want %d: %s", method, target, clip(body), label, rec.Code, want, rec.Body)
	}
	if want >= 400 && method != http.MethodHead {
		if e := decodeHarborErrors(t, rec); e.Errors[0].Code != harborCode(want) {
			t.Fatalf("%s %s: code %s for %d", method, target, e.Errors[0].Code, want)
		}
	}
	return rec
}

// wantError checks a Harbor error answer's code.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, code string) {
	t.Helper()
	if e := decodeHarborErrors(t, rec); e.Errors[0].Code != code {
		t.Errorf("code %s, want %s: %s", e.Errors[0].Code, code, rec.Body)
	}
}

func TestHarborAPI(t *testing.T) {
	w := newWorld(t)
	t.Run("system", func(t *testing.T) { testHarborSystem(t, w) })
	t.Run("projects", func(t *testing.T) { testHarborProjects(t, w) })
	t.Run("paging", func(t *testing.T) { testHarborPaging(t, w) })
	t.Run("content", func(t *testing.T) { testHarborContent(t, w) })
	t.Run("members", func(t *testing.T) { testHarborMembers(t, w) })
	t.Run("robots", func(t *testing.T) { testHarborRobots(t, w) })
	t.Run("quotas", func(t *testing.T) { testHarborQuotas(t, w) })
}

func testHarborSystem(t *testing.T, w *world) {
	info := decodeJSON[map[string]any](t, w.hreq(t, "anonymous", "GET", v2+"/systeminfo", "", 200))
	if v, _ := info["harbor_version"].(string); !strings.HasPrefix(v, "v2.0.0-berth.") || info["auth_mode"] != "db_auth" ||
		info["project_creation_restriction"] != api.ProjectCreationEveryone || info["product"] != "berth" {
		t.Errorf("systeminfo %v", info)
	}
	if h := decodeJSON[api.HarborHealth](t, w.hreq(t, "anonymous", "GET", v2+"/health", "", 200)); h.Status != "healthy" {
		t.Errorf("health %+v", h)
	}
	u := decodeJSON[struct {
		UserID       int64  `json:"user_id"`
		Username     string `json:"username"`
		SysadminFlag bool   `json:"sysadmin_flag"`
	}](t, w.hreq(t, "dev", "GET", v2+"/users/current", "", 200))
	if u.Username != "dev" || u.UserID != int64(w.userID("dev")) || u.SysadminFlag {
		t.Errorf("users/current %+v", u)
	}
	rec := w.hreq(t, "anonymous", "GET", v2+"/users/current", "", 401)
	if rec.Header().Get("WWW-Authenticate") == "" {
		t.Error("401 without a challenge")
	}
	// Bad credentials, in Harbor's shape with berth's challenge.
	rec = w.do("GET", v2+"/projects", "", basic("dev", "wrong"))
	if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("bad credentials: %d %v", rec.Code, rec.Header())
	}
	wantError(t, rec, "UNAUTHORIZED")
	// A bearer token's subject is decided from its current state: dev is
	// no admin.
	bearer := w.bearer(t, "dev")
	if rec := w.do("GET", v2+"/users/current", "", bearer); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"username":"dev"`) {
		t.Errorf("bearer users/current: %d %s", rec.Code, rec.Body)
	}
	if rec := w.do("GET", v2+"/quotas", "", bearer); rec.Code != 403 {
		t.Errorf("bearer of a non-admin: %d %s", rec.Code, rec.Body)
	}
	// Errors of the router in Harbor's shape too.
	wantError(t, w.hreq(t, "anonymous", "GET", v2+"/nothing/here", "", 404), "NOT_FOUND")
	rec = w.hreq(t, "admin", "DELETE", v2+"/systeminfo", "", 405)
	if rec.Header().Get("Allow") == "" {
		t.Error("405 without Allow")
	}
	// The /api/v1 answers keep their own shape.
	if rec := w.do("GET", "/api/v1/nothing", "", nil); rec.Code != 404 || !strings.Contains(rec.Body.String(), `"error"`) {
		t.Errorf("v1 404: %d %s", rec.Code, rec.Body)
	}
}

func testHarborProjects(t *testing.T, w *world) {
	rec := w.hreq(t, "dev", "POST", v2+"/projects", `{"project_name":"alpha","metadata":{"public":"true"}}`, 201)
	loc := rec.Header().Get("Location")
	id, err := strconv.ParseInt(strings.TrimPrefix(loc, v2+"/projects/"), 10, 64)
	if err != nil {
		t.Fatalf("Location %q", loc)
	}
	p := decodeJSON[hProject](t, w.hreq(t, "dev", "GET", loc, "", 200))
	if p.ProjectID != id || p.Name != "alpha" || p.Metadata.Public != "true" || p.OwnerName != "dev" ||
		p.OwnerID != int64(w.userID("dev")) || p.CurrentUserRoleID != 1 || p.CreationTime.IsZero() {
		t.Errorf("project %+v", p)
	}
	byName := decodeJSON[hProject](t, w.hreq(t, "dev", "GET", v2+"/projects/alpha", "", 200, "X-Is-Resource-Name", "true"))
	if byName.ProjectID != id {
		t.Errorf("by name %+v", byName)
	}
	if loc := w.hreq(t, "dev", "POST", v2+"/projects", `{"project_name":"alpha2"}`, 201,
		"X-Resource-Name-In-Location", "true").Header().Get("Location"); loc != v2+"/projects/alpha2" {
		t.Errorf("Location by name %q", loc)
	}
	w.hreq(t, "dev", "HEAD", v2+"/projects?project_name=alpha", "", 200)
	w.hreq(t, "dev", "HEAD", v2+"/projects?project_name=nothere", "", 404)
	w.hreq(t, "dev", "HEAD", v2+"/projects?project_name=own", "", 200)
	w.hreq(t, "outsider", "HEAD", v2+"/projects?project_name=own", "", 404)

	w.hreq(t, "dev", "PUT", loc, `{"metadata":{"public":"false"}}`, 200)
	if p := decodeJSON[hProject](t, w.hreq(t, "dev", "GET", loc, "", 200)); p.Metadata.Public != "false" {
		t.Errorf("after PUT: %+v", p)
	}
	w.hreq(t, "dev", "PUT", loc, `{"project_name":"beta"}`, 400)
	w.hreq(t, "dev", "PUT", loc, `{"public":true}`, 200) // Harbor's deprecated flag
	if p := decodeJSON[hProject](t, w.hreq(t, "dev", "GET", loc, "", 200)); p.Metadata.Public != "true" {
		t.Errorf("after PUT public: %+v", p)
	}

	// The body Harbor's terraform provider sends.
	tf := `{"project_name":"tf","cve_allowlist":{"items":null},"storage_limit":-1,"metadata":{"enable_content_trust":"false",` +
		`"auto_scan":"true","severity":"low","reuse_sys_cve_allowlist":"true","public":"false","prevent_vul":"false"}}`
	w.hreq(t, "dev", "POST", v2+"/projects", tf, 201)
	for _, bad := range []string{
		`{"project_name":"x1","metadata":{"enable_content_trust":"true"}}`,
		`{"project_name":"x2","metadata":{"prevent_vul":"true"}}`,
		`{"project_name":"x3","registry_id":3}`,
		`{"project_name":"x4","metadata":{"public":"maybe"}}`,
		`{"project_name":"x5","owner_id":1}`,
		`{"project_name":"Bad Name"}`,
	} {
		w.hreq(t, "dev", "POST", v2+"/projects", bad, 400)
	}
	// Limits are an administrator's.
	w.hreq(t, "dev", "POST", v2+"/projects", `{"project_name":"x6","storage_limit":1000}`, 403)
	loc = w.hreq(t, "admin", "POST", v2+"/projects", `{"project_name":"limited","storage_limit":1000}`, 201).Header().Get("Location")
	s := decodeJSON[hSummary](t, w.hreq(t, "admin", "GET", loc+"/summary", "", 200))
	if s.Quota == nil || s.Quota.Hard["storage"] != 1000 || s.Quota.Used["storage"] != 0 || s.ProjectAdminCount != 1 {
		t.Errorf("summary %+v", s)
	}
	w.hreq(t, "admin", "POST", v2+"/projects", `{"project_name":"alpha"}`, 409)
	// Robots and anonymous requests create nothing.
	w.hreq(t, "robot$foreign+ci", "POST", v2+"/projects", `{"project_name":"x7"}`, 403)
	w.hreq(t, "anonymous", "POST", v2+"/projects", `{"project_name":"x8"}`, 401)

	// A number is an id unless X-Is-Resource-Name says it is a name.
	w.hreq(t, "admin", "POST", v2+"/projects", `{"project_name":"4242"}`, 201)
	w.hreq(t, "admin", "GET", v2+"/projects/4242", "", 404)
	w.hreq(t, "admin", "GET", v2+"/projects/4242", "", 200, "X-Is-Resource-Name", "true")

	// What each caller may read of a summary.
	w.ensureApp(ownProject)
	s = decodeJSON[hSummary](t, w.hreq(t, "padmin", "GET", v2+"/projects/own/summary", "", 200, "X-Is-Resource-Name", "true"))
	if s.RepoCount != 1 || s.ProjectAdminCount != 1 || s.Quota == nil {
		t.Errorf("padmin's summary %+v", s)
	}
	s = decodeJSON[hSummary](t, w.hreq(t, "lguest", "GET", v2+"/projects/own/summary", "", 200, "X-Is-Resource-Name", "true"))
	if s.ProjectAdminCount != 0 || s.Quota == nil || s.RepoCount != 1 {
		t.Errorf("limited guest's summary (no members) %+v", s)
	}
	s = decodeJSON[hSummary](t, w.hreq(t, "anonymous", "GET", v2+"/projects/pub/summary", "", 200, "X-Is-Resource-Name", "true"))
	if s.ProjectAdminCount != 0 || s.Quota != nil {
		t.Errorf("anonymous summary %+v", s)
	}

	// A project with repositories is not deleted (412, as Harbor).
	wantError(t, w.hreq(t, "padmin", "DELETE", v2+"/projects/own", "", 412, "X-Is-Resource-Name", "true"), "PRECONDITION")
	w.hreq(t, "dev", "DELETE", v2+"/projects/alpha", "", 200, "X-Is-Resource-Name", "true")
	w.hreq(t, "dev", "GET", v2+"/projects/alpha", "", 404, "X-Is-Resource-Name", "true")
}

func testHarborPaging(t *testing.T, w *world) {
	for i := range 5 {
		w.hreq(t, "admin", "POST", v2+"/projects", fmt.Sprintf(`{"project_name":"page%d"}`, i), 201)
	}
	rec := w.hreq(t, "admin", "GET", v2+"/projects?name=page&page=2&page_size=2", "", 200)
	ps := decodeJSON[[]hProject](t, rec)
	if len(ps) != 2 || ps[0].Name != "page2" || ps[1].Name != "page3" {
		t.Errorf("page 2: %+v", ps)
	}
	if rec.Header().Get("X-Total-Count") != "5" {
		t.Errorf("X-Total-Count %q", rec.Header().Get("X-Total-Count"))
	}
	link := rec.Header().Get("Link")
	for _, want := range []string{`</api/v2.0/projects?name=page&page=1&page_size=2>; rel="prev"`, `</api/v2.0/projects?name=page&page=3&page_size=2>; rel="next"`} {
		if !strings.Contains(link, want) {
			t.Errorf("Link %q: want %s", link, want)
		}
	}
	rec = w.hreq(t, "admin", "GET", v2+"/projects?name=page&page=3&page_size=2", "", 200)
	if ps := decodeJSON[[]hProject](t, rec); len(ps) != 1 || strings.Contains(rec.Header().Get("Link"), "next") {
		t.Errorf("last page: %+v, Link %q", ps, rec.Header().Get("Link"))
	}
	if ps := decodeJSON[[]hProject](t, w.hreq(t, "admin", "GET", v2+"/projects?q=name%3D~age3", "", 200)); len(ps) != 1 || ps[0].Name != "page3" {
		t.Errorf("q fuzzy: %+v", ps)
	}
	if ps := decodeJSON[[]hProject](t, w.hreq(t, "admin", "GET", v2+"/projects?q=name%3Dpage", "", 200)); len(ps) != 0 {
		t.Errorf("q exact: %+v", ps)
	}
	if ps := decodeJSON[[]hProject](t, w.hreq(t, "anonymous", "GET", v2+"/projects?public=true", "", 200)); !slices.ContainsFunc(ps, func(p hProject) bool { return p.Name == publicProject }) ||
		slices.ContainsFunc(ps, func(p hProject) bool { return p.Metadata.Public != "true" }) {
		t.Errorf("public=true as anonymous: %+v", ps)
	}
	w.hreq(t, "admin", "GET", v2+"/projects?q=bogus%3D1", "", 400)
	w.hreq(t, "admin", "GET", v2+"/projects?q=name%3D%5Ba~b%5D", "", 400)
	w.hreq(t, "admin", "GET", v2+"/projects?page=0", "", 400)
	// Lists show only what the caller may see.
	for _, p := range decodeJSON[[]hProject](t, w.hreq(t, "outsider", "GET", v2+"/projects?page_size=100", "", 200)) {
		if p.Name == ownProject {
			t.Error("outsider lists own")
		}
	}
}

// pushIndex stores an index of children in repo, tagged tag.
func (w *world) pushIndex(repo, tag string, children ...oci.Digest) oci.Digest {
	w.t.Helper()
	var ms []string
	for _, c := range children {
		rec, _, err := w.node.Manifest(w.ctx(), repo, c)
		w.must(err)
		ms = append(ms, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"architecture":"amd64","os":"linux"}}`, rec.MediaType, c, rec.Size))
	}
	payload := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, oci.MediaTypeImageIndex, strings.Join(ms, ",")))
	parsed, err := oci.ParseManifest("", payload)
	if err != nil {
		w.t.Fatal(err)
	}
	rec := oci.NewRecord(repo, oci.DigestOf(payload), int64(len(payload)), parsed, time.Now().UnixNano())
	w.must(w.node.PutManifest(w.ctx(), rec, payload, tag, oci.TagVersion{}))
	return rec.Digest
}

func testHarborContent(t *testing.T, w *world) {
	ctx := w.ctx()
	repo := appRepo(ownProject)
	d1 := w.ensureApp(ownProject)
	d2 := w.pushImage(repo, "v2", "second")
	sig := w.pushImage(repo, policy.AccessoryTag(d1, ".sig"), "signature")
	sbom := w.pushManifest(repo, "", "sbom", d1)
	w.pushImage(ownProject+"/web", "latest", "web")
	const base = v2 + "/projects/own/repositories"

	rec := w.hreq(t, "guest", "GET", base, "", 200)
	repos := decodeJSON[[]hRepository](t, rec)
	if len(repos) != 2 || repos[0].Name != repo || repos[1].Name != ownProject+"/web" || rec.Header().Get("X-Total-Count") != "2" {
		t.Fatalf("repositories %+v", repos)
	}
	if repos[0].ArtifactCount != 2 || repos[0].ProjectID != int64(w.projectID(ownProject)) || repos[0].UpdateTime.IsZero() {
		t.Errorf("repository %+v (accessories are not counted)", repos[0])
	}
	if rs := decodeJSON[[]hRepository](t, w.hreq(t, "guest", "GET", base+"?q=name%3D~web", "", 200)); len(rs) != 1 {
		t.Errorf("q=name=~web: %+v", rs)
	}
	// The repository name: double-encoded slashes, as Harbor's clients
	// send them; single-encoded ones are taken too.
	for _, enc := range []string{appEncoded, "team%2Fapp"} {
		if r := decodeJSON[hRepository](t, w.hreq(t, "guest", "GET", base+"/"+enc, "", 200)); r.Name != repo {
			t.Errorf("%s: %+v", enc, r)
		}
	}
	w.hreq(t, "guest", "GET", base+"/team%252Fnothere", "", 404)
	w.hreq(t, "guest", "GET", base+"/Bad%252FName", "", 400)

	arts := base + "/" + appEncoded + "/artifacts"
	rec = w.hreq(t, "guest", "GET", arts, "", 200)
	list := decodeJSON[[]hArtifact](t, rec)
	if len(list) != 2 || list[0].Digest != string(d2) || list[1].Digest != string(d1) || rec.Header().Get("X-Total-Count") != "2" {
		t.Fatalf("artifacts (newest first, no accessories) %+v", list)
	}
	a := list[1]
	tagNames := func(a hArtifact) []string {
		var out []string
		for _, tg := range a.Tags {
			out = append(out, tg.Name)
		}
		return out
	}
	if a.Type != "IMAGE" || a.ManifestMediaType != oci.MediaTypeImageManifest || a.MediaType != "application/vnd.oci.image.config.v1+json" ||
		a.Size == 0 || a.PushTime.IsZero() || !a.PullTime.IsZero() || !slices.Equal(tagNames(a), []string{"extra", "v1"}) ||
		!a.Tags[0].Signed || a.Tags[0].Immutable || a.Tags[0].PushTime.IsZero() || a.ID == 0 {
		t.Errorf("artifact %+v", a)
	}
	if len(a.Accessories) != 0 {
		t.Errorf("accessories without with_accessory: %+v", a.Accessories)
	}
	list = decodeJSON[[]hArtifact](t, w.hreq(t, "guest", "GET", arts+"?with_accessory=true&with_tag=false", "", 200))
	accs := map[string]string{}
	for _, acc := range list[1].Accessories {
		accs[acc.Digest] = acc.Type
	}
	if len(list[1].Tags) != 0 || accs[string(sig)] != "signature.cosign" || accs[string(sbom)] != "subject.accessory" || len(accs) != 2 {
		t.Errorf("with_accessory, without tags: %+v", list[1])
	}
	rec = w.hreq(t, "guest", "GET", arts+"?page_size=1", "", 200)
	if l := decodeJSON[[]hArtifact](t, rec); len(l) != 1 || !strings.Contains(rec.Header().Get("Link"), `rel="next"`) {
		t.Errorf("page_size=1: %d, Link %q", len(l), rec.Header().Get("Link"))
	}
	for q, want := range map[string]int{"tags%3Dv2": 1, "tags%3D~v": 2, "tags%3Dnil": 0, "tags%3D*": 2, "digest%3D" + string(d1): 1} {
		if l := decodeJSON[[]hArtifact](t, w.hreq(t, "guest", "GET", arts+"?q="+q, "", 200)); len(l) != want {
			t.Errorf("q=%s: %d artifacts, want %d", q, len(l), want)
		}
	}
	// By tag and by digest; an accessory by its digest.
	for _, ref := range []string{"v1", string(d1)} {
		if got := decodeJSON[hArtifact](t, w.hreq(t, "guest", "GET", arts+"/"+ref, "", 200)); got.Digest != string(d1) {
			t.Errorf("artifact %s: %+v", ref, got)
		}
	}
	w.hreq(t, "guest", "GET", arts+"/"+string(sig), "", 200)
	w.hreq(t, "guest", "GET", arts+"/nothere", "", 404)
	w.hreq(t, "guest", "GET", arts+"/sha256:"+strings.Repeat("0", 64), "", 404)
	w.hreq(t, "guest", "GET", arts+"/sha256:zz", "", 400)
	tags := decodeJSON[[]hTag](t, w.hreq(t, "guest", "GET", arts+"/v1/tags", "", 200))
	if len(tags) != 2 || tags[0].Name != "extra" || tags[1].Name != "v1" {
		t.Errorf("tags %+v", tags)
	}

	// Tags: a new one points at the artifact, as a push; an existing one
	// is a conflict; immutability and signatures are not the caller's.
	w.hreq(t, "dev", "POST", arts+"/v1/tags", `{"name":"release","id":0,"immutable":false,"signed":false}`, 201)
	if got := decodeJSON[hArtifact](t, w.hreq(t, "dev", "GET", arts+"/release", "", 200)); got.Digest != string(d1) {
		t.Errorf("release → %s", got.Digest)
	}
	if evs, err := w.node.Audit(ctx, policy.AuditFilter{Project: ownProject, Target: repo + ":release", Limit: 5}); err != nil || len(evs) == 0 || evs[0].Actor != "dev" {
		t.Errorf("audit of the tag: %+v %v", evs, err)
	}
	wantError(t, w.hreq(t, "dev", "POST", arts+"/v1/tags", `{"name":"release"}`, 409), "CONFLICT")
	w.hreq(t, "dev", "POST", arts+"/v1/tags", `{"name":"v2"}`, 409)
	w.hreq(t, "dev", "POST", arts+"/v1/tags", `{"name":"bad tag"}`, 400)
	w.hreq(t, "dev", "POST", arts+"/v1/tags", `{"name":"x","immutable":true}`, 400)
	w.hreq(t, "dev", "POST", arts+"/nothere/tags", `{"name":"x"}`, 404)
	w.hreq(t, "maint", "DELETE", arts+"/v1/tags/release", "", 200)
	w.hreq(t, "maint", "DELETE", arts+"/v1/tags/v2", "", 404) // not on this artifact
	if d, err := w.node.Tag(ctx, repo, "v2"); err != nil || d != d2 {
		t.Errorf("v2 after a refused delete: %s %v", d, err)
	}

	// Immutability is the state's: 412 for a delete of an immutable tag,
	// of its artifact or of its repository.
	_, err := w.node.UpdateProject(ctx, policy.Project{Name: ownProject, Immutable: []policy.ImmutableRule{{Repos: "**", Tags: "v1"}}}, "immutable")
	w.must(err)
	if got := decodeJSON[hArtifact](t, w.hreq(t, "guest", "GET", arts+"/v1", "", 200)); !got.Tags[1].Immutable || got.Tags[0].Immutable {
		t.Errorf("immutable flags %+v", got.Tags)
	}
	wantError(t, w.hreq(t, "maint", "DELETE", arts+"/v1/tags/v1", "", 412), "PRECONDITION")
	w.hreq(t, "maint", "DELETE", arts+"/v1", "", 412)
	w.hreq(t, "maint", "DELETE", base+"/"+appEncoded, "", 412)
	w.restore() // drops the rule

	// An artifact goes with its tags and accessories.
	w.hreq(t, "maint", "DELETE", arts+"/v1", "", 200)
	left, err := w.node.Artifacts(ctx, repo)
	w.must(err)
	if len(left) != 1 || left[0].Digest != d2 {
		t.Errorf("after deleting v1: %+v", left)
	}
	w.hreq(t, "guest", "GET", arts+"/v1", "", 404)

	// An index is shown with its references, and deleted before them.
	a1, a2 := w.pushImage(ownProject+"/multi", "", "arm"), w.pushImage(ownProject+"/multi", "", "amd")
	idx := w.pushIndex(ownProject+"/multi", "latest", a1, a2)
	got := decodeJSON[hArtifact](t, w.hreq(t, "guest", "GET", base+"/multi/artifacts/latest", "", 200))
	if got.Digest != string(idx) || len(got.References) != 2 || got.References[0].ChildDigest != string(a1) || got.ManifestMediaType != oci.MediaTypeImageIndex {
		t.Errorf("index %+v", got)
	}
	w.hreq(t, "maint", "DELETE", base+"/multi/artifacts/"+string(a1), "", 409) // the index lists it
	w.hreq(t, "dev", "DELETE", base+"/multi", "", 403)
	w.hreq(t, "maint", "DELETE", base+"/multi", "", 200)
	w.hreq(t, "maint", "DELETE", base+"/"+appEncoded, "", 200)
	w.hreq(t, "guest", "GET", base+"/"+appEncoded, "", 404)
	w.hreq(t, "guest", "GET", base+"/multi/artifacts", "", 404)
}

func testHarborMembers(t *testing.T, w *world) {
	own := w.projectID(ownProject)
	base := fmt.Sprintf("%s/projects/%d/members", v2, own)
	victim := w.userID("victim")
	w.ensureVictim(ownProject, false)
	rec := w.hreq(t, "padmin", "POST", base, `{"role_id":2,"member_user":{"username":"victim"},"member_group":{}}`, 201)
	if loc := rec.Header().Get("Location"); loc != fmt.Sprintf("%s/%d", base, victim) {
		t.Errorf("Location %q", loc)
	}
	rec = w.hreq(t, "guest", "GET", base+"?entityname=vic", "", 200)
	ms := decodeJSON[[]hMember](t, rec)
	if len(ms) != 1 || rec.Header().Get("X-Total-Count") != "1" {
		t.Fatalf("members %+v", ms)
	}
	want := hMember{ID: int64(victim), ProjectID: int64(own), EntityName: "victim", EntityID: int64(victim), EntityType: "u", RoleID: 2, RoleName: "developer"}
	if ms[0] != want {
		t.Errorf("member %+v, want %+v", ms[0], want)
	}
	mid := fmt.Sprintf("%s/%d", base, victim)
	if m := decodeJSON[hMember](t, w.hreq(t, "guest", "GET", mid, "", 200)); m != want {
		t.Errorf("member by id %+v", m)
	}
	w.hreq(t, "padmin", "PUT", mid, `{"role_id":4}`, 200)
	if m := decodeJSON[hMember](t, w.hreq(t, "guest", "GET", mid, "", 200)); m.RoleID != 4 || m.RoleName != "maintainer" {
		t.Errorf("after PUT %+v", m)
	}
	w.hreq(t, "padmin", "PUT", mid, `{"role_id":9}`, 400)
	// The terraform provider sends the whole ProjectMember.
	w.hreq(t, "padmin", "PUT", mid, `{"role_id":3,"member_group":{},"member_user":{"username":"victim"}}`, 200)
	w.hreq(t, "padmin", "PUT", mid, `{"role_id":3,"member_user":{"username":"dev"}}`, 400)
	w.hreq(t, "padmin", "POST", base, `{"role_id":2,"member_user":{"username":"victim"}}`, 409)
	w.hreq(t, "padmin", "POST", base, `{"role_id":2,"member_group":{"group_name":"devs"}}`, 400)
	w.hreq(t, "padmin", "POST", base, `{"role_id":2,"member_user":{"username":"nobody"}}`, 404)
	w.hreq(t, "padmin", "POST", base, fmt.Sprintf(`{"role_id":5,"member_user":{"user_id":%d}}`, w.userID("victim2")), 201)
	w.hreq(t, "padmin", "POST", base, `{"role_id":2,"member_user":{"username":"victim2"},"sysadmin_flag":true}`, 400)
	w.hreq(t, "dev", "POST", base, `{"role_id":1,"member_user":{"username":"dev"}}`, 403) // no self-promotion
	w.hreq(t, "padmin", "DELETE", mid, "", 200)
	w.hreq(t, "guest", "GET", mid, "", 404)
	w.hreq(t, "padmin", "DELETE", fmt.Sprintf("%s/%d", base, w.userID("victim2")), "", 200)
}

func testHarborRobots(t *testing.T, w *world) {
	own := w.projectID(ownProject)
	body := `{"name":"deploy","level":"project","duration":-1,"description":"ci",` +
		`"permissions":[{"kind":"project","namespace":"own","access":[{"resource":"repository","action":"pull","effect":"allow"}]}]}`
	rec := w.hreq(t, "padmin", "POST", v2+"/robots", body, 201)
	created := decodeJSON[hRobotCreated](t, rec)
	if created.Name != "robot$own+deploy" || len(created.Secret) < 16 || created.ExpiresAt != -1 || created.ID == 0 ||
		rec.Header().Get("Location") != fmt.Sprintf("%s/robots/%d", v2, created.ID) {
		t.Fatalf("created %+v, Location %q", created, rec.Header().Get("Location"))
	}
	asRobot := func(secret string) func(*http.Request) { return basic(created.Name, secret) }
	if rec := w.do("GET", v2+"/users/current", "", asRobot(created.Secret)); rec.Code != 200 || !strings.Contains(rec.Body.String(), created.Name) {
		t.Errorf("the robot logs in: %d %s", rec.Code, rec.Body)
	}
	loc := fmt.Sprintf("%s/robots/%d", v2, created.ID)
	rec = w.hreq(t, "padmin", "GET", loc, "", 200)
	if strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("a robot's view shows a secret: %s", rec.Body)
	}
	rb := decodeJSON[hRobot](t, rec)
	if rb.Name != created.Name || rb.Level != "project" || rb.Duration != -1 || rb.ExpiresAt != -1 || len(rb.Permissions) != 1 ||
		rb.Permissions[0].Namespace != ownProject || rb.Permissions[0].Access[0] != (hAccess{"repository", "pull"}) {
		t.Errorf("robot %+v", rb)
	}
	rec = w.hreq(t, "padmin", "GET", fmt.Sprintf("%s/robots?q=Level%%3Dproject,ProjectID%%3D%d", v2, own), "", 200)
	if l := decodeJSON[[]hRobot](t, rec); !slices.ContainsFunc(l, func(r hRobot) bool { return r.ID == created.ID }) || rec.Header().Get("X-Total-Count") == "" {
		t.Errorf("project robots %+v", l)
	}
	w.hreq(t, "padmin", "GET", v2+"/robots?q=Level%3Dproject", "", 400)
	byName := fmt.Sprintf("%s/robots?q=Level%%3Dproject,ProjectID%%3D%d,name%%3Drobot%%24own%%2Bdeploy", v2, own)
	if l := decodeJSON[[]hRobot](t, w.hreq(t, "padmin", "GET", byName, "", 200)); len(l) != 1 || l[0].ID != created.ID {
		t.Errorf("robots by name %+v", l)
	}

	// A new secret: generated and answered, or chosen and not echoed.
	sec := decodeJSON[api.HarborRobotSec](t, w.hreq(t, "padmin", "PATCH", loc, "", 200))
	if sec.Secret == "" || sec.Secret == created.Secret {
		t.Fatalf("refreshed %+v", sec)
	}
	if rec := w.do("GET", v2+"/users/current", "", asRobot(created.Secret)); rec.Code != 401 {
		t.Errorf("old secret: %d", rec.Code)
	}
	if sec := decodeJSON[api.HarborRobotSec](t, w.hreq(t, "padmin", "PATCH", loc, `{"secret":"Chosen-Secret-0123"}`, 200)); sec.Secret != "" {
		t.Errorf("a chosen secret echoed: %+v", sec)
	}
	if rec := w.do("GET", v2+"/users/current", "", asRobot("Chosen-Secret-0123")); rec.Code != 200 {
		t.Errorf("chosen secret: %d", rec.Code)
	}

	// An update as Harbor's clients send it: the robot as read, changed.
	update := fmt.Sprintf(`{"id":%d,"name":%q,"level":"project","description":"changed","duration":10,"disable":false,"editable":true,"expires_at":-1,`+
		`"creation_time":"2024-01-01T00:00:00.000Z","permissions":[{"kind":"project","namespace":"own","access":[{"resource":"repository","action":"pull"},{"resource":"repository","action":"push"}]}]}`,
		created.ID, created.Name)
	w.hreq(t, "padmin", "PUT", loc, update, 200)
	rb = decodeJSON[hRobot](t, w.hreq(t, "padmin", "GET", loc, "", 200))
	if rb.Description != "changed" || rb.Duration != 10 || rb.ExpiresAt < time.Now().Unix() || len(rb.Permissions[0].Access) != 2 {
		t.Errorf("after PUT %+v", rb)
	}
	w.hreq(t, "padmin", "PUT", loc, `{"level":"system"}`, 400)
	w.hreq(t, "padmin", "PUT", loc, `{"name":"other"}`, 400)
	w.hreq(t, "padmin", "PUT", loc, `{"permissions":[{"kind":"project","namespace":"foreign","access":[{"resource":"repository","action":"pull"}]}]}`, 400)
	w.hreq(t, "padmin", "PUT", loc, `{"permissions":[{"kind":"project","namespace":"own","access":[{"resource":"member","action":"create"}]}]}`, 400)

	// Robots manage no robots, guests none either; nothing a robot may
	// not have is given; a permission's effect allows.
	robotBody := func(ns, res, act, effect string) string {
		return fmt.Sprintf(`{"name":"r2","level":"project","duration":-1,"permissions":[{"kind":"project","namespace":%q,"access":[{"resource":%q,"action":%q,"effect":%q}]}]}`, ns, res, act, effect)
	}
	w.hreq(t, "robot$foreign+ci", "POST", v2+"/robots", robotBody("foreign", "repository", "pull", ""), 403)
	w.hreq(t, "maint", "POST", v2+"/robots", robotBody("own", "repository", "pull", ""), 403)
	w.hreq(t, "outsider", "POST", v2+"/robots", robotBody("own", "repository", "pull", ""), 404)
	w.hreq(t, "padmin", "POST", v2+"/robots", robotBody("own", "robot", "create", ""), 400)
	w.hreq(t, "padmin", "POST", v2+"/robots", robotBody("own", "repository", "pull", "deny"), 400)
	w.hreq(t, "padmin", "POST", v2+"/robots", `{"name":"r3","level":"project","permissions":[{"kind":"system","namespace":"/","access":[{"resource":"user","action":"create"}]}]}`, 400)
	w.hreq(t, "padmin", "POST", v2+"/robots", robotBody("own", "repository", "pull", "")[:40], 400)

	// System robots are an administrator's.
	sys := `{"name":"fleet","level":"system","duration":7,"permissions":[{"kind":"project","namespace":"*","access":[{"resource":"repository","action":"pull"}]}]}`
	w.hreq(t, "padmin", "POST", v2+"/robots", sys, 403)
	sysCreated := decodeJSON[hRobotCreated](t, w.hreq(t, "admin", "POST", v2+"/robots", sys, 201))
	if sysCreated.Name != "robot$fleet" || sysCreated.ExpiresAt <= time.Now().Unix() {
		t.Errorf("system robot %+v", sysCreated)
	}
	sysLoc := fmt.Sprintf("%s/robots/%d", v2, sysCreated.ID)
	if l := decodeJSON[[]hRobot](t, w.hreq(t, "admin", "GET", v2+"/robots", "", 200)); !slices.ContainsFunc(l, func(r hRobot) bool { return r.Name == "robot$fleet" }) {
		t.Errorf("system robots %+v", l)
	}
	w.hreq(t, "padmin", "GET", sysLoc, "", 403)
	w.hreq(t, "admin", "DELETE", sysLoc, "", 200)
	w.hreq(t, "admin", "GET", sysLoc, "", 404)
	w.hreq(t, "padmin", "DELETE", loc, "", 200)
	w.hreq(t, "padmin", "GET", loc, "", 404)
}

func testHarborQuotas(t *testing.T, w *world) {
	own := w.projectID(ownProject)
	rec := w.hreq(t, "admin", "GET", v2+"/quotas?page_size=100", "", 200)
	all := decodeJSON[[]hQuota](t, rec)
	if n, _ := strconv.Atoi(rec.Header().Get("X-Total-Count")); n != len(all) || n < 3 {
		t.Errorf("%d quotas, X-Total-Count %q", len(all), rec.Header().Get("X-Total-Count"))
	}
	// Harbor's terraform provider pages with a trailing slash.
	w.hreq(t, "admin", "GET", v2+"/quotas/?page=1&page_size=100", "", 200)
	qs := decodeJSON[[]hQuota](t, w.hreq(t, "padmin", "GET", fmt.Sprintf("%s/quotas?reference=project&reference_id=%d", v2, own), "", 200))
	if len(qs) != 1 || qs[0].ID != int64(own) || qs[0].Ref.ID != int64(own) || qs[0].Ref.Name != ownProject ||
		qs[0].Hard["storage"] != -1 || qs[0].Used == nil {
		t.Errorf("own's quota %+v", qs)
	}
	if qs := decodeJSON[[]hQuota](t, w.hreq(t, "admin", "GET", v2+"/quotas?reference=namespace", "", 200)); len(qs) != 0 {
		t.Errorf("other references: %+v", qs)
	}
	loc := fmt.Sprintf("%s/quotas/%d", v2, own)
	w.hreq(t, "admin", "PUT", loc, `{"hard":{"storage":123456}}`, 200)
	if q := decodeJSON[hQuota](t, w.hreq(t, "guest", "GET", loc, "", 200)); q.Hard["storage"] != 123456 {
		t.Errorf("after PUT %+v", q)
	}
	w.hreq(t, "admin", "PUT", loc, `{"hard":{"storage":-1,"count":10}}`, 200)
	if q := decodeJSON[hQuota](t, w.hreq(t, "guest", "GET", loc, "", 200)); q.Hard["storage"] != -1 || q.Hard["count"] != 10 {
		t.Errorf("after PUT of count %+v", q)
	}
	w.hreq(t, "admin", "PUT", loc, `{"hard":{"cpu":1}}`, 400)
	w.hreq(t, "admin", "PUT", loc, `{"hard":{}}`, 400)
	w.hreq(t, "admin", "PUT", loc, `{"hard":{"storage":-5}}`, 400)
	w.hreq(t, "padmin", "PUT", loc, `{"hard":{"storage":1}}`, 403)
	w.hreq(t, "outsider", "GET", loc, "", 404)
	w.hreq(t, "admin", "GET", v2+"/quotas/abc", "", 400)
	w.hreq(t, "admin", "PUT", loc, `{"hard":{"storage":-1,"count":-1}}`, 200)
}

// TestHarborDocument: harbor.json describes every /api/v2.0 route and
// nothing else, as TestOpenAPI checks openapi.json for /api/v1.
func TestHarborDocument(t *testing.T) {
	doc := readDocument(t, "harbor.json")
	h := api.New(&fakeGC{}, users(), api.Info{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var routes []string
	for _, r := range api.Routes(h) {
		if isHarborRoute(r) {
			routes = append(routes, r)
		}
	}
	if len(routes) < 30 {
		t.Errorf("only %d Harbor routes", len(routes))
	}
	checkDocument(t, doc, routes)
}
