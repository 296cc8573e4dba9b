package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/policy"
)

var teamProject = projectView{
	Project: policy.Project{ID: 1, Name: "team", Owner: "alice", Quota: policy.Quota{Storage: 10 << 30, Count: policy.Unlimited}},
	Usage:   policy.Usage{Storage: 1 << 30, Count: 12},
}

// loggedIn is a fake node with alice's login saved.
func loggedIn(t *testing.T) *fakeAPI {
	t.Helper()
	f := newFakeAPI(t)
	f.loginAs("alice", fakeAliceRefresh)
	return f
}

func TestProjectCreate(t *testing.T) {
	f := loggedIn(t)
	f.on("POST", "projects", fakeAnswer{Status: http.StatusCreated, Body: teamProject})
	// Flags after the argument.
	out := f.mustRun("project", "create", "team", "--public", "--storage-limit", "10GiB", "--count-limit", "1000")
	f.wantRequests([2]string{"POST /api/v1/projects", `{"name":"team","public":true,"storage_limit":10737418240,"count_limit":1000}`})
	for _, want := range []string{"team", "1.0 GiB of 10.0 GiB (10%)", "12 of unlimited"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	f.mustRun("project", "create", "team")
	f.wantRequests([2]string{"POST /api/v1/projects", `{"name":"team","public":false,"storage_limit":-1,"count_limit":-1}`})

	for _, tt := range []struct{ args, err string }{
		{"project create team --storage-limit lots", "storage limit"},
		{"project create team --count-limit 1e3", "count limit"},
		{"project create Team", "project name"},
		{"project create", "takes NAME"},
	} {
		if _, _, err := f.runCLI("", strings.Fields(tt.args)...); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: err = %v, want one about %s", tt.args, err, tt.err)
		}
	}
	f.wantRequests()
}

func TestProjectListPages(t *testing.T) {
	f := loggedIn(t)
	page1 := make([]projectView, 100)
	for i := range page1 {
		page1[i] = projectView{Project: policy.Project{Name: fmt.Sprintf("p%03d", i)}}
	}
	f.on("GET", "projects", ok(page1), ok([]projectView{teamProject}))
	out := f.mustRun("project", "list", "-o", "json", "--name", "p")
	var got []projectView
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 101 || got[100].Name != "team" {
		t.Fatalf("list -o json: %d projects, %v", len(got), err)
	}
	rs := f.requests()
	if len(rs) != 2 || rs[0].Query.Get("page") != "1" || rs[1].Query.Get("page") != "2" ||
		rs[0].Query.Get("page_size") != "100" || rs[0].Query.Get("name") != "p" {
		t.Errorf("requests %+v", rs)
	}

	f.on("GET", "projects", ok([]projectView{}))
	if out := f.mustRun("project", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("no projects in JSON: %q, want []", out)
	}
	f.on("GET", "projects", ok([]projectView{teamProject}))
	out = f.mustRun("project", "list")
	if !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "team") || !strings.Contains(out, "private") {
		t.Errorf("table:\n%s", out)
	}
}

func TestProjectShowUpdateDelete(t *testing.T) {
	f := loggedIn(t)
	p := teamProject
	p.Retention = &policy.RetentionPolicy{Rules: []policy.RetentionRule{{Kind: "always", Repos: "**", Tags: "**"}}, Schedule: "@daily"}
	f.on("GET", "projects/team", ok(p))
	out := f.mustRun("project", "show", "team")
	for _, want := range []string{"owner", "alice", "storage", "1.0 GiB of 10.0 GiB", "1 rule(s), schedule @daily"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}

	f.on("PUT", "projects/team", fakeAnswer{Status: http.StatusNoContent})
	out = f.mustRun("project", "update", "team", "--public=false")
	if !strings.Contains(out, "project team is now private") {
		t.Errorf("update output %q", out)
	}
	f.mustRun("project", "update", "team", "--public")
	if _, _, err := f.runCLI("", "project", "update", "team"); err == nil || !strings.Contains(err.Error(), "--public") {
		t.Errorf("update without a change: %v", err)
	}

	f.on("DELETE", "projects/team", fakeAnswer{Status: http.StatusConflict, Body: api.ErrorResponse{Error: "project team holds 3 repositories"}})
	_, _, err := f.runCLI("", "project", "delete", "team")
	if err == nil || !strings.Contains(err.Error(), "409 Conflict: project team holds 3 repositories") {
		t.Errorf("delete of a full project: %v", err)
	}
	f.wantRequests(
		[2]string{"GET /api/v1/projects/team", ""},
		[2]string{"PUT /api/v1/projects/team", `{"public":false}`},
		[2]string{"PUT /api/v1/projects/team", `{"public":true}`},
		[2]string{"DELETE /api/v1/projects/team", ""},
	)
}

