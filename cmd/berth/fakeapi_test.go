package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// fakeAPI is a berth node as the client commands see it: the token service
// (/service/token, the OAuth2 password and refresh_token grants) and
// /api/v1 answering what each test sets, checking credentials as the API
// does and recording every request.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	passwords map[string]string // user → password
	refresh   map[string]string // refresh token → user
	access    map[string]string // access token → user
	n         int
	grants    []url.Values
	reqs      []fakeReq
	answers   map[string][]fakeAnswer // "METHOD /api/v1/path": answered in turn, the last one again
}

// fakeReq is a request /api/v1 received.
type fakeReq struct {
	Method, Path string
	Query        url.Values
	Who          string // "basic USER" or "bearer USER"
	Body         string
}

// fakeAnswer is an answer of /api/v1: Body is encoded as JSON (a string
// is sent as it is).
type fakeAnswer struct {
	Status int
	Body   any
	Header http.Header
}

const (
	fakeAdminPassword = "Adm1nPassword"
	fakeAliceRefresh  = "refresh-alice"
)

// newFakeAPI starts a fake node with users admin and alice (whose refresh
// token fakeAliceRefresh is valid), and points the saved login at a file
// of the test's own, with no BERTH_* variables.
func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{
		t:         t,
		passwords: map[string]string{"admin": fakeAdminPassword, "alice": "Al1cePassword"},
		refresh:   map[string]string{fakeAliceRefresh: "alice"},
		access:    map[string]string{},
		answers:   map[string][]fakeAnswer{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	for _, k := range []string{"BERTH_SERVER", "BERTH_USER", "BERTH_PASSWORD", "BERTH_DATA"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("BERTH_LOGIN_FILE", filepath.Join(t.TempDir(), "login.json"))
	prev := runPollInterval
	runPollInterval = 0
	t.Cleanup(func() { runPollInterval = prev })
	return f
}

// URL is the node's base URL.
func (f *fakeAPI) URL() string { return f.srv.URL }

// loginAs saves a login of user with refresh token, as `berth login` does.
func (f *fakeAPI) loginAs(user, refresh string) {
	f.t.Helper()
	if _, err := saveLogin(login{Server: f.URL(), User: user, RefreshToken: refresh}); err != nil {
		f.t.Fatal(err)
	}
}

// on sets the answers of method path (under /api/v1/), given in turn.
func (f *fakeAPI) on(method, path string, answers ...fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[method+" /api/v1/"+path] = answers
}

// ok is a 200 answer with body.
func ok(body any) fakeAnswer { return fakeAnswer{Status: http.StatusOK, Body: body} }

// requests returns what /api/v1 received.
func (f *fakeAPI) requests() []fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeReq(nil), f.reqs...)
}

// tokenGrants returns what the token service received.
func (f *fakeAPI) tokenGrants() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), f.grants...)
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == tokenPath {
		f.token(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	who := ""
	if u, p, ok := r.BasicAuth(); ok && p != "" && f.passwords[u] == p {
		who = "basic " + u
	} else if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && f.access[tok] != "" {
		who = "bearer " + f.access[tok]
	}
	if who == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="berth"`)
		writeFakeJSON(w, http.StatusUnauthorized, map[string]string{"error": "authentication required"})
		return
	}
	f.reqs = append(f.reqs, fakeReq{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Who: who, Body: string(body)})
	key := r.Method + " " + r.URL.Path
	as := f.answers[key]
	if len(as) == 0 {
		writeFakeJSON(w, http.StatusNotFound, map[string]string{"error": "no such route in the fake: " + key})
		return
	}
	a := as[0]
	if len(as) > 1 {
		f.answers[key] = as[1:]
	}
	for k, vs := range a.Header {
		w.Header()[k] = vs
	}
	if s, ok := a.Body.(string); ok {
		w.WriteHeader(a.Status)
		io.WriteString(w, s)
		return
	}
	if a.Body == nil {
		w.WriteHeader(a.Status)
		return
	}
	writeFakeJSON(w, a.Status, a.Body)
}

// token is the token service: the password grant gives a refresh token,
// the refresh_token grant an access token; refused grants are 401 with
// the registry's error body.
func (f *fakeAPI) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		writeFakeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported"})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants = append(f.grants, r.PostForm)
	refuse := func(msg string) {
		writeFakeJSON(w, http.StatusUnauthorized, map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": msg}}})
	}
	if r.PostForm.Get("service") != tokenService || r.PostForm.Get("client_id") != tokenClientID {
		writeFakeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	f.n++
	var user, refresh string
	switch r.PostForm.Get("grant_type") {
	case "password":
		user = r.PostForm.Get("username")
		if p := f.passwords[user]; p == "" || p != r.PostForm.Get("password") {
			refuse("invalid username or password")
			return
		}
		if r.PostForm.Get("access_type") == "offline" {
			refresh = fmt.Sprintf("refresh-%s-%d", user, f.n)
			f.refresh[refresh] = user
		}
	case "refresh_token":
		user = f.refresh[r.PostForm.Get("refresh_token")]
		if user == "" {
			refuse("refresh token expired or revoked")
			return
		}
	default:
		writeFakeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	access := fmt.Sprintf("access-%s-%d", user, f.n)
	f.access[access] = user
	writeFakeJSON(w, http.StatusOK, map[string]any{
		"access_token": access, "token": access, "expires_in": 300,
		"issued_at": "2025-01-01T00:00:00Z", "refresh_token": refresh,
	})
}

func writeFakeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// runCLI runs berth with args (the server is the fake's unless args name
// one) and stdin, and returns its standard output and error.
func (f *fakeAPI) runCLI(stdin string, args ...string) (stdout, stderr string, err error) {
	f.t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut}
	full := append([]string{"berth"}, args...)
	err = m.Run(f.t.Context(), full)
	return out.String(), errOut.String(), err
}

// mustRun is runCLI that fails the test on an error.
func (f *fakeAPI) mustRun(args ...string) string {
	f.t.Helper()
	out, errOut, err := f.runCLI("", args...)
	if err != nil {
		f.t.Fatalf("berth %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// wantRequests checks the requests /api/v1 received since the last check:
// each "METHOD /path" with, when not "", its JSON body (compared as JSON).
func (f *fakeAPI) wantRequests(want ...[2]string) {
	f.t.Helper()
	f.mu.Lock()
	got := f.reqs
	f.reqs = nil
	f.mu.Unlock()
	if len(got) != len(want) {
		var lines []string
		for _, r := range got {
			lines = append(lines, r.Method+" "+r.Path+" "+r.Body)
		}
		f.t.Fatalf("got %d requests, want %d:\n%s", len(got), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if line := got[i].Method + " " + got[i].Path; line != w[0] {
			f.t.Errorf("request %d: %s, want %s", i, line, w[0])
		}
		if w[1] != "" {
			jsonEqual(f.t, fmt.Sprintf("request %d (%s) body", i, w[0]), got[i].Body, w[1])
		}
	}
}

// jsonEqual checks that got and want hold the same JSON.
func jsonEqual(t *testing.T, what, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Errorf("%s: %q is not JSON: %v", what, got, err)
		return
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: want %q is not JSON: %v", what, want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, got, want)
	}
}
