package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/oci"
	"github.com/prometheus/client_golang/prometheus"
)

// Credentials of the suite's users.
const (
	adminUser = "admin"
	adminPass = "admin-secret"
	bobUser   = "bob"
	bobPass   = "bob-secret"
)

// fakeUsers is a PasswordChecker with two users, counting its checks.
type fakeUsers struct {
	checks atomic.Int64
	err    error
}

func (u *fakeUsers) CheckPassword(_ context.Context, user, password string) (bool, bool, error) {
	u.checks.Add(1)
	if u.err != nil {
		return false, false, u.err
	}
	switch {
	case user == adminUser && password == adminPass:
		return true, true, nil
	case user == bobUser && password == bobPass:
		return true, false, nil
	}
	return false, false, nil
}

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testOpts struct {
	noAnonymousPull bool       // AnonymousPull false
	auth            Authorizer // replaces the admin authorizer
	maxBlobSize     int64
	gcGrace         time.Duration
	// access builds the registry with NewAccessAuth over the node (users,
	// projects, robots and tokens in the state) and mounts its token
	// service, instead of the admin authorizer.
	access bool
}

// testRegistry is a Registry behind Middleware on an httptest server, as cmd
// mounts it.
type testRegistry struct {
	srv   *httptest.Server
	reg   *Registry
	state *faultState
	users *fakeUsers
	prom  *prometheus.Registry
	logs  *syncBuffer
	// user and pass are the credentials do sends unless told otherwise.
	user, pass string

	// With testOpts.access: the node behind state, the Authorizer and its
	// clock.
	node   *cluster.Node
	access *AccessAuth
	clock  *fakeClock
}

// newTestRegistry is the one way the suite builds a registry: every test
// goes through it, so the state behind it can be swapped in one place.
func newTestRegistry(t testing.TB, opts testOpts) *testRegistry {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.GCInterval = 0
	if opts.maxBlobSize > 0 {
		cfg.MaxBlobSize = opts.maxBlobSize
	}
	if opts.gcGrace > 0 {
		cfg.GCGrace = opts.gcGrace
	}
	cfg.AnonymousPull = !opts.noAnonymousPull
	tr := &testRegistry{
		state: newNodeState(t),
		users: &fakeUsers{},
		prom:  prometheus.NewRegistry(),
		logs:  &syncBuffer{},
		user:  adminUser,
		pass:  adminPass,
	}
	logger := slog.New(slog.NewJSONHandler(tr.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	auth := opts.auth
	if opts.access {
		tr.newAccessAuth(t, cfg.AnonymousPull, logger)
		auth = tr.access
	}
	if auth == nil {
		auth = NewAdminAuth(tr.users, cfg.AnonymousPull, "berth")
	}
	reg, err := New(cfg, tr.state, auth, logger, tr.prom)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tr.reg = reg
	mux := http.NewServeMux()
	mux.Handle("/v2/", reg.Handler())
	if tr.access != nil {
		mux.Handle(TokenPath, tr.access.TokenHandler())
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	tr.srv = httptest.NewServer(Middleware(mux, logger, tr.prom))
	t.Cleanup(func() {
		tr.srv.Close()
		if err := reg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tr
}

// response is a fully read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// apiErr decodes the first error of an OCI error body.
func (r *response) apiErr() errorEntry {
	var b errorBody
	if err := json.Unmarshal(r.body, &b); err != nil || len(b.Errors) == 0 {
		return errorEntry{}
	}
	return b.Errors[0]
}

type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func asUser(u, p string) reqOpt { return func(r *http.Request) { r.SetBasicAuth(u, p) } }

func anonymous() reqOpt { return func(r *http.Request) { r.Header.Del("Authorization") } }

// do sends a request as the admin (tr.user) unless an option says
// otherwise.
func (tr *testRegistry) do(t *testing.T, method, path string, body []byte, opts ...reqOpt) *response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, tr.srv.URL+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.SetBasicAuth(tr.user, tr.pass)
	for _, o := range opts {
		o(req)
	}
	resp, err := tr.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantStatus fails unless resp has status.
func wantStatus(t *testing.T, resp *response, status int) {
	t.Helper()
	if resp.status != status {
		t.Fatalf("status = %d, want %d; body %s", resp.status, status, resp.body)
	}
}

// wantError fails unless resp is an OCI error with status and code.
func wantError(t *testing.T, resp *response, status int, code errorCode) {
	t.Helper()
	if resp.status != status {
		t.Fatalf("status = %d, want %d; body %s", resp.status, status, resp.body)
	}
	if got := resp.apiErr().Code; got != code {
		t.Fatalf("code = %q, want %q; body %s", got, code, resp.body)
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type = %q", ct)
	}
}

// wantHeader fails unless resp has header k = v.
func wantHeader(t *testing.T, resp *response, k, v string) {
	t.Helper()
	if got := resp.header.Get(k); got != v {
		t.Fatalf("%s = %q, want %q", k, got, v)
	}
}

// pushBlob uploads content monolithically into repo and returns its digest.
func (tr *testRegistry) pushBlob(t *testing.T, repo string, content []byte) oci.Digest {
	t.Helper()
	d := oci.DigestOf(content)
	resp := tr.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), content)
	wantStatus(t, resp, http.StatusCreated)
	return d
}

// startSession opens an upload session and returns its Location.
func (tr *testRegistry) startSession(t *testing.T, repo string) string {
	t.Helper()
	resp := tr.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	wantStatus(t, resp, http.StatusAccepted)
	loc := resp.header.Get("Location")
	if !strings.HasPrefix(loc, "/v2/"+repo+"/blobs/uploads/") {
		t.Fatalf("Location = %q", loc)
	}
	return loc
}

// descriptorJSON is a descriptor as a manifest writes it.
type descriptorJSON struct {
	MediaType    string            `json:"mediaType"`
	Digest       oci.Digest        `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type manifestJSON struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *descriptorJSON   `json:"config,omitempty"`
	Layers        []descriptorJSON  `json:"layers,omitempty"`
	Manifests     []descriptorJSON  `json:"manifests,omitempty"`
	Subject       *descriptorJSON   `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// image pushes a config and a layer into repo and returns an OCI image
// manifest referencing them. seed makes the content unique.
func (tr *testRegistry) image(t *testing.T, repo, seed string) manifestJSON {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","seed":"` + seed + `"}`)
	layer := []byte("layer of " + seed)
	return manifestJSON{
		SchemaVersion: 2,
		MediaType:     oci.MediaTypeImageManifest,
		Config: &descriptorJSON{
			MediaType: "application/vnd.oci.image.config.v1+json",
			Digest:    tr.pushBlob(t, repo, cfg),
			Size:      int64(len(cfg)),
		},
		Layers: []descriptorJSON{{
			MediaType: "application/vnd.oci.image.layer.v1.tar",
			Digest:    tr.pushBlob(t, repo, layer),
			Size:      int64(len(layer)),
		}},
	}
}

// putManifest PUTs a manifest body with its media type as Content-Type.
func (tr *testRegistry) putManifest(t *testing.T, repo, ref string, body []byte, mediaType string) *response {
	t.Helper()
	return tr.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, withHeader("Content-Type", mediaType))
}
