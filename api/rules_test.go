package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/policy"
)

// TestAccessRules checks what the matrix cannot: what the answers hold,
// mass assignment, robot escalation, secrets shown once, bounded bodies,
// the audit trail. One world (its users cost a bcrypt hash each) for
// sequential subtests that do not step on each other.
func TestAccessRules(t *testing.T) {
	w := newWorld(t)

	t.Run("registration cannot make an administrator", func(t *testing.T) {
		body := `{"username":"eve","password":"Passw0rd-eve"}`
		w.as(t, "anonymous", "POST", "/api/v1/users", body, 401)
		w.as(t, "dev", "POST", "/api/v1/users", body, 403)

		w.h.WithConfig(api.Config{SelfRegistration: true, ProjectCreation: api.ProjectCreationEveryone})
		defer w.h.WithConfig(api.DefaultConfig())
		for _, b := range []string{
			`{"username":"eve","password":"Passw0rd-eve","sysadmin_flag":true}`,
			`{"username":"eve","password":"Passw0rd-eve","sysadmin_flag":false}`,
			`{"username":"eve","password":"Passw0rd-eve","admin":true}`,
			`{"username":"eve","password":"Passw0rd-eve","id":1}`,
		} {
			w.as(t, "anonymous", "POST", "/api/v1/users", b, 400)
		}
		w.as(t, "robot$foreign+ci", "POST", "/api/v1/users", body, 403)
		w.as(t, "anonymous", "POST", "/api/v1/users", `{"username":"current","password":"Passw0rd-cur"}`, 400)
		w.as(t, "anonymous", "POST", "/api/v1/users", `{"username":"eve","password":"weak"}`, 400)
		u := decodeJSON[policy.User](t, w.as(t, "anonymous", "POST", "/api/v1/users", body, 201))
		if u.Admin || u.Name != "eve" {
			t.Fatalf("registered %+v", u)
		}
		w.as(t, "anonymous", "POST", "/api/v1/users", body, 409)
		rec := w.do("GET", "/api/v1/users/current", "", basic("eve", "Passw0rd-eve"))
		if cur := decodeJSON[api.CurrentUser](t, rec); rec.Code != 200 || cur.Admin || cur.Name != "eve" {
			t.Fatalf("eve: %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("an administrator creates administrators", func(t *testing.T) {
		u := decodeJSON[policy.User](t, w.as(t, "admin", "POST", "/api/v1/users",
			`{"username":"root2","password":"Passw0rd-root2","sysadmin_flag":true,"email":"r@example.com"}`, 201))
		if !u.Admin || u.Email != "r@example.com" {
			t.Fatalf("created %+v", u)
		}
	})

	t.Run("profile updates touch the profile of oneself only", func(t *testing.T) {
		for _, b := range []string{
			`{"sysadmin_flag":true}`,
			`{"email":"dev@example.com","sysadmin_flag":true}`,
			`{"password":"Passw0rd-new1"}`,
			`{"username":"guest"}`,
			`{"id":2}`,
		} {
			w.as(t, "dev", "PUT", "/api/v1/users/dev", b, 400)
		}
		u := decodeJSON[policy.User](t, w.as(t, "dev", "PUT", "/api/v1/users/dev", `{"email":"dev@example.com","realname":"Dev"}`, 200))
		if u.Admin || u.Email != "dev@example.com" || u.RealName != "Dev" {
			t.Fatalf("updated %+v", u)
		}
		u = decodeJSON[policy.User](t, w.as(t, "dev", "PUT", "/api/v1/users/dev", `{"comment":"hi"}`, 200))
		if u.Email != "dev@example.com" || u.Comment != "hi" {
			t.Fatalf("a partial update lost fields: %+v", u)
		}
		w.as(t, "dev", "PUT", "/api/v1/users/guest", `{"email":"pwned@example.com"}`, 403)
		w.as(t, "dev", "GET", "/api/v1/users/guest", "", 403)
		w.as(t, "dev", "PUT", "/api/v1/users/guest/password", `{"new_password":"Passw0rd-pwned"}`, 403)
		w.as(t, "dev", "PUT", "/api/v1/users/dev/sysadmin", `{"sysadmin_flag":true}`, 403)
		w.as(t, "robot$own+limited", "PUT", "/api/v1/users/dev", `{"comment":"x"}`, 403)
		g := decodeJSON[policy.User](t, w.as(t, "admin", "GET", "/api/v1/users/guest", "", 200))
		if g.Email != "" {
			t.Fatalf("guest was changed: %+v", g)
		}
		if d := decodeJSON[policy.User](t, w.as(t, "dev", "GET", "/api/v1/users/dev", "", 200)); d.Admin {
			t.Fatal("dev became an administrator")
		}
		if strings.Contains(w.as(t, "admin", "GET", "/api/v1/users", "", 200).Body.String(), "hash") {
			t.Fatal("a password hash left the state")
		}
	})

	t.Run("password changes", func(t *testing.T) {
		w.as(t, "maint", "PUT", "/api/v1/users/maint/password", `{"new_password":"Passw0rd-new"}`, 400)
		w.as(t, "maint", "PUT", "/api/v1/users/maint/password", `{"old_password":"wrong","new_password":"Passw0rd-new"}`, 403)
		w.as(t, "maint", "PUT", "/api/v1/users/maint/password", `{"old_password":"Passw0rd-maint","new_password":"short"}`, 400)
		w.as(t, "maint", "PUT", "/api/v1/users/maint/password", `{"old_password":"Passw0rd-maint","new_password":"Passw0rd-new"}`, 204)
		// The old password was cached; it stops working at once.
		if rec := w.do("GET", "/api/v1/users/current", "", basic("maint", "Passw0rd-maint")); rec.Code != 401 {
			t.Fatalf("old password: %d", rec.Code)
		}
		if rec := w.do("GET", "/api/v1/users/current", "", basic("maint", "Passw0rd-new")); rec.Code != 200 {
			t.Fatalf("new password: %d", rec.Code)
		}
		// An administrator sets another's without the old one.
		w.as(t, "admin", "PUT", "/api/v1/users/maint/password", `{"new_password":"Passw0rd-maint"}`, 204)
	})

	t.Run("the last administrator stays", func(t *testing.T) {
		w.as(t, "admin", "PUT", "/api/v1/users/root2/sysadmin", `{"sysadmin_flag":false}`, 200)
		w.as(t, "admin", "PUT", "/api/v1/users/admin/sysadmin", `{"sysadmin_flag":false}`, 409)
		w.as(t, "admin", "DELETE", "/api/v1/users/admin", "", 409)
		w.as(t, "admin", "PUT", "/api/v1/users/admin/sysadmin", `{}`, 400)
	})

	t.Run("projects: creation, owner, quota and what a view shows", func(t *testing.T) {
		w.as(t, "dev", "POST", "/api/v1/projects", `{"name":"devs","storage_limit":1}`, 403)
		w.as(t, "dev", "POST", "/api/v1/projects", `{"name":"devs","owner_name":"admin"}`, 400)
		w.as(t, "robot$own+limited", "POST", "/api/v1/projects", `{"name":"bots"}`, 403)
		v := decodeJSON[api.ProjectView](t, w.as(t, "dev", "POST", "/api/v1/projects", `{"name":"devs"}`, 201))
		if v.Owner != "dev" || v.Role != policy.RoleProjectAdmin || v.Public || v.Quota == nil || *v.Quota != policy.NoQuota {
			t.Fatalf("created %+v", v)
		}
		ms := decodeJSON[[]policy.Member](t, w.as(t, "dev", "GET", "/api/v1/projects/devs/members", "", 200))
		if len(ms) != 1 || ms[0].User != "dev" || ms[0].Role != policy.RoleProjectAdmin {
			t.Fatalf("members %+v", ms)
		}
		w.as(t, "dev", "POST", "/api/v1/projects", `{"name":"devs"}`, 409)
		w.as(t, "dev", "POST", "/api/v1/projects", `{"name":"Bad Name"}`, 400)
		w.as(t, "dev", "PUT", "/api/v1/projects/devs/quota", `{"storage":-1}`, 403)
		q := decodeJSON[api.QuotaView](t, w.as(t, "admin", "PUT", "/api/v1/projects/devs/quota", `{"storage":1000}`, 200))
		if q.Quota != (policy.Quota{Storage: 1000, Count: -1}) {
			t.Fatalf("quota %+v", q)
		}
		w.as(t, "admin", "PUT", "/api/v1/projects/devs/quota", `{"storage":-2}`, 400)
		a := decodeJSON[api.ProjectView](t, w.as(t, "admin", "POST", "/api/v1/projects", `{"name":"capped","count_limit":5}`, 201))
		if a.Quota == nil || a.Quota.Count != 5 || a.Quota.Storage != -1 {
			t.Fatalf("admin's project %+v", a)
		}

		w.h.WithConfig(api.Config{ProjectCreation: api.ProjectCreationAdminOnly})
		w.as(t, "dev", "POST", "/api/v1/projects", `{"name":"devs2"}`, 403)
		w.as(t, "admin", "POST", "/api/v1/projects", `{"name":"admins2"}`, 201)
		w.h.WithConfig(api.DefaultConfig())

		// A guest sees the project, not its rules; a maintainer does.
		w.as(t, "maint", "POST", "/api/v1/projects/own/immutable", `{"repos":"**","tags":"v*"}`, 201)
		w.as(t, "dev", "PUT", "/api/v1/projects/own/retention", `{"rules":[{"kind":"always","repos":"**","tags":"**"}]}`, 200)
		g := decodeJSON[api.ProjectView](t, w.as(t, "guest", "GET", "/api/v1/projects/own", "", 200))
		if g.Immutable != nil || g.Retention != nil || g.Quota == nil || g.Role != policy.RoleGuest {
			t.Fatalf("guest's view %+v", g)
		}
		m := decodeJSON[api.ProjectView](t, w.as(t, "maint", "GET", "/api/v1/projects/own", "", 200))
		if len(m.Immutable) != 1 || m.Retention == nil {
			t.Fatalf("maintainer's view %+v", m)
		}
		p := decodeJSON[api.ProjectView](t, w.as(t, "anonymous", "GET", "/api/v1/projects/pub", "", 200))
		if p.Quota != nil || p.Usage != nil {
			t.Fatalf("anonymous sees the quota: %+v", p)
		}
		w.as(t, "padmin", "PUT", "/api/v1/projects/own", `{"public":true,"name":"other"}`, 400)
		w.as(t, "padmin", "PUT", "/api/v1/projects/own", `{}`, 400)
	})

	t.Run("lists show what the caller may see", func(t *testing.T) {
		names := func(label, query string) []string {
			rec := w.as(t, label, "GET", "/api/v1/projects"+query, "", 200)
			var out []string
			for _, v := range decodeJSON[[]api.ProjectView](t, rec) {
				out = append(out, v.Name)
			}
			if got := rec.Header().Get("X-Total-Count"); query == "" && got != fmt.Sprint(len(out)) {
				t.Errorf("%s: X-Total-Count %s for %d projects", label, got, len(out))
			}
			return out
		}
		for _, tt := range []struct {
			who, query string
			want       []string
		}{
			{"anonymous", "", []string{"pub"}},
			{"outsider", "", []string{"foreign", "pub"}},
			{"guest", "", []string{"own", "pub"}},
			{"robot$own+limited", "", []string{"own", "pub"}},
			{"robot$foreign+ci", "", []string{"foreign", "pub"}},
			{"outsider", "?public=false", []string{"foreign"}},
			{"admin", "?name=ow", []string{"own"}},
			{"admin", "?page=2&page_size=1&name=o", []string{"own"}}, // foreign, own
		} {
			got := names(tt.who, tt.query)
			if !slices.Equal(got, tt.want) {
				t.Errorf("%s %s: %v, want %v", tt.who, tt.query, got, tt.want)
			}
		}
		all := names("admin", "")
		for _, p := range []string{"own", "foreign", "pub", "devs", "capped"} {
			if !slices.Contains(all, p) {
				t.Errorf("admin does not see %s: %v", p, all)
			}
		}
		w.as(t, "admin", "GET", "/api/v1/projects?page=0", "", 400)
		w.as(t, "admin", "GET", "/api/v1/projects?public=perhaps", "", 400)
	})

	t.Run("robots cannot escalate", func(t *testing.T) {
		for _, b := range []string{
			`{"name":"r1","permissions":[{"resource":"member","action":"create"}]}`,
			`{"name":"r1","permissions":[{"resource":"robot","action":"create"}]}`,
			`{"name":"r1","permissions":[{"resource":"project","action":"delete"}]}`,
			`{"name":"r1","permissions":[]}`,
			`{"name":"r1","permissions":[{"namespace":"foreign","access":[{"resource":"repository","action":"push"}]}]}`,
			`{"name":"r1","level":"system","permissions":[{"resource":"repository","action":"pull"}]}`,
			`{"name":"../r1","permissions":[{"resource":"repository","action":"pull"}]}`,
			`{"name":"r1","expires_in_days":-7,"permissions":[{"resource":"repository","action":"pull"}]}`,
		} {
			w.as(t, "padmin", "POST", "/api/v1/projects/own/robots", b, 400)
		}
		pull := `{"name":"r1","permissions":[{"resource":"repository","action":"pull"}]}`
		w.as(t, "padmin", "POST", "/api/v1/projects/foreign/robots", pull, 404)
		w.as(t, "maint", "POST", "/api/v1/projects/own/robots", pull, 403)
		w.as(t, "robot$foreign+ci", "POST", "/api/v1/projects/foreign/robots", pull, 403)
		w.as(t, "robot$foreign+ci", "POST", "/api/v1/projects/foreign/members", `{"username":"victim","role":"guest"}`, 403)
		w.as(t, "padmin", "POST", "/api/v1/robots",
			`{"name":"sys1","permissions":[{"namespace":"*","access":[{"resource":"repository","action":"push"}]}]}`, 403)
		w.as(t, "padmin", "PUT", "/api/v1/robots/robot$foreign+ci", `{"disable":true}`, 404)
		w.as(t, "padmin", "POST", "/api/v1/robots/robot$foreign+ci/secret", "", 404)
		// A project robot's update cannot reach another project either.
		w.as(t, "padmin", "PUT", "/api/v1/robots/robot$own+limited",
			`{"permissions":[{"namespace":"foreign","access":[{"resource":"repository","action":"push"}]}]}`, 400)
		w.as(t, "padmin", "PUT", "/api/v1/robots/robot$own+limited", `{"permissions":[{"resource":"robot","action":"create"}]}`, 400)
		w.as(t, "admin", "POST", "/api/v1/robots",
			`{"name":"sys1","permissions":[{"namespace":"*","access":[{"resource":"member","action":"create"}]}]}`, 400)
		w.as(t, "admin", "POST", "/api/v1/robots",
			`{"name":"sys1","permissions":[{"namespace":"nope","access":[{"resource":"repository","action":"pull"}]}]}`, 404)
	})

	t.Run("a robot's secret is shown once and works", func(t *testing.T) {
		rec := w.as(t, "padmin", "POST", "/api/v1/projects/own/robots",
			`{"name":"builder","description":"ci","expires_in_days":30,"permissions":[{"resource":"repository","action":"push"},{"resource":"repository","action":"pull"},{"resource":"repository","action":"pull"}]}`, 201)
		created := decodeJSON[api.RobotCreated](t, rec)
		rb := created.Robot
		if rb.Name != "robot$own+builder" || created.Secret == "" || rb.Creator != "padmin" || rb.Expires == 0 ||
			len(rb.Permissions) != 1 || len(rb.Permissions[0].Access) != 2 {
			t.Fatalf("created %s", rec.Body)
		}
		for _, tgt := range []string{"/api/v1/robots/robot$own+builder", "/api/v1/projects/own/robots", "/api/v1/audit?project=own"} {
			if b := w.as(t, "padmin", "GET", tgt, "", 200).Body.String(); strings.Contains(b, created.Secret) {
				t.Fatalf("GET %s shows the secret", tgt)
			}
		}
		robot := basic(rb.Name, created.Secret)
		rec = w.do("GET", "/api/v1/users/current", "", robot)
		if cur := decodeJSON[api.CurrentUser](t, rec); rec.Code != 200 || cur.Kind != policy.PrincipalRobot || cur.Robot == nil {
			t.Fatalf("robot's current: %d %s", rec.Code, rec.Body)
		}
		if rec := w.do("GET", "/api/v1/projects/foreign", "", robot); rec.Code != 404 {
			t.Fatalf("robot of own in foreign: %d", rec.Code)
		}
		sec := decodeJSON[api.RobotSecret](t, w.as(t, "padmin", "POST", "/api/v1/robots/robot$own+builder/secret", "", 200))
		if sec.Secret == "" || sec.Secret == created.Secret {
			t.Fatalf("refreshed %+v", sec)
		}
		if rec := w.do("GET", "/api/v1/users/current", "", robot); rec.Code != 401 {
			t.Fatalf("old secret after a refresh: %d", rec.Code)
		}
		robot = basic(rb.Name, sec.Secret)
		if rec := w.do("GET", "/api/v1/users/current", "", robot); rec.Code != 200 {
			t.Fatalf("new secret: %d", rec.Code)
		}
		w.as(t, "padmin", "POST", "/api/v1/robots/robot$own+builder/secret", `{"secret":"short"}`, 400)
		w.as(t, "padmin", "POST", "/api/v1/robots/robot$own+builder/secret", `{"secret":"a-chosen-secret-123"}`, 200)
		robot = basic(rb.Name, "a-chosen-secret-123")
		got := decodeJSON[policy.Robot](t, w.as(t, "padmin", "PUT", "/api/v1/robots/robot$own+builder", `{"disable":true,"description":"off"}`, 200))
		if !got.Disabled || got.Description != "off" || len(got.Permissions[0].Access) != 2 {
			t.Fatalf("updated %+v", got)
		}
		if rec := w.do("GET", "/api/v1/users/current", "", robot); rec.Code != 401 {
			t.Fatalf("disabled robot: %d", rec.Code)
		}
		w.as(t, "padmin", "DELETE", "/api/v1/robots/robot$own+builder", "", 204)
		w.as(t, "padmin", "GET", "/api/v1/robots/robot$own+builder", "", 404)
		w.as(t, "padmin", "GET", "/api/v1/robots/not-a-robot", "", 404)
	})

	t.Run("bodies are bounded and strict", func(t *testing.T) {
		big := `{"name":"` + strings.Repeat("a", 70<<10) + `"}`
		for _, tt := range []struct{ method, target, body string }{
			{"POST", "/api/v1/projects", big},
			{"POST", "/api/v1/users", big},
			{"PUT", "/api/v1/users/admin", `{"comment":"` + strings.Repeat("a", 70<<10) + `"}`},
			{"POST", "/api/v1/projects/own/robots", big},
			{"POST", "/api/v1/projects/own/members", big},
			{"PUT", "/api/v1/projects/own/retention", big},
			{"POST", "/api/v1/projects", `{"name":"x"} {"name":"y"}`},
			{"POST", "/api/v1/projects", `[1]`},
			{"POST", "/api/v1/projects", ``},
			{"POST", "/api/v1/projects/own/members", `{"username":"victim","role":"owner"}`},
			{"POST", "/api/v1/projects/own/members", `{"username":"victim","role":"guest","project":"foreign"}`},
			{"POST", "/api/v1/projects/own/immutable", `{"repos":"[","tags":"*"}`},
			{"POST", "/api/v1/projects/own/immutable", `{"id":7,"repos":"**","tags":"*"}`},
			{"PUT", "/api/v1/projects/own/retention", `{"rules":[{"kind":"forever","repos":"**","tags":"**"}]}`},
			{"PUT", "/api/v1/projects/own/retention", `{"rules":[],"schedule":"every full moon"}`},
			{"POST", "/api/v1/projects/own/retention/run", `{"dry_run":"yes"}`},
			{"GET", "/api/v1/audit?since=yesterday", ``},
			{"DELETE", "/api/v1/projects/own/immutable/zero", ``},
		} {
			if rec := w.do(tt.method, tt.target, tt.body, w.principal("admin").auth); rec.Code != 400 {
				t.Errorf("%s %s %s: %d, want 400: %s", tt.method, tt.target, clip(tt.body), rec.Code, rec.Body)
			}
		}
	})

	t.Run("members", func(t *testing.T) {
		w.as(t, "padmin", "POST", "/api/v1/projects/own/members", `{"username":"nobody","role":"guest"}`, 404)
		w.as(t, "padmin", "POST", "/api/v1/projects/own/members", `{"username":"robot$own+limited","role":"guest"}`, 400)
		m := decodeJSON[policy.Member](t, w.as(t, "padmin", "POST", "/api/v1/projects/own/members", `{"username":"victim","role":"3"}`, 201))
		if m.Role != policy.RoleGuest || m.UserID == 0 {
			t.Fatalf("member %+v", m)
		}
		w.as(t, "padmin", "POST", "/api/v1/projects/own/members", `{"username":"victim","role":"guest"}`, 409)
		w.as(t, "padmin", "PUT", "/api/v1/projects/own/members/victim", `{"role":"maintainer"}`, 200)
		// The new role counts at once.
		if pa, err := w.node.ProjectAccess(w.ctx(), "victim", "own"); err != nil || pa.Role != policy.RoleMaintainer {
			t.Fatalf("victim's role %+v %v", pa, err)
		}
		w.as(t, "padmin", "DELETE", "/api/v1/projects/own/members/victim", "", 204)
		w.as(t, "padmin", "DELETE", "/api/v1/projects/own/members/victim", "", 404)
		w.as(t, "padmin", "PUT", "/api/v1/projects/own/members/victim", `{"role":"guest"}`, 404)
	})

	t.Run("immutability rules and retention", func(t *testing.T) {
		r := decodeJSON[policy.ImmutableRule](t, w.as(t, "maint", "POST", "/api/v1/projects/own/immutable", `{"repos":"app/**","tags":"release-*"}`, 201))
		if r.ID == 0 || r.Repos != "app/**" {
			t.Fatalf("rule %+v", r)
		}
		u := decodeJSON[policy.ImmutableRule](t, w.as(t, "maint", "PUT", fmt.Sprintf("/api/v1/projects/own/immutable/%d", r.ID), `{"repos":"app/**","tags":"v*","disabled":true}`, 200))
		if u.ID != r.ID || u.Tags != "v*" || !u.Disabled {
			t.Fatalf("updated %+v", u)
		}
		rules := decodeJSON[[]policy.ImmutableRule](t, w.as(t, "maint", "GET", "/api/v1/projects/own/immutable", "", 200))
		if !slices.ContainsFunc(rules, func(x policy.ImmutableRule) bool { return x == u }) {
			t.Fatalf("rules %+v", rules)
		}
		w.as(t, "maint", "DELETE", fmt.Sprintf("/api/v1/projects/own/immutable/%d", r.ID), "", 204)
		w.as(t, "maint", "DELETE", fmt.Sprintf("/api/v1/projects/own/immutable/%d", r.ID), "", 404)

		pol := decodeJSON[policy.RetentionPolicy](t, w.as(t, "dev", "PUT", "/api/v1/projects/own/retention",
			`{"rules":[{"kind":"latestPushedK","param":2,"repos":"**","tags":"**"}],"schedule":"@daily"}`, 200))
		if len(pol.Rules) != 1 || pol.Schedule != "@daily" {
			t.Fatalf("policy %+v", pol)
		}
		run := decodeJSON[policy.RetentionRun](t, w.as(t, "dev", "POST", "/api/v1/projects/own/retention/run?dry_run=true", "", 202))
		if !run.DryRun || run.Project != "own" || run.ID == 0 {
			t.Fatalf("run %+v", run)
		}
		w.as(t, "guest", "GET", "/api/v1/projects/own/retention/runs", "", 403)
		runs := decodeJSON[[]policy.RetentionRun](t, w.as(t, "dev", "GET", "/api/v1/projects/own/retention/runs", "", 200))
		if len(runs) == 0 || runs[0].ID != run.ID {
			t.Fatalf("runs %+v", runs)
		}
		got := decodeJSON[policy.RetentionRun](t, w.as(t, "dev", "GET", fmt.Sprintf("/api/v1/projects/own/retention/runs/%d", run.ID), "", 200))
		if got.ID != run.ID {
			t.Fatalf("run %+v", got)
		}
		w.as(t, "dev", "PUT", "/api/v1/projects/own/retention", `{"rules":[]}`, 200)
		if p := decodeJSON[policy.RetentionPolicy](t, w.as(t, "dev", "GET", "/api/v1/projects/own/retention", "", 200)); len(p.Rules) != 0 {
			t.Fatalf("cleared policy %+v", p)
		}
	})

	t.Run("changes are audited with actor and address", func(t *testing.T) {
		w.as(t, "padmin", "POST", "/api/v1/projects/own/members", `{"username":"victim","role":"guest"}`, 201)
		w.as(t, "padmin", "PUT", "/api/v1/projects/own/members/victim", `{"role":"developer"}`, 200)
		w.as(t, "padmin", "DELETE", "/api/v1/projects/own/members/victim", "", 204)
		w.as(t, "padmin", "POST", "/api/v1/projects/own/robots", `{"name":"audited","permissions":[{"resource":"repository","action":"pull"}]}`, 201)
		w.as(t, "maint", "POST", "/api/v1/projects/own/immutable", `{"repos":"**","tags":"audited"}`, 201)
		w.as(t, "dev", "PUT", "/api/v1/projects/own/retention", `{"rules":[{"kind":"always","repos":"**","tags":"**"}]}`, 200)
		w.as(t, "admin", "PUT", "/api/v1/projects/own/quota", `{"count":100}`, 200)
		w.as(t, "padmin", "PUT", "/api/v1/projects/own", `{"public":false}`, 200)
		w.as(t, "admin", "POST", "/api/v1/system/token-keys/rotate", "", 200)

		events := decodeJSON[[]policy.AuditEvent](t, w.as(t, "guest", "GET", "/api/v1/audit?project=own&limit=500", "", 200))
		for _, want := range []policy.AuditEvent{
			{Actor: "padmin", Op: policy.AuditCreate, Resource: policy.AuditMember, Target: "victim"},
			{Actor: "padmin", Op: policy.AuditUpdate, Resource: policy.AuditMember, Target: "victim"},
			{Actor: "padmin", Op: policy.AuditDelete, Resource: policy.AuditMember, Target: "victim"},
			{Actor: "padmin", Op: policy.AuditCreate, Resource: policy.AuditRobot, Target: "robot$own+audited"},
			{Actor: "maint", Op: policy.AuditUpdate, Resource: policy.AuditImmutable, Target: "own"},
			{Actor: "dev", Op: policy.AuditUpdate, Resource: policy.AuditRetPolicy, Target: "own"},
			{Actor: "admin", Op: policy.AuditUpdate, Resource: policy.AuditQuotaRes, Target: "own"},
			{Actor: "padmin", Op: policy.AuditUpdate, Resource: policy.AuditProject, Target: "own"},
		} {
			if !slices.ContainsFunc(events, func(e policy.AuditEvent) bool {
				return e.Actor == want.Actor && e.Op == want.Op && e.Resource == want.Resource &&
					e.Target == want.Target && e.Project == "own" && e.Addr == "192.0.2.1"
			}) {
				t.Errorf("no event %+v from 192.0.2.1 in %+v", want, events)
			}
		}
		for _, e := range events {
			if e.Project != "own" {
				t.Errorf("a project's log shows %+v", e)
			}
		}
		w.as(t, "lguest", "GET", "/api/v1/audit?project=own", "", 403)
		w.as(t, "outsider", "GET", "/api/v1/audit?project=own", "", 404)
		w.as(t, "guest", "GET", "/api/v1/audit", "", 403)
		all := decodeJSON[[]policy.AuditEvent](t, w.as(t, "admin", "GET", "/api/v1/audit?resource_type=token_key", "", 200))
		if len(all) == 0 || all[0].Actor != "admin" {
			t.Errorf("token key rotation not audited: %+v", all)
		}

		// Paging: newest first, Link to the next page.
		rec := w.as(t, "guest", "GET", "/api/v1/audit?project=own&limit=2", "", 200)
		page := decodeJSON[[]policy.AuditEvent](t, rec)
		link := rec.Header().Get("Link")
		if len(page) != 2 || page[0].ID <= page[1].ID || !strings.Contains(link, fmt.Sprintf("before=%d", page[1].ID)) ||
			!strings.Contains(link, "project=own") || !strings.HasSuffix(link, `rel="next"`) {
			t.Fatalf("page %+v link %q", page, link)
		}
		next := strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		page2 := decodeJSON[[]policy.AuditEvent](t, w.as(t, "guest", "GET", next, "", 200))
		if len(page2) == 0 || page2[0].ID >= page[1].ID {
			t.Fatalf("next page %+v", page2)
		}
		since := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		if e := decodeJSON[[]policy.AuditEvent](t, w.as(t, "guest", "GET", "/api/v1/audit?project=own&since="+since, "", 200)); len(e) != 0 {
			t.Fatalf("events from the future: %+v", e)
		}
	})

	t.Run("failed logins are audited", func(t *testing.T) {
		if rec := w.do("GET", "/api/v1/users/current", "", basic("guest", "not-it")); rec.Code != 401 {
			t.Fatalf("wrong password: %d", rec.Code)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			events := decodeJSON[[]policy.AuditEvent](t, w.as(t, "admin", "GET", "/api/v1/audit?operation=login_failed&user=guest", "", 200))
			if len(events) > 0 {
				if e := events[0]; e.Addr != "192.0.2.1" || e.Target != "guest" || e.Detail != "management API" {
					t.Fatalf("event %+v", e)
				}
				// Once: under no other actor, and counted once.
				all := decodeJSON[[]policy.AuditEvent](t, w.as(t, "admin", "GET", "/api/v1/audit?operation=login_failed&resource=guest", "", 200))
				if len(all) != 1 || all[0].Count != 1 {
					t.Fatalf("one failed login recorded as %+v", all)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the failed login was not audited")
			}
			time.Sleep(20 * time.Millisecond) // polling the flush, not asserting on time
		}
	})

	t.Run("token keys and the current user", func(t *testing.T) {
		keys := decodeJSON[[]api.TokenKey](t, w.as(t, "admin", "GET", "/api/v1/system/token-keys", "", 200))
		rot := decodeJSON[api.TokenKey](t, w.as(t, "admin", "POST", "/api/v1/system/token-keys/rotate", "", 200))
		after := decodeJSON[[]api.TokenKey](t, w.as(t, "admin", "GET", "/api/v1/system/token-keys", "", 200))
		// The new key signs; the one before it stays, to verify what it
		// signed (the newest three are kept).
		if len(keys) == 0 || !keys[0].Current || rot.Kid == "" || rot.Kid == keys[0].Kid || len(after) != min(len(keys)+1, 3) ||
			after[0].Kid != rot.Kid || !after[0].Current || after[1].Kid != keys[0].Kid || after[1].Current {
			t.Fatalf("keys %+v, rotated %+v, after %+v", keys, rot, after)
		}
		if b := w.as(t, "admin", "GET", "/api/v1/system/token-keys", "", 200).Body.String(); strings.Contains(b, "seal") || strings.Contains(b, "private") {
			t.Fatalf("token keys %s", b)
		}
		cur := decodeJSON[api.CurrentUser](t, w.as(t, "guest", "GET", "/api/v1/users/current", "", 200))
		if cur.Kind != policy.PrincipalUser || cur.Admin || cur.User == nil ||
			!slices.ContainsFunc(cur.Memberships, func(m policy.Member) bool { return m.Project == "own" && m.Role == policy.RoleGuest }) {
			t.Fatalf("current %+v", cur)
		}
		w.as(t, "anonymous", "GET", "/api/v1/users/current", "", 401)
	})

	t.Run("a bearer token's subject is looked up now", func(t *testing.T) {
		// A token carries no role; the state decides.
		dev := w.bearer(t, "dev")
		if rec := w.do("GET", "/api/v1/users", "", dev); rec.Code != 403 {
			t.Fatalf("dev's token: %d", rec.Code)
		}
		if rec := w.do("GET", "/api/v1/projects/own/members", "", dev); rec.Code != 200 {
			t.Fatalf("dev's token in own: %d", rec.Code)
		}
		w.as(t, "admin", "POST", "/api/v1/users", `{"username":"shortlived","password":"Passw0rd-shortlived"}`, 201)
		tok := bearerAuth(tokenFor(t, w.auth, "shortlived", "Passw0rd-shortlived"))
		if rec := w.do("GET", "/api/v1/users/current", "", tok); rec.Code != 200 {
			t.Fatalf("a user's token: %d", rec.Code)
		}
		w.as(t, "admin", "DELETE", "/api/v1/users/shortlived", "", 204)
		if rec := w.do("GET", "/api/v1/users/current", "", tok); rec.Code != 401 {
			t.Fatalf("a deleted user's token: %d", rec.Code)
		}
		for _, authz := range []string{"Negotiate abc", "Basic !!!", "Bearer"} {
			if rec := w.do("GET", "/api/v1/projects", "", func(r *http.Request) { r.Header.Set("Authorization", authz) }); rec.Code != 401 {
				t.Fatalf("Authorization %q: %d, want 401 (not anonymous)", authz, rec.Code)
			}
		}
		if rec := w.do("GET", "/api/v1/projects", "", func(r *http.Request) { r.SetBasicAuth("", "") }); rec.Code != 200 {
			t.Fatalf("empty basic credentials: %d, want anonymous", rec.Code)
		}
	})

	t.Run("deleting a project", func(t *testing.T) {
		w.as(t, "dev", "POST", "/api/v1/projects", `{"name":"doomed"}`, 201)
		w.as(t, "dev", "POST", "/api/v1/projects/doomed/robots", `{"name":"r","permissions":[{"resource":"repository","action":"pull"}]}`, 201)
		w.as(t, "dev", "DELETE", "/api/v1/projects/doomed", "", 204)
		w.as(t, "dev", "GET", "/api/v1/projects/doomed", "", 404)
		w.as(t, "admin", "GET", "/api/v1/robots/robot$doomed+r", "", 404)
	})
}
