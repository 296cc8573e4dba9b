package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

func TestParseRetentionRule(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want policy.RetentionRule
	}{
		{"latestPushedK:5 repos=** tags=**", policy.RetentionRule{Kind: policy.RetainLatestPushed, Param: 5, Repos: "**", Tags: "**"}},
		{"latestPushedK:5", policy.RetentionRule{Kind: policy.RetainLatestPushed, Param: 5, Repos: "**", Tags: "**"}},
		{"latest-pulled:3 tags=v*", policy.RetentionRule{Kind: policy.RetainLatestPulled, Param: 3, Repos: "**", Tags: "v*"}},
		{"nDaysSinceLastPush:30 repos=!tmp/** +untagged", policy.RetentionRule{Kind: policy.RetainPushedWithin, Param: 30, Repos: "tmp/**", ExcludeRepos: true, Tags: "**", Untagged: true}},
		{"pulledWithin:7d tags=!{dev,test}-*", policy.RetentionRule{Kind: policy.RetainPulledWithin, Param: 7, Repos: "**", Tags: "{dev,test}-*", ExcludeTags: true}},
		{"ALWAYS tags=release-* disabled", policy.RetentionRule{Kind: policy.RetainAlways, Repos: "**", Tags: "release-*", Disabled: true}},
		{"  always   repos=app  ", policy.RetentionRule{Kind: policy.RetainAlways, Repos: "app", Tags: "**"}},
	} {
		got, err := parseRetentionRule(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseRetentionRule(%q) = %+v, %v\nwant %+v", tt.in, got, err, tt.want)
			continue
		}
		// What is printed reads back the same.
		again, err := parseRetentionRule(formatRetentionRule(got))
		if err != nil || again != got {
			t.Errorf("%q printed as %q reads back as %+v, %v", tt.in, formatRetentionRule(got), again, err)
		}
	}
	for in, want := range map[string]string{
		"":                              "empty",
		"keepSome:5":                    "kind",
		"latestPushedK":                 "needs a count",
		"latestPushedK:x":               "count",
		"latestPushedK:-1":              "count",
		"always:3":                      "no count",
		"latestPushedK:5 repos=":        "glob",
		"latestPushedK:5 tags=[":        "glob",
		"latestPushedK:5 repo=**":       "want KIND",
		"latestPushedK:5 untagged":      "want KIND",
		"latestPushedK:5 tags=a tags=b": "twice",
		"latestPushedK:2000000":         "count from 0",
	} {
		_, err := parseRetentionRule(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseRetentionRule(%q) = %v, want an error about %s", in, err, want)
		}
	}
}

func TestRetentionSetShowClear(t *testing.T) {
	f := loggedIn(t)
	f.on("PUT", "projects/team/retention", fakeAnswer{Status: http.StatusNoContent})
	f.on("GET", "projects/team/retention", ok(policy.RetentionPolicy{Schedule: "0 3 * * *", Rules: []policy.RetentionRule{
		{Kind: policy.RetainLatestPushed, Param: 10, Repos: "**", Tags: "v*"},
	}}))

	out := f.mustRun("retention", "set", "team", "--rule", "latestPushedK:5 repos=** tags=v*", "--rule", "always tags=release-* +untagged", "--schedule", "@daily")
	f.wantRequests([2]string{"PUT /api/v1/projects/team/retention", `{"rules":[
		{"kind":"latestPushedK","param":5,"repos":"**","tags":"v*"},
		{"kind":"always","repos":"**","tags":"release-*","untagged":true}],"schedule":"@daily"}`})
	if !strings.Contains(out, "latestPushedK:5 repos=** tags=v*") || !strings.Contains(out, "schedule @daily") {
		t.Errorf("set output:\n%s", out)
	}
	// Without --schedule, the schedule stays; '' makes it by hand only.
	f.mustRun("retention", "set", "team", "--rule", "nDaysSinceLastPull:30")
	f.mustRun("retention", "set", "team", "--rule", "always", "--schedule", "")
	f.wantRequests(
		[2]string{"GET /api/v1/projects/team/retention", ""},
		[2]string{"PUT /api/v1/projects/team/retention", `{"rules":[{"kind":"nDaysSinceLastPull","param":30,"repos":"**","tags":"**"}],"schedule":"0 3 * * *"}`},
		[2]string{"PUT /api/v1/projects/team/retention", `{"rules":[{"kind":"always","repos":"**","tags":"**"}]}`},
	)

	out = f.mustRun("retention", "show", "team")
	if !strings.Contains(out, "schedule 0 3 * * *") || !strings.Contains(out, "1  latestPushedK:10 repos=** tags=v*") {
		t.Errorf("show:\n%s", out)
	}
	f.mustRun("retention", "clear", "team")
	f.wantRequests([2]string{"GET /api/v1/projects/team/retention", ""}, [2]string{"PUT /api/v1/projects/team/retention", `{"rules":[]}`})

	for _, tt := range []struct {
		args []string
		err  string
	}{
		{[]string{"retention", "set", "team"}, "at least one --rule"},
		{[]string{"retention", "set", "team", "--rule", "keep:5"}, `kind "keep"`},
		{[]string{"retention", "set", "team", "--rule", "always", "--schedule", "every day"}, `schedule "every day"`},
	} {
		if _, _, err := f.runCLI("", tt.args...); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: err = %v, want one about %s", tt.args, err, tt.err)
		}
	}
	f.wantRequests()
}

