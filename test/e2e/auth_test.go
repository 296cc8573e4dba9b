package e2e

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestAuth checks who may do what: an anonymous or wrongly authenticated
// push or delete is refused with 401 and a challenge (berth: Bearer, with
// its token service as realm; distribution: Basic); a pull works
// anonymously (when the server allows it) and with credentials.
func TestAuth(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	ctx := deadlineCtx(t, 2*time.Minute)
	digest := pushRandom(t, srv, "auth/image:1")

	for _, tc := range []struct {
		name string
		user string
		pass string
		send bool
	}{
		{name: "anonymous"},
		{name: "wrong password", user: srv.Username(), pass: "not-" + srv.Password(), send: true},
		{name: "unknown user", user: "mallory", pass: srv.Password(), send: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Raw requests: the status and the challenge of each write, and of
			// GET /v2/: docker, podman and skopeo send credentials only after
			// /v2/ challenged them, and docker login checks a password there,
			// so it must challenge whoever has not authenticated, even when
			// pulls are anonymous.
			for _, r := range []struct{ method, path string }{
				{http.MethodGet, "/v2/"},
				{http.MethodPost, "/v2/auth/image/blobs/uploads/"},
				{http.MethodPut, "/v2/auth/image/manifests/2"},
				{http.MethodDelete, "/v2/auth/image/manifests/" + digest.String()},
			} {
				req, err := srv.newRequest(ctx, r.method, r.path, bytes.NewReader(nil), false)
				if err != nil {
					t.Fatal(err)
				}
				if tc.send {
					req.SetBasicAuth(tc.user, tc.pass)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s %s: %s, want 401", r.method, r.path, resp.Status)
				}
				ch := resp.Header.Get("WWW-Authenticate")
				if !strings.HasPrefix(strings.ToLower(ch), strings.ToLower(srv.ChallengeScheme())+" ") {
					t.Errorf("%s %s: WWW-Authenticate %q, want a %s challenge", r.method, r.path, ch, srv.ChallengeScheme())
				}
				if srv.ChallengeScheme() == "Bearer" {
					realm := `realm="` + srv.URL() + `/service/token"`
					if !strings.Contains(ch, realm) || !strings.Contains(ch, `service="berth"`) {
						t.Errorf("%s %s: WWW-Authenticate %q, want %s and service berth", r.method, r.path, ch, realm)
					}
					if r.path != "/v2/" && !strings.Contains(ch, `scope="repository:auth/image:`) {
						t.Errorf("%s %s: WWW-Authenticate %q names no scope of auth/image", r.method, r.path, ch)
					}
				}
			}

			// A whole push with a client library is refused with 401.
			img, err := random.Image(512, 1)
			if err != nil {
				t.Fatal(err)
			}
			var auth authn.Authenticator = authn.Anonymous
			if tc.send {
				auth = &authn.Basic{Username: tc.user, Password: tc.pass}
			}
			err = remote.Write(srv.ref(t, "auth/refused:1"), img, remote.WithAuth(auth), remote.WithContext(ctx))
			var terr *transport.Error
			if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
				t.Errorf("push: %v, want a 401", err)
			}
		})
	}

	req, err := srv.newRequest(ctx, http.MethodGet, "/v2/", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("authenticated GET /v2/: %s, API version %q; want 200 and registry/2.0",
			resp.Status, resp.Header.Get("Docker-Distribution-API-Version"))
	}

	// The manifest is still there, and nothing was pushed by the refused.
	if got := headDigest(t, srv, "auth/image:1"); got != digest.String() {
		t.Errorf("after refused deletes: HEAD = %s, want %s", got, digest)
	}
	if _, err := remote.Head(srv.ref(t, "auth/refused:1"), srv.remote(ctx)...); err == nil {
		t.Errorf("auth/refused:1 exists after refused pushes")
	}

	anon, err := remote.Image(srv.ref(t, "auth/image:1"), remote.WithContext(ctx))
	if srv.AnonymousPull() {
		if err != nil {
			t.Fatalf("anonymous pull: %v", err)
		}
		if d, err := anon.Digest(); err != nil || d != digest {
			t.Errorf("anonymous pull digest %v (%v), want %s", d, err, digest)
		}
		layers, err := anon.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			ld, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			req, err := srv.newRequest(ctx, http.MethodGet, "/v2/auth/image/blobs/"+ld.String(), nil, false)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("anonymous GET blob %s: %s", ld, resp.Status)
			}
		}
	} else {
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous pull from %s (anonymous pull off): %v, want a 401", srv.Name(), err)
		}
	}
	if err := verifyBlobsOf(ctx, srv, "auth/image:1"); err != nil {
		t.Error(err)
	}
}
