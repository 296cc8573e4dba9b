package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
)

// fakeGC is a GCRunner whose behaviour is a function field.
type fakeGC struct {
	GCFunc func(ctx context.Context, dryRun bool) (registry.GCResult, error)
}

func (f *fakeGC) GC(ctx context.Context, dryRun bool) (registry.GCResult, error) {
	return f.GCFunc(ctx, dryRun)
}

// fakeStore is a Store that knows accounts only; its other methods are
// nil and must not be called.
type fakeStore struct {
	api.Store
	AuthenticateFunc func(ctx context.Context, name, secret string) (policy.Account, bool, error)
}

func (f *fakeStore) Authenticate(ctx context.Context, name, secret string) (policy.Account, bool, error) {
	return f.AuthenticateFunc(ctx, name, secret)
}

func (f *fakeStore) LookupAccount(_ context.Context, name string) (policy.Account, error) {
	switch name {
	case "admin":
		return policy.Account{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: name, Admin: true}}, nil
	case "bob":
		return policy.Account{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: name}}, nil
	}
	return policy.Account{}, fmt.Errorf("user %s: %w", name, oci.ErrNotFound)
}

func (f *fakeStore) RecordEvent(policy.AuditEvent) {}

func (f *fakeStore) RecordPull(string, oci.Digest, policy.Actor) {}

// fakeKeys is one token signing key, "k1".
type fakeKeys struct{ key ed25519.PrivateKey }

func (k fakeKeys) SigningKey(context.Context) (string, ed25519.PrivateKey, time.Time, error) {
	return "k1", k.key, time.Time{}, nil
}

func (k fakeKeys) VerifyKey(kid string) (ed25519.PublicKey, error) {
	if kid != "k1" {
		return nil, fmt.Errorf("key %s: %w", kid, oci.ErrNotFound)
	}
	return k.key.Public().(ed25519.PublicKey), nil
}

func (fakeKeys) EnsureTokenKey(context.Context) error { return nil }

// newAuth is the registry's authenticator over s, as cmd builds it over
// the node, with a signing key of its own.
func newAuth(t *testing.T, s *fakeStore) *registry.AccessAuth {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, err := registry.NewAccessAuth(registry.DefaultAuthConfig(), s, fakeKeys{key}, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tokenFor fetches an access token (of no scope) for name from a's token
// service.
func tokenFor(t *testing.T, a *registry.AccessAuth, name, secret string) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, registry.TokenPath+"?service=berth", nil)
	req.SetBasicAuth(name, secret)
	rec := httptest.NewRecorder()
	a.TokenHandler().ServeHTTP(rec, req)
	var resp struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); rec.Code != http.StatusOK || err != nil || resp.Token == "" {
		t.Fatalf("token for %s: %d %s", name, rec.Code, rec.Body)
	}
	return resp.Token
}

// bearerAuth authenticates a request with token tok.
func bearerAuth(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

// users knows admin/secret (an admin) and bob/pw (not an admin).
func users() *fakeStore {
	return &fakeStore{AuthenticateFunc: func(ctx context.Context, name, secret string) (policy.Account, bool, error) {
		if (name == "admin" && secret == "secret") || (name == "bob" && secret == "pw") {
			acct, err := (&fakeStore{}).LookupAccount(ctx, name)
			return acct, true, err
		}
		return policy.Account{}, false, nil
	}}
}

// newHandler is the API over s, authenticating with the registry's
// authenticator over s.
func newHandler(t *testing.T, gc api.GCRunner, s *fakeStore) *api.Handler {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	return api.New(gc, s, api.Info{Version: "test", NodeID: "n1"}, logger).WithAuthenticator(newAuth(t, s))
}

func do(t *testing.T, h http.Handler, method, target, body string, auth func(*http.Request)) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	if auth != nil {
		auth(req)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func basic(user, password string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, password) }
}

func errorOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	var e api.ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", rec.Body.String(), err)
	}
	if e.Error == "" {
		t.Fatalf("error body %q has no error", rec.Body.String())
	}
	return e.Error
}