func TestRetentionRun(t *testing.T) {
	f := loggedIn(t)
	decisions := []policy.RetentionDecision{
		{Artifact: policy.Artifact{Repo: "team/app", Digest: oci.Digest("sha256:" + strings.Repeat("a", 64)), Tags: []string{"v1"}}, Reason: "no rule retains it"},
		{Artifact: policy.Artifact{Repo: "team/app", Digest: oci.Digest("sha256:" + strings.Repeat("b", 64)), Tags: []string{"v2"}}, Retain: true, Reason: "latestPushedK(1) repos=** tags=**"},
	}
	running := policy.RetentionRun{ID: 7, Project: "team", DryRun: true, Trigger: "manual", Status: policy.RunRunning}
	done := running
	done.Status, done.Retained, done.Deleted, done.Decisions = policy.RunSucceeded, 1, 1, decisions
	f.on("POST", "projects/team/retention/run", fakeAnswer{Status: http.StatusAccepted, Body: running})
	f.on("GET", "projects/team/retention/runs/7", ok(running), ok(done))

	out := f.mustRun("retention", "run", "team", "--dry-run")
	f.wantRequests(
		[2]string{"POST /api/v1/projects/team/retention/run", `{"dry_run":true}`},
		[2]string{"GET /api/v1/projects/team/retention/runs/7", ""},
		[2]string{"GET /api/v1/projects/team/retention/runs/7", ""},
	)
	for _, want := range []string{"would delete  team/app", "no rule retains it", "keep", "latestPushedK(1)", "succeeded"} {
		if !strings.Contains(out, want) {
			t.Errorf("run output lacks %q:\n%s", want, out)
		}
	}

	failed := done
	failed.Status, failed.Error, failed.DryRun = policy.RunFailed, "no quorum", false
	f.on("POST", "projects/team/retention/run", fakeAnswer{Status: http.StatusAccepted, Body: failed})
	if _, _, err := f.runCLI("", "retention", "run", "team"); err == nil || !strings.Contains(err.Error(), "no quorum") {
		t.Errorf("failed run: %v", err)
	}
	f.wantRequests([2]string{"POST /api/v1/projects/team/retention/run", `{"dry_run":false}`})

	f.on("GET", "projects/team/retention/runs", ok([]policy.RetentionRun{done}))
	f.on("GET", "projects/team/retention/runs/7", ok(done))
	out = f.mustRun("retention", "runs", "team")
	if !strings.Contains(out, "7") || !strings.Contains(out, "manual") {
		t.Errorf("runs:\n%s", out)
	}
	out = f.mustRun("retention", "run-show", "team", "7", "-o", "json")
	var got policy.RetentionRun
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Decisions) != 2 {
		t.Errorf("run-show -o json: %v\n%s", err, out)
	}
	if _, _, err := f.runCLI("", "retention", "run-show", "team", "seven"); err == nil || !strings.Contains(err.Error(), `run id "seven"`) {
		t.Errorf("run-show with a bad id: %v", err)
	}
}

func TestImmutableCommands(t *testing.T) {
	f := loggedIn(t)
	f.on("POST", "projects/team/immutable", fakeAnswer{Status: http.StatusCreated, Body: policy.ImmutableRule{ID: 3, Repos: "**", Tags: "v*"}})
	f.on("GET", "projects/team/immutable", ok([]policy.ImmutableRule{{ID: 3, Repos: "tmp/**", ExcludeRepos: true, Tags: "v*"}}))
	f.on("DELETE", "projects/team/immutable/3", fakeAnswer{Status: http.StatusNoContent})

	out := f.mustRun("immutable", "add", "team", "--tags", "v*")
	if !strings.Contains(out, "3") || !strings.Contains(out, "v*") {
		t.Errorf("add:\n%s", out)
	}
	f.mustRun("immutable", "add", "team", "--repos", "tmp/**", "--exclude-repos", "--tags", "**", "--exclude-tags", "--disabled")
	out = f.mustRun("immutable", "list", "team")
	if !strings.Contains(out, "!tmp/**") {
		t.Errorf("list:\n%s", out)
	}
	f.mustRun("immutable", "remove", "team", "3")
	f.wantRequests(
		[2]string{"POST /api/v1/projects/team/immutable", `{"repos":"**","tags":"v*"}`},
		[2]string{"POST /api/v1/projects/team/immutable", `{"repos":"tmp/**","tags":"**","exclude_repos":true,"exclude_tags":true,"disabled":true}`},
		[2]string{"GET /api/v1/projects/team/immutable", ""},
		[2]string{"DELETE /api/v1/projects/team/immutable/3", ""},
	)
	for _, tt := range []struct {
		args []string
		err  string
	}{
		{[]string{"immutable", "add", "team"}, `"tags"`},
		{[]string{"immutable", "add", "team", "--tags", "["}, "glob"},
		{[]string{"immutable", "remove", "team", "x"}, `rule id "x"`},
		{[]string{"immutable", "remove", "team", "0"}, `rule id "0"`},
	} {
		if _, _, err := f.runCLI("", tt.args...); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: err = %v, want one about %s", tt.args, err, tt.err)
		}
	}
	f.wantRequests()
}
