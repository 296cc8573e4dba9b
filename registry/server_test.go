package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		ok     bool
	}{
		{"default", func(*Config) {}, true},
		{"gc disabled", func(c *Config) { c.GCInterval = 0 }, true},
		{"no data dir", func(c *Config) { c.DataDir = "" }, false},
		{"purge zero", func(c *Config) { c.UploadPurgeAfter = 0 }, false},
		{"negative interval", func(c *Config) { c.GCInterval = -time.Second }, false},
		{"no grace", func(c *Config) { c.GCGrace = 0 }, false},
		{"no max blob", func(c *Config) { c.MaxBlobSize = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.modify(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if _, err := New(Config{}, newNodeState(t), NewAdminAuth(&fakeUsers{}, true, ""), nil, nil); err == nil {
		t.Fatal("New accepted an invalid config")
	}
}

// TestHandlerDirect drives Handler without a ServeMux, which would clean
// dot segments and double slashes before the registry sees them.
func TestHandlerDirect(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	tests := []struct {
		name   string
		method string
		path   string
		status int
		code   errorCode
	}{
		{"double slash", http.MethodGet, "/v2/a//b/manifests/latest", http.StatusBadRequest, codeNameInvalid},
		{"dot segment", http.MethodGet, "/v2/a/../b/tags/list", http.StatusBadRequest, codeNameInvalid},
		{"leading slash", http.MethodGet, "/v2//a/tags/list", http.StatusBadRequest, codeNameInvalid},
		{"upload id traversal", http.MethodPatch, "/v2/a/blobs/uploads/..", http.StatusNotFound, codeBlobUploadUnknown},
		{"outside /v2", http.MethodGet, "/v1/a/tags/list", http.StatusNotFound, codeUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "http://registry"+tt.path, strings.NewReader("x"))
			req.SetBasicAuth(adminUser, adminPass)
			rec := httptest.NewRecorder()
			tr.reg.Handler().ServeHTTP(rec, req)
			resp := &response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
			wantError(t, resp, tt.status, tt.code)
		})
	}
}

func TestAuthorization(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	d := tr.pushBlob(t, "team/app", []byte("auth"))
	blob := "/v2/team/app/blobs/" + d.String()
	tests := []struct {
		name   string
		method string
		path   string
		opts   []reqOpt
		status int
		code   errorCode
	}{
		{"anonymous pull", http.MethodGet, blob, []reqOpt{anonymous()}, http.StatusOK, ""},
		{"anonymous catalog", http.MethodGet, "/v2/_catalog", []reqOpt{anonymous()}, http.StatusOK, ""},
		{"anonymous push", http.MethodPost, "/v2/team/app/blobs/uploads/", []reqOpt{anonymous()}, http.StatusUnauthorized, codeUnauthorized},
		{"anonymous delete", http.MethodDelete, blob, []reqOpt{anonymous()}, http.StatusUnauthorized, codeUnauthorized},
		{"user pull", http.MethodGet, blob, []reqOpt{asUser(bobUser, bobPass)}, http.StatusOK, ""},
		{"user push", http.MethodPost, "/v2/team/app/blobs/uploads/", []reqOpt{asUser(bobUser, bobPass)}, http.StatusForbidden, codeDenied},
		{"user delete", http.MethodDelete, "/v2/team/app/manifests/x", []reqOpt{asUser(bobUser, bobPass)}, http.StatusForbidden, codeDenied},
		{"wrong password pull", http.MethodGet, blob, []reqOpt{asUser(bobUser, "wrong")}, http.StatusUnauthorized, codeUnauthorized},
		{"bearer token is anonymous", http.MethodGet, blob, []reqOpt{anonymous(), withHeader("Authorization", "Bearer abc")}, http.StatusOK, ""},
		{"empty basic is anonymous", http.MethodGet, blob, []reqOpt{asUser("", "")}, http.StatusOK, ""},
		{"empty basic push", http.MethodPost, "/v2/team/app/blobs/uploads/", []reqOpt{asUser("", "")}, http.StatusUnauthorized, codeUnauthorized},
		{"admin push", http.MethodPost, "/v2/team/app/blobs/uploads/", nil, http.StatusAccepted, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tr.do(t, tt.method, tt.path, nil, tt.opts...)
			if tt.code == "" {
				wantStatus(t, resp, tt.status)
				return
			}
			wantError(t, resp, tt.status, tt.code)
			if tt.status == http.StatusUnauthorized {
				wantHeader(t, resp, "WWW-Authenticate", `Basic realm="berth"`)
			}
		})
	}
}

func TestAuthorizationWithoutAnonymousPull(t *testing.T) {
	tr := newTestRegistry(t, testOpts{noAnonymousPull: true})
	d := tr.pushBlob(t, "private", []byte("p"))
	for _, path := range []string{"/v2/private/blobs/" + d.String(), "/v2/_catalog", "/v2/private/tags/list"} {
		resp := tr.do(t, http.MethodGet, path, nil, anonymous())
		wantError(t, resp, http.StatusUnauthorized, codeUnauthorized)
		wantHeader(t, resp, "WWW-Authenticate", `Basic realm="berth"`)
	}
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/private/blobs/"+d.String(), nil, asUser(bobUser, bobPass)), http.StatusOK)
}