func TestGCAuth(t *testing.T) {
	calls := 0
	gc := &fakeGC{GCFunc: func(context.Context, bool) (registry.GCResult, error) {
		calls++
		return registry.GCResult{}, nil
	}}
	h := newHandler(t, gc, users())

	tests := []struct {
		name       string
		auth       func(*http.Request)
		wantStatus int
		challenge  bool
	}{
		{"no credentials", nil, http.StatusUnauthorized, true},
		{"wrong password", basic("admin", "nope"), http.StatusUnauthorized, true},
		{"unknown user", basic("eve", "secret"), http.StatusUnauthorized, true},
		{"not an admin", basic("bob", "pw"), http.StatusForbidden, false},
		{"admin", basic("admin", "secret"), http.StatusOK, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls = 0
			rec := do(t, h, http.MethodPost, "/api/v1/gc", "", tt.auth)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.wantStatus, rec.Body)
			}
			got := rec.Header().Get("WWW-Authenticate")
			if tt.challenge && got != `Basic realm="berth"` {
				t.Errorf("WWW-Authenticate = %q, want Basic realm=\"berth\"", got)
			}
			if !tt.challenge && got != "" {
				t.Errorf("unexpected WWW-Authenticate %q", got)
			}
			wantCalls := 0
			if tt.wantStatus == http.StatusOK {
				wantCalls = 1
			} else {
				errorOf(t, rec)
			}
			if calls != wantCalls {
				t.Errorf("GC called %d times, want %d", calls, wantCalls)
			}
		})
	}
}

func TestGCCheckPasswordError(t *testing.T) {
	u := &fakeStore{AuthenticateFunc: func(context.Context, string, string) (policy.Account, bool, error) {
		return policy.Account{}, false, errors.New("open /secret/path/state.db: boom")
	}}
	h := newHandler(t, &fakeGC{}, u)
	rec := do(t, h, http.MethodPost, "/api/v1/gc", "", basic("admin", "secret"))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	if msg := errorOf(t, rec); strings.Contains(msg, "/secret/path") {
		t.Errorf("error %q leaks the internal error", msg)
	}
}

func TestGCDryRunAndResult(t *testing.T) {
	tests := []struct {
		name       string
		target     string
		body       string
		wantStatus int
		wantDryRun bool
	}{
		{"default", "/api/v1/gc", "", http.StatusOK, false},
		{"query", "/api/v1/gc?dry_run=true", "", http.StatusOK, true},
		{"query false", "/api/v1/gc?dry_run=false", "", http.StatusOK, false},
		{"body", "/api/v1/gc", `{"dry_run": true}`, http.StatusOK, true},
		{"body false", "/api/v1/gc", `{"dry_run": false}`, http.StatusOK, false},
		{"bad query", "/api/v1/gc?dry_run=maybe", "", http.StatusBadRequest, false},
		{"bad body", "/api/v1/gc", `{"dry_run": "yes"}`, http.StatusBadRequest, false},
		{"unknown body key", "/api/v1/gc", `{"dryrun": true}`, http.StatusBadRequest, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotDryRun *bool
			gc := &fakeGC{GCFunc: func(_ context.Context, dryRun bool) (registry.GCResult, error) {
				gotDryRun = &dryRun
				return registry.GCResult{Scanned: 10, Deleted: 3, BytesFreed: 4096, Duration: 1500 * time.Millisecond, DryRun: dryRun}, nil
			}}
			rec := do(t, newHandler(t, gc, users()), http.MethodPost, tt.target, tt.body, basic("admin", "secret"))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus != http.StatusOK {
				errorOf(t, rec)
				if gotDryRun != nil {
					t.Fatal("GC ran for a bad request")
				}
				return
			}
			if gotDryRun == nil || *gotDryRun != tt.wantDryRun {
				t.Fatalf("GC dryRun = %v, want %v", gotDryRun, tt.wantDryRun)
			}
			var res api.GCResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			want := api.GCResponse{Scanned: 10, Deleted: 3, BytesFreed: 4096, DurationSeconds: 1.5, DryRun: tt.wantDryRun}
			if res != want {
				t.Errorf("response = %+v, want %+v", res, want)
			}
		})
	}
}

