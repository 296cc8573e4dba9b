package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/policy"
)

func readLoginFile(t *testing.T) (string, os.FileMode) {
	t.Helper()
	p, err := loginPath()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), fi.Mode().Perm()
}

func TestLoginSavesRefreshTokenAndCommandsUseBearer(t *testing.T) {
	f := newFakeAPI(t)
	// Flags after the argument, the password on standard input.
	out, _, err := f.runCLI("Al1cePassword\n", "login", f.URL(), "-u", "alice", "--password-stdin")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "logged in to "+f.URL()+" as alice") {
		t.Errorf("login output %q", out)
	}
	grants := f.tokenGrants()
	if len(grants) != 1 {
		t.Fatalf("%d token requests, want 1", len(grants))
	}
	for k, want := range map[string]string{
		"grant_type": "password", "username": "alice", "password": "Al1cePassword",
		"service": "berth", "client_id": "berth-cli", "access_type": "offline",
	} {
		if got := grants[0].Get(k); got != want {
			t.Errorf("password grant %s = %q, want %q", k, got, want)
		}
	}

	file, mode := readLoginFile(t)
	if mode != 0o600 {
		t.Errorf("login file mode %v, want 0600", mode)
	}
	if strings.Contains(file, "Al1cePassword") || strings.Contains(file, `"password"`) {
		t.Errorf("the password is in the login file:\n%s", file)
	}
	var saved login
	if err := json.Unmarshal([]byte(file), &saved); err != nil {
		t.Fatal(err)
	}
	if saved.Server != f.URL() || saved.User != "alice" || saved.RefreshToken != "refresh-alice-1" {
		t.Errorf("saved login %+v", saved)
	}

	// A command with two API calls trades the refresh token once.
	f.on("GET", "executions/1", ok(policy.Execution{ID: 1}))
	f.on("GET", "executions/1/tasks", ok([]policy.Task{}))
	f.mustRun("replicate", "execution", "1")
	if n := len(f.requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
	for _, r := range f.requests() {
		if r.Who != "bearer alice" {
			t.Errorf("%s %s authenticated as %q, want bearer alice", r.Method, r.Path, r.Who)
		}
	}
	grants = f.tokenGrants()[1:]
	if len(grants) != 1 {
		t.Fatalf("%d token requests for one command, want 1 (the access token is kept for the run)", len(grants))
	}
	if g := grants[0]; g.Get("grant_type") != "refresh_token" || g.Get("refresh_token") != "refresh-alice-1" ||
		g.Get("service") != "berth" || g.Get("client_id") != "berth-cli" || g.Has("password") {
		t.Errorf("refresh grant %v", g)
	}
}

func TestLoginRefused(t *testing.T) {
	f := newFakeAPI(t)
	_, _, err := f.runCLI("wrong\n", "login", f.URL(), "--user", "alice", "--password-stdin")
	if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "invalid username or password") {
		t.Fatalf("err = %v, want the refusal with the server's message", err)
	}
	if p, _ := loginPath(); fileExists(p) {
		t.Error("a refused login was saved")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestExpiredRefreshTokenSaysLogInAgain(t *testing.T) {
	f := newFakeAPI(t)
	f.loginAs("alice", "refresh-revoked")
	f.on("GET", "policies", ok([]policy.Rule{}))
	_, _, err := f.runCLI("", "policy", "list")
	if !errors.Is(err, errLoginExpired) {
		t.Fatalf("err = %v, want errLoginExpired", err)
	}
	if want := "log in again with `berth login " + f.URL() + " -u alice`"; !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to say %s", err, want)
	}
	if len(f.requests()) != 0 {
		t.Error("the API was called without a token")
	}
}

func TestBearerRefusedIsRetriedOnceWithANewToken(t *testing.T) {
	f := newFakeAPI(t)
	f.loginAs("alice", fakeAliceRefresh)
	unauthorized := fakeAnswer{Status: http.StatusUnauthorized, Body: api.ErrorResponse{Error: "token signed by a retired key"}}
	f.on("GET", "policies", unauthorized, ok([]policy.Rule{}))
	f.mustRun("policy", "list")
	if n := len(f.tokenGrants()); n != 2 {
		t.Errorf("%d token requests, want 2 (the refused token replaced once)", n)
	}

	f.on("GET", "policies", unauthorized)
	_, _, err := f.runCLI("", "policy", "list")
	if !errors.Is(err, errLoginExpired) || !strings.Contains(err.Error(), "retired key") {
		t.Errorf("err = %v, want a login to redo, with the server's message", err)
	}
}

func TestExplicitCredentialsUseBasicAuth(t *testing.T) {
	f := newFakeAPI(t)
	f.loginAs("alice", fakeAliceRefresh)
	f.on("GET", "policies", ok([]policy.Rule{}))
	f.mustRun("policy", "list", "--user", "admin", "--password", fakeAdminPassword)
	t.Setenv("BERTH_USER", "admin")
	t.Setenv("BERTH_PASSWORD", fakeAdminPassword)
	f.mustRun("policy", "list")
	rs := f.requests()
	if len(rs) != 2 {
		t.Fatalf("%d requests, want 2", len(rs))
	}
	for _, r := range rs {
		if r.Who != "basic admin" {
			t.Errorf("%s %s authenticated as %q, want basic admin", r.Method, r.Path, r.Who)
		}
	}
	if n := len(f.tokenGrants()); n != 0 {
		t.Errorf("%d token requests with explicit credentials", n)
	}
}