func TestAdminAuthCache(t *testing.T) {
	users := &fakeUsers{}
	a := NewAdminAuth(users, false, "realm").(*adminAuth)
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	req := func(user, pass string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		r.SetBasicAuth(user, pass)
		return r
	}
	pull := Access{Repo: "r", Action: ActionPull}

	for range 5 {
		id, err := a.Authorize(req(adminUser, adminPass), Access{Repo: "r", Action: ActionPush})
		if err != nil || !id.Principal.Admin || id.Principal.Name != adminUser {
			t.Fatalf("admin push = %+v, %v", id, err)
		}
	}
	if n := users.checks.Load(); n != 1 {
		t.Fatalf("%d password checks for 5 requests, want 1", n)
	}
	// Failures are not cached.
	for range 3 {
		if _, err := a.Authorize(req(adminUser, "bad"), pull); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("bad password: %v", err)
		}
	}
	if n := users.checks.Load(); n != 4 {
		t.Fatalf("%d checks, want 4", n)
	}
	// The cache key is not the password.
	for k := range a.cache.entries {
		if bytes.Contains(k[:], []byte(adminPass)) {
			t.Fatal("password in cache key")
		}
	}
	// Entries expire.
	now = now.Add(credentialCacheTTL + time.Second)
	if _, err := a.Authorize(req(adminUser, adminPass), pull); err != nil {
		t.Fatal(err)
	}
	if n := users.checks.Load(); n != 5 {
		t.Fatalf("%d checks after expiry, want 5", n)
	}
	// The cache is bounded.
	for i := range credentialCacheSize + 10 {
		a.cache.put([32]byte{byte(i), byte(i >> 8), 1}, Identity{}, now, now.Add(credentialCacheTTL))
	}
	if n := a.cache.len(); n > credentialCacheSize {
		t.Fatalf("cache holds %d entries", n)
	}
	if got := a.Challenge(nil, pull, ErrUnauthorized); got != `Basic realm="realm"` {
		t.Fatalf("challenge = %q", got)
	}
	// A failing checker is an internal error, not a 401.
	users.err = errWithPath
	if _, err := a.Authorize(req(bobUser, bobPass), pull); err == nil || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("checker failure = %v", err)
	}
}

func TestStateFailures(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	body := mustJSON(t, tr.image(t, "app", "x"))
	wantStatus(t, tr.putManifest(t, "app", "v1", body, oci.MediaTypeImageManifest), http.StatusCreated)

	// No quorum: writes answer 503 with Retry-After; reads still work.
	tr.state.setFaults(func() error { return errUnavailableState }, nil)
	resp := tr.putManifest(t, "app", "v2", body, oci.MediaTypeImageManifest)
	wantError(t, resp, http.StatusServiceUnavailable, codeUnavailable)
	wantHeader(t, resp, "Retry-After", "1")
	wantError(t, tr.do(t, http.MethodPost, "/v2/app/blobs/uploads/?digest="+oci.DigestOf([]byte("q")).String(), []byte("q")), http.StatusServiceUnavailable, codeUnavailable)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/app/manifests/v1", nil), http.StatusOK)

	// An internal error is 500 UNKNOWN, logged with the request id, and its
	// text never reaches the client.
	tr.state.setFaults(func() error { return errWithPath }, nil)
	resp = tr.do(t, http.MethodDelete, "/v2/app/manifests/v1", nil, withHeader("X-Request-Id", "req-42"))
	wantError(t, resp, http.StatusInternalServerError, codeUnknown)
	if bytes.Contains(resp.body, []byte("secret")) {
		t.Fatalf("internal error leaked: %s", resp.body)
	}
	logs := tr.logs.String()
	if !strings.Contains(logs, `"request_id":"req-42"`) || !strings.Contains(logs, "/secret/path") {
		t.Fatalf("internal error not logged with its request id:\n%s", logs)
	}
	tr.state.setFaults(nil, func() error { return errWithPath })
	wantError(t, tr.do(t, http.MethodGet, "/v2/app/tags/list", nil), http.StatusInternalServerError, codeUnknown)
	wantError(t, tr.do(t, http.MethodGet, "/v2/_catalog", nil), http.StatusInternalServerError, codeUnknown)
	wantError(t, tr.do(t, http.MethodGet, "/v2/app/referrers/"+oci.DigestOf(body).String(), nil), http.StatusInternalServerError, codeUnknown)
}