func TestGCFailure(t *testing.T) {
	gc := &fakeGC{GCFunc: func(context.Context, bool) (registry.GCResult, error) {
		return registry.GCResult{}, errors.New("remove /data/blobs/sha256/ab/cd: permission denied")
	}}
	rec := do(t, newHandler(t, gc, users()), http.MethodPost, "/api/v1/gc", "", basic("admin", "secret"))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	if msg := errorOf(t, rec); strings.Contains(msg, "/data/") {
		t.Errorf("error %q leaks a file path", msg)
	}
}

func TestRouting(t *testing.T) {
	h := newHandler(t, &fakeGC{}, users())

	rec := do(t, h, http.MethodGet, "/api/v1/gc", "", basic("admin", "secret"))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodPost {
		t.Errorf("GET gc: status %d Allow %q, want 405 POST", rec.Code, rec.Header().Get("Allow"))
	}
	errorOf(t, rec)

	rec = do(t, h, http.MethodGet, "/api/v1/nope", "", nil)
	if rec.Code != http.StatusNotFound {
		t.Errorf("unknown path: status %d, want 404", rec.Code)
	}
	errorOf(t, rec)

	rec = do(t, h, http.MethodGet, "/api/v1/system/info", "", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("info: status %d", rec.Code)
	}
	var info api.Info
	if err := json.Unmarshal(rec.Body.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	if info != (api.Info{Version: "test", NodeID: "n1"}) {
		t.Errorf("info = %+v", info)
	}
}

func TestCredentialCache(t *testing.T) {
	calls := 0
	s := users()
	check := s.AuthenticateFunc
	s.AuthenticateFunc = func(ctx context.Context, name, secret string) (policy.Account, bool, error) {
		calls++
		return check(ctx, name, secret)
	}
	gc := &fakeGC{GCFunc: func(context.Context, bool) (registry.GCResult, error) { return registry.GCResult{}, nil }}
	h := newHandler(t, gc, s)
	for range 3 {
		if rec := do(t, h, http.MethodPost, "/api/v1/gc", "", basic("admin", "secret")); rec.Code != http.StatusOK {
			t.Fatalf("admin: %d", rec.Code)
		}
	}
	if calls != 1 {
		t.Errorf("a good password was checked %d times, want once (then cached)", calls)
	}
	calls = 0
	for range 2 {
		if rec := do(t, h, http.MethodPost, "/api/v1/gc", "", basic("admin", "wrong")); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong password: %d", rec.Code)
		}
	}
	if calls != 2 {
		t.Errorf("a wrong password was checked %d times, want every time", calls)
	}
}

func TestBearer(t *testing.T) {
	gc := &fakeGC{GCFunc: func(context.Context, bool) (registry.GCResult, error) { return registry.GCResult{}, nil }}
	s := users()
	// gone logs in, and is gone by the time its token comes back.
	check := s.AuthenticateFunc
	s.AuthenticateFunc = func(ctx context.Context, name, secret string) (policy.Account, bool, error) {
		if name == "gone" && secret == "pw" {
			return policy.Account{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: name}}, true, nil
		}
		return check(ctx, name, secret)
	}
	auth := newAuth(t, s)
	admin := tokenFor(t, auth, "admin", "secret")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := api.New(gc, s, api.Info{Version: "test", NodeID: "n1"}, logger)
	if rec := do(t, h, http.MethodPost, "/api/v1/gc", "", bearerAuth(admin)); rec.Code != http.StatusUnauthorized {
		t.Errorf("bearer without an authenticator: %d, want 401", rec.Code)
	}
	h = h.WithAuthenticator(auth)
	for _, tt := range []struct {
		name, tok string
		want      int
	}{
		{"admin", admin, http.StatusOK},
		{"bob", tokenFor(t, auth, "bob", "pw"), http.StatusForbidden}, // the state says bob is no admin
		{"gone", tokenFor(t, auth, "gone", "pw"), http.StatusUnauthorized},
		{"forged", "forged", http.StatusUnauthorized},
	} {
		if rec := do(t, h, http.MethodPost, "/api/v1/gc", "", bearerAuth(tt.tok)); rec.Code != tt.want {
			t.Errorf("token of %s: %d, want %d", tt.name, rec.Code, tt.want)
		}
	}
}
