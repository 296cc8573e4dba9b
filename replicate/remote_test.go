package replicate

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/berth-registry/berth/policy"
)

// fakeProjectAPI is the management API of a berth endpoint as
// EnsureProject sees it: it answers each "METHOD /path" with the status
// set for it (404 when none) and records what it received.
type fakeProjectAPI struct {
	mu     sync.Mutex
	status map[string]int
	got    []string // "METHOD /path user body"
}

func (f *fakeProjectAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	user, _, _ := r.BasicAuth()
	key := r.Method + " " + r.URL.Path
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, key+" "+user+" "+string(body))
	status, ok := f.status[key]
	if !ok {
		status = http.StatusNotFound
	}
	w.WriteHeader(status)
}

// requests returns what f received since the last call.
func (f *fakeProjectAPI) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	got := f.got
	f.got = nil
	return got
}

func newTestRemote(t *testing.T, typ string, api *fakeProjectAPI) *Remote {
	t.Helper()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	ep := policy.Endpoint{Name: "b", URL: srv.URL, Type: typ, User: "sync"}
	r, err := NewRemote(ep, "secret", nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wantRequests(t *testing.T, api *fakeProjectAPI, want ...string) {
	t.Helper()
	got := api.requests()
	if len(got) != len(want) {
		t.Fatalf("requests %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, got[i], want[i])
		}
	}
}

func TestEnsureProjectCreatesAMissingProjectOnce(t *testing.T) {
	api := &fakeProjectAPI{status: map[string]int{"POST /api/v1/projects": http.StatusCreated}}
	r := newTestRemote(t, policy.EndpointBerth, api)
	ctx := context.Background()

	r.EnsureProject(ctx, "team/app")
	wantRequests(t, api,
		"GET /api/v1/projects/team sync ",
		`POST /api/v1/projects sync {"name":"team","public":false}`)
	// Made sure of: not asked again, for any repository of it.
	r.EnsureProject(ctx, "team/other")
	wantRequests(t, api)

	// A project that exists is only looked up.
	api.status["GET /api/v1/projects/lib"] = http.StatusOK
	r.EnsureProject(ctx, "lib/app")
	wantRequests(t, api, "GET /api/v1/projects/lib sync ")

	// A repository outside any project asks nothing.
	r.EnsureProject(ctx, "app")
	wantRequests(t, api)
}

func TestEnsureProjectFailureIsNotRepeatedAtOnce(t *testing.T) {
	api := &fakeProjectAPI{status: map[string]int{"GET /api/v1/projects/team": http.StatusForbidden}}
	r := newTestRemote(t, policy.EndpointBerth, api)
	ctx := context.Background()

	// Neither 200 nor 404: nothing is created, and the next copy does not
	// ask again for a while.
	r.EnsureProject(ctx, "team/app")
	wantRequests(t, api, "GET /api/v1/projects/team sync ")
	r.EnsureProject(ctx, "team/app")
	wantRequests(t, api)

	// A refused creation is remembered the same way.
	api.status["POST /api/v1/projects"] = http.StatusForbidden
	r.EnsureProject(ctx, "other/app")
	wantRequests(t, api, "GET /api/v1/projects/other sync ", `POST /api/v1/projects sync {"name":"other","public":false}`)
	r.EnsureProject(ctx, "other/app")
	wantRequests(t, api)
}

func TestEnsureProjectOnlyAtBerthEndpoints(t *testing.T) {
	api := &fakeProjectAPI{}
	r := newTestRemote(t, policy.EndpointOCI, api)
	r.EnsureProject(context.Background(), "team/app")
	wantRequests(t, api)
}