func TestMiddleware(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	body := mustJSON(t, tr.image(t, "app", "x"))
	wantStatus(t, tr.putManifest(t, "app", "v1", body, oci.MediaTypeImageManifest), http.StatusCreated)

	resp := tr.do(t, http.MethodGet, "/v2/app/manifests/v1", nil, withHeader("X-Request-Id", "client-id-1"))
	wantHeader(t, resp, "X-Request-Id", "client-id-1")
	for _, bad := range []string{"", strings.Repeat("x", maxRequestIDLength+1), "has space"} {
		resp := tr.do(t, http.MethodGet, "/v2/", nil, withHeader("X-Request-Id", bad))
		if id := resp.header.Get("X-Request-Id"); id == "" || id == bad {
			t.Fatalf("request id %q for client id %q", id, bad)
		}
	}
	wantStatus(t, tr.do(t, http.MethodGet, "/healthz", nil), http.StatusOK)

	// One access log line per request, with the request id and the route
	// template.
	var found bool
	for line := range strings.SplitSeq(tr.logs.String(), "\n") {
		if !strings.Contains(line, `"msg":"request"`) || !strings.Contains(line, "client-id-1") {
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatal(err)
		}
		found = entry["route"] == "manifests" && entry["status"] == float64(200) && entry["method"] == "GET"
	}
	if !found {
		t.Fatalf("no access log line for client-id-1:\n%s", tr.logs.String())
	}

	// Metrics are labelled by template, never by raw path.
	if got := testutil.CollectAndCount(tr.prom, "berth_http_request_duration_seconds"); got == 0 {
		t.Fatal("no request duration series")
	}
	families, err := tr.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]bool{}
	for _, f := range families {
		if f.GetName() != "berth_http_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" {
					routes[l.GetValue()] = true
				}
			}
		}
	}
	for _, want := range []string{"manifests", "uploads", "base", "/healthz"} {
		if !routes[want] {
			t.Fatalf("route label %q missing from %v", want, routes)
		}
	}
	for r := range routes {
		if strings.Contains(r, "app") {
			t.Fatalf("raw path %q used as a route label", r)
		}
	}
	out := testutil.ToFloat64(newHTTPMetrics(tr.prom).bytesOut.WithLabelValues("manifests", "GET"))
	if out < float64(len(body)) {
		t.Fatalf("response bytes = %v, want ≥ %d", out, len(body))
	}
	in := testutil.ToFloat64(newHTTPMetrics(tr.prom).bytesIn.WithLabelValues("manifests", "PUT"))
	if in != float64(len(body)) {
		t.Fatalf("request bytes = %v, want %d", in, len(body))
	}
	if blobs := testutil.ToFloat64(tr.reg.metrics.collectors[4]); blobs != 2 {
		t.Fatalf("berth_blobs = %v, want 2", blobs)
	}
}

func TestGC(t *testing.T) {
	tr := newTestRegistry(t, testOpts{gcGrace: time.Nanosecond})
	body := mustJSON(t, tr.image(t, "app", "kept"))
	wantStatus(t, tr.putManifest(t, "app", "v1", body, oci.MediaTypeImageManifest), http.StatusCreated)
	orphan := tr.pushBlob(t, "app", []byte("nobody references me"))

	dry, err := tr.reg.GC(t.Context(), true)
	if err != nil || dry.Deleted != 1 || !dry.DryRun {
		t.Fatalf("dry run = %+v, %v", dry, err)
	}
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/app/blobs/"+orphan.String(), nil), http.StatusOK)
	res, err := tr.reg.GC(t.Context(), false)
	if err != nil || res.Deleted != 1 || res.BytesFreed != int64(len("nobody references me")) {
		t.Fatalf("gc = %+v, %v", res, err)
	}
	wantError(t, tr.do(t, http.MethodGet, "/v2/app/blobs/"+orphan.String(), nil), http.StatusNotFound, codeBlobUnknown)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/app/manifests/v1", nil), http.StatusOK)
	var m manifestJSON
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/app/blobs/"+m.Layers[0].Digest.String(), nil), http.StatusOK)
	if got := testutil.ToFloat64(tr.reg.metrics.gcFreed); got != float64(res.BytesFreed) {
		t.Fatalf("gc bytes metric = %v", got)
	}
}

func TestRunStops(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.reg.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestReadKeepsBlobYoungForGC: a client that HEADs or GETs a blob before
// pushing the manifest that references it relies on GC's grace period
// counting from that read, not from the blob's upload.
func TestReadKeepsBlobYoungForGC(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	// The blobs were uploaded (linked) long ago, too: only the reads may
	// keep them.
	tr.state.linkAge = 2 * tr.reg.cfg.GCGrace
	headed := tr.pushBlob(t, "app", []byte("headed"))
	fetched := tr.pushBlob(t, "app", []byte("fetched"))
	untouched := tr.pushBlob(t, "app", []byte("untouched"))
	old := time.Now().Add(-2 * tr.reg.cfg.GCGrace)
	for _, d := range []oci.Digest{headed, fetched, untouched} {
		p, err := tr.reg.blobs.path(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, tr.do(t, http.MethodHead, "/v2/app/blobs/"+headed.String(), nil), http.StatusOK)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/app/blobs/"+fetched.String(), nil), http.StatusOK)

	res, err := tr.reg.GC(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 1 {
		t.Fatalf("GC deleted %d blobs, want only the untouched one", res.Deleted)
	}
	for d, want := range map[oci.Digest]bool{headed: true, fetched: true, untouched: false} {
		_, _, err := tr.reg.blobs.Stat(d)
		if got := err == nil; got != want {
			t.Errorf("blob %s present = %v, want %v", d, got, want)
		}
	}
}
