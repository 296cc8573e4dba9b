package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/policy"
)

func TestNextBefore(t *testing.T) {
	h := func(v ...string) http.Header { return http.Header{"Link": v} }
	for _, tt := range []struct {
		h    http.Header
		want string
	}{
		{h(`</api/v1/audit?before=41&limit=50>; rel="next"`), "41"},
		{h(`<http://node:5000/api/v1/audit?user=a&before=7>; rel=next`), "7"},
		{h(`</api/v1/audit?before=1>; rel="prev", </api/v1/audit?before=9>; rel="next"`), "9"},
		{h(`</x>; rel="first"`, `</api/v1/audit?before=3>; rel="next"`), "3"},
		{h(`</api/v1/audit?before=3>; rel="prev"`), ""},
		{h(`</api/v1/audit?limit=3>; rel="next"`), ""},
		{http.Header{}, ""},
	} {
		if got := nextBefore(tt.h); got != tt.want {
			t.Errorf("nextBefore(%q) = %q, want %q", tt.h.Values("Link"), got, tt.want)
		}
	}
}

func events(ids ...uint64) []policy.AuditEvent {
	out := make([]policy.AuditEvent, len(ids))
	for i, id := range ids {
		out[i] = policy.AuditEvent{ID: id, Time: int64(id) * 1e9, Actor: "alice", Op: policy.AuditPush, Resource: policy.AuditArtifact, Target: "team/app:v1", Project: "team"}
	}
	return out
}

func next(before string) http.Header {
	return http.Header{"Link": {`</api/v1/audit?before=` + before + `&limit=2>; rel="next"`}}
}

func TestAuditFilters(t *testing.T) {
	f := loggedIn(t)
	f.on("GET", "audit", fakeAnswer{Status: http.StatusOK, Body: events(9, 8, 7), Header: next("7")})
	out := f.mustRun("audit", "--user", "bob", "--project", "team", "--operation", "push", "--resource-type", "artifact",
		"--resource", "team/app", "--since", "24h", "--until", "2030-01-01", "--limit", "3")
	rs := f.requests()
	if len(rs) != 1 {
		t.Fatalf("%d requests, want 1 (the limit is reached)", len(rs))
	}
	q := rs[0].Query
	for k, want := range map[string]string{
		"user": "bob", "project": "team", "operation": "push", "resource_type": "artifact", "resource": "team/app",
		"until": "2030-01-01T00:00:00Z", "limit": "3",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("query %s = %q, want %q", k, got, want)
		}
	}
	since, err := time.Parse(time.RFC3339Nano, q.Get("since"))
	if err != nil || time.Since(since) < 23*time.Hour || time.Since(since) > 25*time.Hour {
		t.Errorf("since = %q, want 24 hours ago in RFC 3339", q.Get("since"))
	}
	// --user filters; it does not change who asks.
	if rs[0].Who != "bearer alice" {
		t.Errorf("asked as %q", rs[0].Who)
	}
	if !strings.HasPrefix(out, "TIME") || strings.Count(out, "team/app:v1") != 3 {
		t.Errorf("table:\n%s", out)
	}

	// Basic auth is --server-user and --server-password here.
	f.on("GET", "audit", ok(events(1)))
	f.mustRun("audit", "--server-user", "admin", "--server-password", fakeAdminPassword)
	if rs := f.requests(); rs[len(rs)-1].Who != "basic admin" {
		t.Errorf("with --server-password, asked as %q", rs[len(rs)-1].Who)
	}

	f.wantRequests([2]string{"GET /api/v1/audit", ""}, [2]string{"GET /api/v1/audit", ""})
	for _, tt := range []struct {
		args []string
		err  string
	}{
		{[]string{"audit", "--since", "yesterday"}, "--since"},
		{[]string{"audit", "--limit", "0"}, "limit 0"},
		{[]string{"audit", "extra"}, "takes no arguments"},
	} {
		if _, _, err := f.runCLI("", tt.args...); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: err = %v, want one about %s", tt.args, err, tt.err)
		}
	}
	f.wantRequests()
}

func TestAuditPages(t *testing.T) {
	f := loggedIn(t)
	// --limit 5 over pages of 2: asks for 5, then for what is left.
	f.on("GET", "audit",
		fakeAnswer{Status: http.StatusOK, Body: events(9, 8), Header: next("8")},
		fakeAnswer{Status: http.StatusOK, Body: events(7, 6), Header: next("6")},
		fakeAnswer{Status: http.StatusOK, Body: events(5), Header: next("5")},
	)
	out := f.mustRun("audit", "--limit", "5", "-o", "json")
	var got []policy.AuditEvent
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 5 || got[4].ID != 5 {
		t.Fatalf("%d events, %v", len(got), err)
	}
	rs := f.requests()
	if len(rs) != 3 {
		t.Fatalf("%d requests, want 3", len(rs))
	}
	for i, want := range [][2]string{{"", "5"}, {"8", "3"}, {"6", "1"}} {
		if b, l := rs[i].Query.Get("before"), rs[i].Query.Get("limit"); b != want[0] || l != want[1] {
			t.Errorf("request %d: before=%q limit=%q, want %q %q", i, b, l, want[0], want[1])
		}
	}

	// --all follows the links to the end.
	f.wantRequests(
		[2]string{"GET /api/v1/audit", ""}, [2]string{"GET /api/v1/audit", ""}, [2]string{"GET /api/v1/audit", ""})
	f.on("GET", "audit",
		fakeAnswer{Status: http.StatusOK, Body: events(9, 8), Header: next("8")},
		fakeAnswer{Status: http.StatusOK, Body: events(7, 6), Header: next("6")},
		fakeAnswer{Status: http.StatusOK, Body: events(5)},
	)
	out = f.mustRun("audit", "--all", "--limit", "2", "-o", "json")
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 5 {
		t.Fatalf("--all: %d events, %v", len(got), err)
	}
	if rs := f.requests(); len(rs) != 3 || rs[2].Query.Get("before") != "6" || rs[2].Query.Get("limit") != "2" {
		t.Errorf("--all requests %+v", rs)
	}

	f.on("GET", "audit", ok([]policy.AuditEvent{}))
	if out := f.mustRun("audit", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("no events in JSON: %q, want []", out)
	}

	// A server that sends the same page again does not loop.
	f.wantRequests(
		[2]string{"GET /api/v1/audit", ""}, [2]string{"GET /api/v1/audit", ""}, [2]string{"GET /api/v1/audit", ""},
		[2]string{"GET /api/v1/audit", ""})
	f.on("GET", "audit", fakeAnswer{Status: http.StatusOK, Body: events(9, 8), Header: next("8")})
	if _, _, err := f.runCLI("", "audit", "--all"); err == nil || !strings.Contains(err.Error(), "same next page") {
		t.Errorf("a loop of pages: %v", err)
	}
}
