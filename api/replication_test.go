package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/replicate"
)

// fakeRepl overrides the engine methods a test needs; the others are
// nil and must not be called.
type fakeRepl struct {
	api.Replication
	endpoints map[string]replicate.EndpointSpec
	execErr   error
	gotLimit  int
}

func (f *fakeRepl) GetEndpoint(_ context.Context, name string) (replicate.EndpointView, error) {
	s, ok := f.endpoints[name]
	if !ok {
		return replicate.EndpointView{}, fmt.Errorf("endpoint %s: %w", name, oci.ErrNotFound)
	}
	return replicate.EndpointView{Name: s.Name, URL: s.URL, User: s.User, HasPassword: s.Password != ""}, nil
}

func (f *fakeRepl) PutEndpoint(ctx context.Context, s replicate.EndpointSpec) (replicate.EndpointView, error) {
	if strings.Contains(s.URL, "unreachable") {
		return replicate.EndpointView{}, fmt.Errorf("%w: %s", replicate.ErrUnreachable, s.URL)
	}
	f.endpoints[s.Name] = s
	return f.GetEndpoint(ctx, s.Name)
}

func (f *fakeRepl) Execution(context.Context, uint64) (policy.Execution, error) {
	return policy.Execution{}, f.execErr
}

func (f *fakeRepl) Executions(_ context.Context, _ string, _ uint64, n int) ([]policy.Execution, error) {
	f.gotLimit = n
	return []policy.Execution{}, nil
}

func replHandler(t *testing.T, f *fakeRepl) http.Handler {
	return newHandler(t, &fakeGC{}, users()).WithReplication(f)
}

func TestReplicationAPI(t *testing.T) {
	f := &fakeRepl{endpoints: map[string]replicate.EndpointSpec{}}
	h := replHandler(t, f)
	admin := func(r *http.Request) { r.SetBasicAuth("admin", "secret") }
	bob := func(r *http.Request) { r.SetBasicAuth("bob", "pw") }

	if rec := do(t, h, http.MethodGet, "/api/v1/endpoints/eu", "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("anonymous: %d", rec.Code)
	}
	if rec := do(t, h, http.MethodGet, "/api/v1/endpoints/eu", "", bob); rec.Code != http.StatusForbidden {
		t.Errorf("not an admin: %d", rec.Code)
	}

	body := `{"name":"eu","url":"https://eu.example","user":"u","password":"hunter2"}`
	rec := do(t, h, http.MethodPost, "/api/v1/endpoints", body, admin)
	if rec.Code != http.StatusCreated || strings.Contains(rec.Body.String(), "hunter2") || !strings.Contains(rec.Body.String(), `"has_password":true`) {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, h, http.MethodPost, "/api/v1/endpoints", body, admin); rec.Code != http.StatusConflict {
		t.Errorf("create again: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, h, http.MethodGet, "/api/v1/endpoints/eu", "", admin); rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "hunter2") {
		t.Errorf("show: %d %s", rec.Code, rec.Body)
	}
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{http.MethodGet, "/api/v1/endpoints/nope", "", http.StatusNotFound},
		{http.MethodPost, "/api/v1/endpoints", `{"name":"x","url":"http://unreachable"}`, http.StatusUnprocessableEntity},
		{http.MethodPost, "/api/v1/endpoints", `{"name":"x","colour":"red"}`, http.StatusBadRequest},
		{http.MethodPost, "/api/v1/endpoints", strings.Repeat("x", 70<<10), http.StatusBadRequest},
		{http.MethodPut, "/api/v1/endpoints/a", `{"name":"b","url":"http://h"}`, http.StatusBadRequest},
		{http.MethodGet, "/api/v1/executions/zero", "", http.StatusBadRequest},
		{http.MethodGet, "/api/v1/replication/status?repo=a", "", http.StatusBadRequest},
	} {
		if rec := do(t, h, tt.method, tt.path, tt.body, admin); rec.Code != tt.want {
			t.Errorf("%s %s: %d, want %d: %s", tt.method, tt.path, rec.Code, tt.want, rec.Body)
		}
	}

	// Errors of the engine: no quorum is 503 with Retry-After; anything
	// unknown is a 500 that does not show its cause.
	f.execErr = fmt.Errorf("apply: %w", oci.ErrUnavailable)
	rec = do(t, h, http.MethodGet, "/api/v1/executions/7", "", admin)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("unavailable: %d %v", rec.Code, rec.Header())
	}
	f.execErr = errors.New("open /var/lib/berth/state.db: disk on fire")
	rec = do(t, h, http.MethodGet, "/api/v1/executions/7", "", admin)
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "state.db") {
		t.Errorf("internal: %d %s", rec.Code, rec.Body)
	}

	// Paging is bounded.
	do(t, h, http.MethodGet, "/api/v1/executions?limit=100000", "", admin)
	if f.gotLimit != 500 {
		t.Errorf("limit %d, want the cap 500", f.gotLimit)
	}
	do(t, h, http.MethodGet, "/api/v1/executions", "", admin)
	if f.gotLimit != 50 {
		t.Errorf("default limit %d", f.gotLimit)
	}
}