func TestLoginSavedWithAPasswordStillWorks(t *testing.T) {
	f := newFakeAPI(t)
	if _, err := saveLogin(login{Server: f.URL(), User: "admin", Password: fakeAdminPassword}); err != nil {
		t.Fatal(err)
	}
	f.on("POST", "gc", ok(api.GCResponse{Scanned: 3, DryRun: true}))
	f.mustRun("gc", "--dry-run")
	if rs := f.requests(); len(rs) != 1 || rs[0].Who != "basic admin" {
		t.Fatalf("requests %+v, want one with basic admin", rs)
	}

	// The next login replaces the password with a refresh token.
	if _, _, err := f.runCLI(fakeAdminPassword+"\n", "login", f.URL(), "--password-stdin"); err != nil {
		t.Fatal(err)
	}
	if file, _ := readLoginFile(t); strings.Contains(file, fakeAdminPassword) || !strings.Contains(file, "refresh_token") {
		t.Errorf("login file after a new login:\n%s", file)
	}
}

func TestExistingCommandsUseTheToken(t *testing.T) {
	f := newFakeAPI(t)
	f.loginAs("alice", fakeAliceRefresh)
	f.on("POST", "gc", ok(api.GCResponse{}))
	f.on("GET", "endpoints", ok([]any{}))
	f.on("GET", "cluster", ok(map[string]any{"node_id": "n1"}))
	f.mustRun("gc")
	f.mustRun("endpoint", "list")
	f.mustRun("cluster", "status")
	rs := f.requests()
	if len(rs) != 3 {
		t.Fatalf("%d requests, want 3", len(rs))
	}
	for _, r := range rs {
		if r.Who != "bearer alice" {
			t.Errorf("%s %s authenticated as %q, want bearer alice", r.Method, r.Path, r.Who)
		}
	}
}

func TestLogout(t *testing.T) {
	f := newFakeAPI(t)
	f.loginAs("alice", fakeAliceRefresh)
	f.mustRun("logout")
	if p, _ := loginPath(); fileExists(p) {
		t.Error("logout left the saved login")
	}
	// Without a login or a password, a command says how to give one.
	_, _, err := f.runCLI("", "policy", "list", "--data", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "berth login") {
		t.Errorf("err = %v, want a hint", err)
	}
}

func TestTokenSourceRenewsBeforeExpiry(t *testing.T) {
	f := newFakeAPI(t)
	now := time.Unix(1_700_000_000, 0)
	s := newTokenSource(f.URL(), "alice", fakeAliceRefresh)
	s.now = func() time.Time { return now }
	first, err := s.token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(4 * time.Minute) // of 5
	if again, err := s.token(t.Context()); err != nil || again != first {
		t.Errorf("a token valid for another minute was replaced: %q, %v", again, err)
	}
	now = now.Add(55 * time.Second) // 5 s left
	if renewed, err := s.token(t.Context()); err != nil || renewed == first {
		t.Errorf("a token about to expire was kept: %q, %v", renewed, err)
	}
	if n := len(f.tokenGrants()); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestTokenSourceKeepsARotatedRefreshToken(t *testing.T) {
	srv := newTokenServer(t, `{"access_token":"a1","expires_in":60,"refresh_token":"rotated"}`)
	var kept string
	s := newTokenSource(srv, "alice", "old")
	s.keep = func(r string) error { kept = r; return nil }
	if _, err := s.token(t.Context()); err != nil {
		t.Fatal(err)
	}
	if kept != "rotated" || s.refresh != "rotated" {
		t.Errorf("kept %q, holds %q; want the rotated refresh token", kept, s.refresh)
	}
	if auth, _ := (apiClient{user: "alice", tokens: s}).registryAuth().Authorization(); auth.IdentityToken != "rotated" || auth.Password != "" {
		t.Errorf("registry auth %+v, want the refresh token as identity token", auth)
	}
}

// newTokenServer answers every token request with body.
func newTokenServer(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestErrorMessage(t *testing.T) {
	for in, want := range map[string]string{
		`{"error":"project team is not empty"}`:                                    "project team is not empty",
		`{"error":"invalid_grant","error_description":"refresh token expired"}`:    "invalid_grant: refresh token expired",
		`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`: "authentication required",
		`{"errors":[{"code":"DENIED"}]}`:                                           "DENIED",
		"  no JSON here\n":                                                         "no JSON here",
		`{"error":{"nested":true}}`:                                                `{"error":{"nested":true}}`,
	} {
		if got := errorMessage([]byte(in)); got != want {
			t.Errorf("errorMessage(%s) = %q, want %q", in, got, want)
		}
	}
	if got := errorMessage([]byte(strings.Repeat("x", 2000))); len(got) > 600 {
		t.Errorf("a long body is not cut: %d bytes", len(got))
	}
	// OAuth2's refusal of a refresh token is a 400 invalid_grant.
	if !(&tokenError{Status: 400, Msg: "invalid_grant: expired"}).refused() || (&tokenError{Status: 400, Msg: "invalid_request"}).refused() {
		t.Error("refused() misreads a 400")
	}
}