func TestMemberCommands(t *testing.T) {
	f := loggedIn(t)
	f.on("POST", "projects/team/members", fakeAnswer{Status: http.StatusCreated, Body: policy.Member{Project: "team", User: "bob", Role: policy.RoleProjectAdmin}})
	f.on("PUT", "projects/team/members/bob", fakeAnswer{Status: http.StatusNoContent})
	f.on("DELETE", "projects/team/members/bob", fakeAnswer{Status: http.StatusNoContent})
	f.on("GET", "projects/team/members", ok([]policy.Member{{Project: "team", User: "alice", Role: policy.RoleProjectAdmin}, {Project: "team", User: "bob", Role: policy.RoleGuest}}))

	out := f.mustRun("member", "add", "team", "bob", "project-admin")
	if !strings.Contains(out, "bob is projectAdmin in project team") {
		t.Errorf("add output %q", out)
	}
	f.mustRun("member", "add", "team", "carol", "limited-guest")
	f.mustRun("member", "set", "team", "bob", "maintainer", "-o", "json")
	f.mustRun("member", "remove", "team", "bob")
	out = f.mustRun("member", "list", "team")
	f.wantRequests(
		[2]string{"POST /api/v1/projects/team/members", `{"username":"bob","role":"projectAdmin"}`},
		[2]string{"POST /api/v1/projects/team/members", `{"username":"carol","role":"limitedGuest"}`},
		[2]string{"PUT /api/v1/projects/team/members/bob", `{"role":"maintainer"}`},
		[2]string{"DELETE /api/v1/projects/team/members/bob", ""},
		[2]string{"GET /api/v1/projects/team/members", ""},
	)
	if !strings.Contains(out, "USER") || !strings.Contains(out, "guest") {
		t.Errorf("list:\n%s", out)
	}

	_, _, err := f.runCLI("", "member", "add", "team", "bob", "boss")
	if err == nil || !strings.Contains(err.Error(), `role "boss"`) {
		t.Errorf("bad role: %v", err)
	}
	_, _, err = f.runCLI("", "member", "set", "team", "bob")
	if err == nil || !strings.Contains(err.Error(), "PROJECT USER ROLE") {
		t.Errorf("missing role: %v", err)
	}
	f.wantRequests()
}

func TestQuotaCommands(t *testing.T) {
	f := loggedIn(t)
	team := quotaView{Quota: policy.Quota{Storage: 10 << 30, Count: 500}, Usage: policy.Usage{Storage: 5 << 30, Count: 50}}
	f.on("GET", "quotas", ok([]quotaView{{Project: "team", Quota: team.Quota, Usage: team.Usage}, {Project: "library", Quota: policy.NoQuota}}))
	f.on("GET", "projects/team/quota", ok(team))
	f.on("PUT", "projects/team/quota", fakeAnswer{Status: http.StatusNoContent})

	out := f.mustRun("quota", "list")
	for _, want := range []string{"5.0 GiB of 10.0 GiB (50%)", "50 of 500 (10%)", "library", "unlimited"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	out = f.mustRun("quota", "show", "team", "-o", "json")
	var q quotaView
	if err := json.Unmarshal([]byte(out), &q); err != nil || q.Project != "team" || q.Quota.Count != 500 {
		t.Errorf("show -o json: %+v, %v", q, err)
	}
	f.wantRequests([2]string{"GET /api/v1/quotas", ""}, [2]string{"GET /api/v1/projects/team/quota", ""})

	// A limit not given stays as it is.
	f.mustRun("quota", "set", "team", "--storage", "20GiB")
	f.mustRun("quota", "set", "team", "--storage", "-1", "--count", "unlimited")
	f.wantRequests(
		[2]string{"GET /api/v1/projects/team/quota", ""},
		[2]string{"PUT /api/v1/projects/team/quota", `{"storage":21474836480,"count":500}`},
		[2]string{"GET /api/v1/projects/team/quota", ""},
		[2]string{"PUT /api/v1/projects/team/quota", `{"storage":-1,"count":-1}`},
	)

	for _, tt := range []struct{ args, err string }{
		{"quota set team --storage plenty", "storage limit"},
		{"quota set team --count -5", "count limit"},
		{"quota set team", "nothing to change"},
	} {
		if _, _, err := f.runCLI("", strings.Fields(tt.args)...); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: err = %v, want one about %s", tt.args, err, tt.err)
		}
	}
	f.wantRequests()
}
