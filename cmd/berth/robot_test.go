package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-registry/berth/policy"
)

func TestParseAccessList(t *testing.T) {
	pull := policy.Access{Resource: policy.ResRepository, Action: policy.ActPull}
	push := policy.Access{Resource: policy.ResRepository, Action: policy.ActPush}
	read := policy.Access{Resource: policy.ResArtifact, Action: policy.ActRead}
	for _, tt := range []struct {
		in   []string
		want []policy.Access
	}{
		{[]string{"repository:pull"}, []policy.Access{pull}},
		{[]string{"repository:pull", "repository:push,artifact:read"}, []policy.Access{pull, push, read}},
		{[]string{"repository:pull, repository:pull"}, []policy.Access{pull}},
		{[]string{"quota:*"}, []policy.Access{{Resource: policy.ResQuota, Action: policy.ActRead}}},
	} {
		got, err := parseAccessList(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseAccessList(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	all, err := parseAccessList([]string{"repository:*"})
	if err != nil || len(all) != 5 {
		t.Errorf("repository:* = %v, %v; want the 5 repository actions a robot may have", all, err)
	}
	for _, bad := range [][]string{
		nil, {"pull"}, {"repository:"}, {":pull"}, {"repository:fly"},
		{"member:create"}, {"robot:create"}, {"project:delete"}, // a robot must not manage access
	} {
		if _, err := parseAccessList(bad); err == nil {
			t.Errorf("parseAccessList(%q) accepted", bad)
		}
	}
}

func TestParseSystemPermissions(t *testing.T) {
	pull := policy.Access{Resource: policy.ResRepository, Action: policy.ActPull}
	push := policy.Access{Resource: policy.ResRepository, Action: policy.ActPush}
	got, err := parseSystemPermissions([]string{"team=repository:pull,repository:push", "*=repository:pull", "team=repository:pull"})
	want := []robotPerm{{Namespace: "team", Access: []policy.Access{pull, push}}, {Namespace: "*", Access: []policy.Access{pull}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	for _, bad := range [][]string{nil, {"repository:pull"}, {"=repository:pull"}, {"Team=repository:pull"}, {"team="}, {"team=repository:fly"}} {
		if _, err := parseSystemPermissions(bad); err == nil {
			t.Errorf("parseSystemPermissions(%q) accepted", bad)
		}
	}
}

func TestRobotName(t *testing.T) {
	for _, tt := range []struct{ arg, project, want string }{
		{"robot$team+ci", "", "robot$team+ci"},
		{"robot$team+ci", "other", "robot$team+ci"},
		{"team+ci", "", "robot$team+ci"},
		{"ci", "team", "robot$team+ci"},
		{"sync", "", "robot$sync"},
	} {
		if got := robotName(tt.arg, tt.project); got != tt.want {
			t.Errorf("robotName(%q, %q) = %q, want %q", tt.arg, tt.project, got, tt.want)
		}
	}
}

var ciRobot = policy.Robot{
	ID: 4, Name: "robot$team+ci", Level: policy.RobotProject, Project: "team", Description: "CI",
	Permissions: []policy.RobotPermission{{Kind: "project", Namespace: "team", Access: []policy.Access{
		{Resource: policy.ResRepository, Action: policy.ActPull}, {Resource: policy.ResRepository, Action: policy.ActPush},
	}}},
	Expires: 1_800_000_000_000_000_000,
}

func TestRobotCreate(t *testing.T) {
	f := loggedIn(t)
	f.on("POST", "projects/team/robots", fakeAnswer{Status: http.StatusCreated, Body: robotCreated{Robot: ciRobot, Secret: "s3cret-once"}})
	out, errOut, err := f.runCLI("", "robot", "create", "ci", "--project", "team", "--perm", "repository:pull",
		"--perm", "repository:push,artifact:read", "--expires-in", "30d", "--description", "CI")
	if err != nil {
		t.Fatal(err)
	}
	f.wantRequests([2]string{"POST /api/v1/projects/team/robots", `{"name":"ci","description":"CI","expires_in_days":30,"permissions":[
		{"resource":"repository","action":"pull"},{"resource":"repository","action":"push"},{"resource":"artifact","action":"read"}]}`})
	if !strings.Contains(out, "secret: s3cret-once") || !strings.Contains(out, "robot$team+ci") {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(errOut, "will not be shown again") {
		t.Errorf("no warning on stderr: %q", errOut)
	}

	// JSON: the secret for a script to take.
	out = f.mustRun("robot", "create", "ci", "--project", "team", "--perm", "repository:pull", "-o", "json")
	var res struct {
		Name   string       `json:"name"`
		Secret string       `json:"secret"`
		Robot  policy.Robot `json:"robot"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Secret != "s3cret-once" || res.Robot.Name != ciRobot.Name {
		t.Errorf("create -o json %q: %v", out, err)
	}
	f.wantRequests([2]string{"POST /api/v1/projects/team/robots", `{"name":"ci","permissions":[{"resource":"repository","action":"pull"}]}`})

	// --secret-file: written 0600, not printed.
	file := filepath.Join(t.TempDir(), "ci.secret")
	if err := os.WriteFile(file, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = f.runCLI("", "robot", "create", "ci", "--project", "team", "--perm", "repository:pull", "--secret-file", file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out+errOut, "s3cret-once") {
		t.Errorf("the secret was printed with --secret-file:\n%s%s", out, errOut)
	}
	b, err := os.ReadFile(file)
	fi, _ := os.Stat(file)
	if err != nil || string(b) != "s3cret-once\n" || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file %q mode %v: %v", b, fi.Mode().Perm(), err)
	}
	f.wantRequests([2]string{"POST /api/v1/projects/team/robots", ""})
}

func TestSystemRobotCreate(t *testing.T) {
	f := loggedIn(t)
	sys := policy.Robot{Name: "robot$sync", Level: policy.RobotSystem}
	f.on("POST", "robots", fakeAnswer{Status: http.StatusCreated, Body: robotCreated{Robot: sys, Secret: "x"}})
	f.mustRun("robot", "create", "sync", "--system", "--perm", "team=repository:pull,repository:push", "--perm", "*=repository:pull", "--expires-in", "never")
	f.wantRequests([2]string{"POST /api/v1/robots", `{"name":"sync","expires_in_days":-1,"permissions":[
		{"namespace":"team","access":[{"resource":"repository","action":"pull"},{"resource":"repository","action":"push"}]},
		{"namespace":"*","access":[{"resource":"repository","action":"pull"}]}]}`})

	for _, tt := range []struct{ args, err string }{
		{"robot create ci --perm repository:pull", "--project PROJECT"},
		{"robot create ci --project team --system --perm repository:pull", "--project PROJECT"},
		{"robot create ci --project team", "at least one permission"},
		{"robot create ci --project team --perm repository:fly", "cannot have it"},
		{"robot create ci --project team --perm team=repository:pull", "in its project"},
		{"robot create ci --system --perm repository:pull", "names its project"},
		{"robot create ci --project team --perm repository:pull --expires-in 36h", "whole days"},
		{"robot create CI --project team --perm repository:pull", "robot name"},
		{"robot create robot$team+ci --project team --perm repository:pull", "short name"},
	} {
		if _, _, err := f.runCLI("", strings.Fields(tt.args)...); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: err = %v, want one about %s", tt.args, err, tt.err)
		}
	}
	f.wantRequests()
}

func TestRobotCommands(t *testing.T) {
	f := loggedIn(t)
	f.on("GET", "projects/team/robots", ok([]policy.Robot{ciRobot}))
	f.on("GET", "robots", ok([]policy.Robot{{Name: "robot$sync", Level: policy.RobotSystem, Permissions: []policy.RobotPermission{
		{Namespace: "*", Access: []policy.Access{{Resource: policy.ResRepository, Action: policy.ActPull}}}}}}))
	f.on("GET", "robots/robot$team+ci", ok(ciRobot))
	f.on("PUT", "robots/robot$team+ci", fakeAnswer{Status: http.StatusNoContent})
	f.on("POST", "robots/robot$team+ci/secret", ok(map[string]string{"secret": "n3w-secret"}))
	f.on("DELETE", "robots/robot$team+ci", fakeAnswer{Status: http.StatusNoContent})

	out := f.mustRun("robot", "list", "--project", "team")
	if !strings.Contains(out, "robot$team+ci") || !strings.Contains(out, "repository:pull,repository:push") {
		t.Errorf("list --project:\n%s", out)
	}
	out = f.mustRun("robot", "list")
	if !strings.Contains(out, "*=repository:pull") {
		t.Errorf("list of system robots:\n%s", out)
	}
	out = f.mustRun("robot", "show", "team+ci")
	if !strings.Contains(out, "2027-01-15") || !strings.Contains(out, "CI") {
		t.Errorf("show:\n%s", out)
	}
	out = f.mustRun("robot", "disable", "ci", "--project", "team")
	if !strings.Contains(out, "enabled      false") {
		t.Errorf("disable:\n%s", out)
	}
	f.mustRun("robot", "enable", "robot$team+ci")
	out, errOut, err := f.runCLI("", "robot", "refresh-secret", "team+ci")
	if err != nil || !strings.Contains(out, "secret: n3w-secret") || !strings.Contains(errOut, "will not be shown again") {
		t.Errorf("refresh-secret: %v\n%s%s", err, out, errOut)
	}
	f.mustRun("robot", "delete", "team+ci")

	f.wantRequests(
		[2]string{"GET /api/v1/projects/team/robots", ""},
		[2]string{"GET /api/v1/robots", ""},
		[2]string{"GET /api/v1/robots/robot$team+ci", ""},
		[2]string{"GET /api/v1/robots/robot$team+ci", ""},
		[2]string{"PUT /api/v1/robots/robot$team+ci", `{"disable":true}`},
		[2]string{"GET /api/v1/robots/robot$team+ci", ""},
		[2]string{"PUT /api/v1/robots/robot$team+ci", `{"disable":false}`},
		[2]string{"POST /api/v1/robots/robot$team+ci/secret", `{}`},
		[2]string{"DELETE /api/v1/robots/robot$team+ci", ""},
	)
}
