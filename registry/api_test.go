package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

func TestBase(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	tests := []struct {
		name   string
		method string
		opts   []reqOpt
		status int
	}{
		// The root challenges anonymous clients even with anonymous pulls,
		// or the docker CLI would never send its credentials.
		{"anonymous", http.MethodGet, []reqOpt{anonymous()}, http.StatusUnauthorized},
		{"empty credentials", http.MethodGet, []reqOpt{asUser("", "")}, http.StatusUnauthorized},
		{"admin", http.MethodGet, nil, http.StatusOK},
		{"user", http.MethodGet, []reqOpt{asUser(bobUser, bobPass)}, http.StatusOK},
		{"head", http.MethodHead, nil, http.StatusOK},
		{"wrong password", http.MethodGet, []reqOpt{asUser(adminUser, "nope")}, http.StatusUnauthorized},
		{"unknown user", http.MethodGet, []reqOpt{asUser("eve", "x")}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tr.do(t, tt.method, "/v2/", nil, tt.opts...)
			wantStatus(t, resp, tt.status)
			wantHeader(t, resp, "Docker-Distribution-API-Version", "registry/2.0")
			if tt.status == http.StatusOK && tt.method == http.MethodGet && string(resp.body) != "{}" {
				t.Fatalf("body = %q, want {}", resp.body)
			}
			if tt.status == http.StatusUnauthorized {
				wantHeader(t, resp, "WWW-Authenticate", `Basic realm="berth"`)
				if tt.method == http.MethodGet {
					wantError(t, resp, http.StatusUnauthorized, codeUnauthorized)
				}
			}
		})
	}
	// Without the trailing slash too.
	wantStatus(t, tr.do(t, http.MethodGet, "/v2", nil), http.StatusOK)
}

func TestBaseLoginWhenPullNeedsCredentials(t *testing.T) {
	tr := newTestRegistry(t, testOpts{noAnonymousPull: true})
	resp := tr.do(t, http.MethodGet, "/v2/", nil, anonymous())
	wantError(t, resp, http.StatusUnauthorized, codeUnauthorized)
	wantHeader(t, resp, "WWW-Authenticate", `Basic realm="berth"`)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/", nil, asUser(bobUser, bobPass)), http.StatusOK)
}

func TestBlobMonolithic(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	content := []byte("hello, monolithic blob")
	d := oci.DigestOf(content)

	resp := tr.do(t, http.MethodPost, "/v2/a/b/blobs/uploads/?digest="+d.String(), content)
	wantStatus(t, resp, http.StatusCreated)
	wantHeader(t, resp, "Location", "/v2/a/b/blobs/"+d.String())
	wantHeader(t, resp, "Docker-Content-Digest", d.String())

	head := tr.do(t, http.MethodHead, "/v2/a/b/blobs/"+d.String(), nil, anonymous())
	wantStatus(t, head, http.StatusOK)
	wantHeader(t, head, "Content-Length", fmt.Sprint(len(content)))
	wantHeader(t, head, "Docker-Content-Digest", d.String())
	wantHeader(t, head, "Content-Type", "application/octet-stream")
	wantHeader(t, head, "Accept-Ranges", "bytes")
	if len(head.body) != 0 {
		t.Fatalf("HEAD body = %q", head.body)
	}

	get := tr.do(t, http.MethodGet, "/v2/a/b/blobs/"+d.String(), nil, anonymous())
	wantStatus(t, get, http.StatusOK)
	if !bytes.Equal(get.body, content) {
		t.Fatalf("GET body = %q", get.body)
	}
	wantHeader(t, get, "Docker-Content-Digest", d.String())

	part := tr.do(t, http.MethodGet, "/v2/a/b/blobs/"+d.String(), nil, withHeader("Range", "bytes=7-16"))
	wantStatus(t, part, http.StatusPartialContent)
	if string(part.body) != "monolithic" {
		t.Fatalf("range body = %q", part.body)
	}
	wantHeader(t, part, "Content-Range", fmt.Sprintf("bytes 7-16/%d", len(content)))

	// Blob files are shared, but a repository sees only its own.
	wantError(t, tr.do(t, http.MethodGet, "/v2/other/blobs/"+d.String(), nil), http.StatusNotFound, codeBlobUnknown)
	wantStatus(t, tr.do(t, http.MethodHead, "/v2/other/blobs/"+d.String(), nil), http.StatusNotFound)
	// Pushing the same blob again is fine.
	wantStatus(t, tr.do(t, http.MethodPost, "/v2/a/b/blobs/uploads/?digest="+d.String(), content), http.StatusCreated)
}

func TestBlobErrors(t *testing.T) {
	tr := newTestRegistry(t, testOpts{maxBlobSize: 64})
	missing := oci.DigestOf([]byte("never pushed"))
	tests := []struct {
		name   string
		method string
		path   string
		body   []byte
		status int
		code   errorCode
	}{
		{"unknown blob", http.MethodGet, "/v2/r/blobs/" + missing.String(), nil, http.StatusNotFound, codeBlobUnknown},
		{"bad digest", http.MethodGet, "/v2/r/blobs/sha256:abc", nil, http.StatusBadRequest, codeDigestInvalid},
		{"bad algorithm", http.MethodGet, "/v2/r/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", nil, http.StatusBadRequest, codeDigestInvalid},
		{"content mismatch", http.MethodPost, "/v2/r/blobs/uploads/?digest=" + missing.String(), []byte("other"), http.StatusBadRequest, codeDigestInvalid},
		{"monolithic bad digest", http.MethodPost, "/v2/r/blobs/uploads/?digest=sha256:zz", []byte("x"), http.StatusBadRequest, codeDigestInvalid},
		{"too large", http.MethodPost, "/v2/r/blobs/uploads/?digest=" + oci.DigestOf(make([]byte, 65)).String(), make([]byte, 65), http.StatusRequestEntityTooLarge, codeSizeInvalid},
		{"delete unknown blob", http.MethodDelete, "/v2/r/blobs/" + missing.String(), nil, http.StatusNotFound, codeBlobUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, tr.do(t, tt.method, tt.path, tt.body), tt.status, tt.code)
		})
	}
}

func TestUploadTooLarge(t *testing.T) {
	tr := newTestRegistry(t, testOpts{maxBlobSize: 64})
	loc := tr.startSession(t, "big")
	wantStatus(t, tr.do(t, http.MethodPatch, loc, make([]byte, 60)), http.StatusAccepted)
	wantError(t, tr.do(t, http.MethodPatch, loc, make([]byte, 10)), http.StatusRequestEntityTooLarge, codeSizeInvalid)
	// The failed chunk left the session where it was.
	wantHeader(t, tr.do(t, http.MethodGet, loc, nil), "Range", "0-59")
	d := oci.DigestOf(make([]byte, 70))
	wantError(t, tr.do(t, http.MethodPut, loc+"?digest="+d.String(), make([]byte, 10)), http.StatusRequestEntityTooLarge, codeSizeInvalid)
}

func TestUploadFinalChunkOutOfOrder(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	loc := tr.startSession(t, "f")
	wantStatus(t, tr.do(t, http.MethodPatch, loc, []byte("abc"), withHeader("Content-Range", "0-2")), http.StatusAccepted)
	d := oci.DigestOf([]byte("abcdef"))
	resp := tr.do(t, http.MethodPut, loc+"?digest="+d.String(), []byte("def"), withHeader("Content-Range", "4-6"))
	wantError(t, resp, http.StatusRequestedRangeNotSatisfiable, codeRangeInvalid)
	wantHeader(t, resp, "Range", "0-2")
	wantStatus(t, tr.do(t, http.MethodPut, loc+"?digest="+d.String(), []byte("def"), withHeader("Content-Range", "3-5")), http.StatusCreated)
}

func TestBlobDelete(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	d := tr.pushBlob(t, "r", []byte("to delete"))
	tr.pushBlob(t, "s", []byte("to delete"))
	resp := tr.do(t, http.MethodDelete, "/v2/r/blobs/"+d.String(), nil)
	wantStatus(t, resp, http.StatusAccepted)
	wantError(t, tr.do(t, http.MethodGet, "/v2/r/blobs/"+d.String(), nil), http.StatusNotFound, codeBlobUnknown)
	// The other repository's link, and the shared file, stay.
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/s/blobs/"+d.String(), nil), http.StatusOK)
	// Pulls may not delete.
	wantError(t, tr.do(t, http.MethodDelete, "/v2/s/blobs/"+d.String(), nil, anonymous()), http.StatusUnauthorized, codeUnauthorized)
}

func TestUploadChunked(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	content := []byte("0123456789abcdefghij")
	d := oci.DigestOf(content)

	post := tr.do(t, http.MethodPost, "/v2/c/blobs/uploads/", nil)
	wantStatus(t, post, http.StatusAccepted)
	wantHeader(t, post, "Range", "0-0")
	loc := post.header.Get("Location")
	id := post.header.Get("Docker-Upload-UUID")
	if id == "" || loc != "/v2/c/blobs/uploads/"+id {
		t.Fatalf("Location %q, id %q", loc, id)
	}

	steps := []struct {
		name   string
		method string
		rng    string
		body   string
		status int
		want   string // Range after the step
	}{
		{"first chunk", http.MethodPatch, "0-4", "01234", http.StatusAccepted, "0-4"},
		{"out of order", http.MethodPatch, "10-14", "abcde", http.StatusRequestedRangeNotSatisfiable, "0-4"},
		{"overlap", http.MethodPatch, "3-7", "34567", http.StatusRequestedRangeNotSatisfiable, "0-4"},
		{"length mismatch", http.MethodPatch, "5-9", "567", http.StatusRequestedRangeNotSatisfiable, "0-4"},
		{"malformed range", http.MethodPatch, "five-nine", "56789", http.StatusRequestedRangeNotSatisfiable, "0-4"},
		{"status", http.MethodGet, "", "", http.StatusNoContent, "0-4"},
		{"second chunk", http.MethodPatch, "5-9", "56789", http.StatusAccepted, "0-9"},
		{"third chunk", http.MethodPatch, "10-14", "abcde", http.StatusAccepted, "0-14"},
	}
	for _, s := range steps {
		var opts []reqOpt
		if s.rng != "" {
			opts = append(opts, withHeader("Content-Range", s.rng))
		}
		var body []byte
		if s.body != "" {
			body = []byte(s.body)
		}
		resp := tr.do(t, s.method, loc, body, opts...)
		if resp.status != s.status {
			t.Fatalf("%s: status %d, want %d: %s", s.name, resp.status, s.status, resp.body)
		}
		if s.status == http.StatusRequestedRangeNotSatisfiable {
			wantError(t, resp, s.status, codeRangeInvalid)
		}
		wantHeader(t, resp, "Range", s.want)
		wantHeader(t, resp, "Location", loc)
		wantHeader(t, resp, "Docker-Upload-UUID", id)
	}

	// The final chunk comes with the PUT.
	put := tr.do(t, http.MethodPut, loc+"?digest="+url.QueryEscape(d.String()), []byte("fghij"), withHeader("Content-Range", "15-19"))
	wantStatus(t, put, http.StatusCreated)
	wantHeader(t, put, "Location", "/v2/c/blobs/"+d.String())
	wantHeader(t, put, "Docker-Content-Digest", d.String())
	get := tr.do(t, http.MethodGet, "/v2/c/blobs/"+d.String(), nil)
	if !bytes.Equal(get.body, content) {
		t.Fatalf("blob = %q", get.body)
	}
	// The session is gone.
	wantError(t, tr.do(t, http.MethodGet, loc, nil), http.StatusNotFound, codeBlobUploadUnknown)
}

func TestUploadStreamed(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	loc := tr.startSession(t, "s")
	for _, part := range []string{"streamed ", "without ", "ranges"} {
		resp := tr.do(t, http.MethodPatch, loc, []byte(part))
		wantStatus(t, resp, http.StatusAccepted)
	}
	status := tr.do(t, http.MethodGet, loc, nil)
	wantStatus(t, status, http.StatusNoContent)
	wantHeader(t, status, "Range", "0-22")
	d := oci.DigestOf([]byte("streamed without ranges"))
	put := tr.do(t, http.MethodPut, loc+"?digest="+d.String(), nil)
	wantStatus(t, put, http.StatusCreated)
	wantHeader(t, put, "Location", "/v2/s/blobs/"+d.String())
	wantStatus(t, tr.do(t, http.MethodHead, "/v2/s/blobs/"+d.String(), nil), http.StatusOK)
}

func TestUploadPutWholeBody(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	loc := tr.startSession(t, "p")
	content := []byte("all in the PUT")
	d := oci.DigestOf(content)
	wantStatus(t, tr.do(t, http.MethodPut, loc+"?digest="+d.String(), content), http.StatusCreated)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/p/blobs/"+d.String(), nil), http.StatusOK)
}

func TestUploadErrors(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	loc := tr.startSession(t, "u")
	id := loc[strings.LastIndex(loc, "/")+1:]
	good := oci.DigestOf([]byte("x"))

	wantError(t, tr.do(t, http.MethodPut, loc, []byte("x")), http.StatusBadRequest, codeDigestInvalid)
	wantError(t, tr.do(t, http.MethodPut, loc+"?digest=sha256:bad", []byte("x")), http.StatusBadRequest, codeDigestInvalid)
	wantError(t, tr.do(t, http.MethodPut, "/v2/u/blobs/uploads/00000000-0000-0000-0000-000000000000?digest="+good.String(), []byte("x")), http.StatusNotFound, codeBlobUploadUnknown)
	wantError(t, tr.do(t, http.MethodPatch, "/v2/u/blobs/uploads/not-a-session", []byte("x")), http.StatusNotFound, codeBlobUploadUnknown)
	// A session belongs to its repository.
	wantError(t, tr.do(t, http.MethodGet, "/v2/other/blobs/uploads/"+id, nil), http.StatusNotFound, codeBlobUploadUnknown)
	// Only pushers see sessions.
	wantError(t, tr.do(t, http.MethodGet, loc, nil, anonymous()), http.StatusUnauthorized, codeUnauthorized)
	wantError(t, tr.do(t, http.MethodGet, loc, nil, asUser(bobUser, bobPass)), http.StatusForbidden, codeDenied)

	// Cancel.
	resp := tr.do(t, http.MethodDelete, loc, nil)
	wantStatus(t, resp, http.StatusNoContent)
	wantError(t, tr.do(t, http.MethodGet, loc, nil), http.StatusNotFound, codeBlobUploadUnknown)
	wantError(t, tr.do(t, http.MethodDelete, loc, nil), http.StatusNotFound, codeBlobUploadUnknown)

	// A wrong final digest.
	loc = tr.startSession(t, "u")
	wantError(t, tr.do(t, http.MethodPut, loc+"?digest="+good.String(), []byte("not x")), http.StatusBadRequest, codeDigestInvalid)
}

func TestMount(t *testing.T) {
	deny := &denyRepo{Authorizer: NewAdminAuth(&fakeUsers{}, true, "berth"), repo: "private"}
	tr := newTestRegistry(t, testOpts{auth: deny})
	d := tr.pushBlob(t, "src", []byte("mount me"))
	tr.pushBlob(t, "private", []byte("mount me"))
	missing := oci.DigestOf([]byte("nowhere"))

	tests := []struct {
		name    string
		query   string
		mounted bool
	}{
		{"from source", "mount=" + d.String() + "&from=src", true},
		{"already here", "mount=" + d.String(), true},
		{"source lacks it", "mount=" + missing.String() + "&from=src", false},
		{"source unreadable", "mount=" + d.String() + "&from=private", false},
		{"bad source name", "mount=" + d.String() + "&from=../src", false},
		{"bad digest", "mount=sha256:nope&from=src", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := fmt.Sprintf("dst%d", i)
			if tt.name == "already here" {
				dst = "src"
			}
			resp := tr.do(t, http.MethodPost, "/v2/"+dst+"/blobs/uploads/?"+tt.query, nil, asUser(adminUser, adminPass))
			if tt.mounted {
				wantStatus(t, resp, http.StatusCreated)
				wantHeader(t, resp, "Location", "/v2/"+dst+"/blobs/"+d.String())
				wantHeader(t, resp, "Docker-Content-Digest", d.String())
				wantStatus(t, tr.do(t, http.MethodHead, "/v2/"+dst+"/blobs/"+d.String(), nil), http.StatusOK)
				return
			}
			wantStatus(t, resp, http.StatusAccepted)
			if !strings.HasPrefix(resp.header.Get("Location"), "/v2/"+dst+"/blobs/uploads/") {
				t.Fatalf("fallback Location = %q", resp.header.Get("Location"))
			}
		})
	}
}

// denyRepo wraps an Authorizer and refuses every access to one repository.
type denyRepo struct {
	Authorizer
	repo string
}

func (d *denyRepo) Authorize(r *http.Request, need Access) (Identity, error) {
	if need.Repo == d.repo && need.Action == ActionPull {
		return Identity{}, ErrDenied
	}
	return Identity{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: adminUser, Admin: true}}, nil
}

func TestManifestPushPull(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	m := tr.image(t, "app", "one")
	body := mustJSON(t, m)
	d := oci.DigestOf(body)

	put := tr.putManifest(t, "app", "v1", body, oci.MediaTypeImageManifest)
	wantStatus(t, put, http.StatusCreated)
	wantHeader(t, put, "Location", "/v2/app/manifests/"+d.String())
	wantHeader(t, put, "Docker-Content-Digest", d.String())
	if put.header.Get("OCI-Subject") != "" {
		t.Fatalf("OCI-Subject without a subject")
	}

	for _, ref := range []string{"v1", d.String()} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp := tr.do(t, method, "/v2/app/manifests/"+ref, nil, anonymous(),
				withHeader("Accept", oci.MediaTypeDockerManifest)) // stored type is served anyway
			wantStatus(t, resp, http.StatusOK)
			wantHeader(t, resp, "Content-Type", oci.MediaTypeImageManifest)
			wantHeader(t, resp, "Docker-Content-Digest", d.String())
			wantHeader(t, resp, "Content-Length", fmt.Sprint(len(body)))
			if method == http.MethodGet && !bytes.Equal(resp.body, body) {
				t.Fatalf("GET %s body differs", ref)
			}
			if method == http.MethodHead && len(resp.body) != 0 {
				t.Fatalf("HEAD has a body")
			}
		}
	}

	// By digest, with a matching body.
	m2 := tr.image(t, "app", "two")
	body2 := mustJSON(t, m2)
	d2 := oci.DigestOf(body2)
	wantStatus(t, tr.putManifest(t, "app", d2.String(), body2, oci.MediaTypeImageManifest), http.StatusCreated)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/app/manifests/"+d2.String(), nil), http.StatusOK)

	// Retagging moves the tag.
	wantStatus(t, tr.putManifest(t, "app", "v1", body2, oci.MediaTypeImageManifest), http.StatusCreated)
	wantHeader(t, tr.do(t, http.MethodHead, "/v2/app/manifests/v1", nil), "Docker-Content-Digest", d2.String())
}

func TestManifestErrors(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	m := tr.image(t, "app", "one")
	good := mustJSON(t, m)

	missingBlob := m
	missingBlob.Layers = []descriptorJSON{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: oci.DigestOf([]byte("absent")), Size: 6}}
	otherRepoBlob := m
	otherRepoBlob.Config = &descriptorJSON{MediaType: "application/vnd.oci.image.config.v1+json", Digest: tr.pushBlob(t, "elsewhere", []byte("{}")), Size: 2}
	noSchema := m
	noSchema.SchemaVersion = 1
	badDesc := m
	badDesc.Layers = []descriptorJSON{{MediaType: "x", Digest: "sha256:short", Size: 1}}
	index := manifestJSON{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex, Manifests: []descriptorJSON{{
		MediaType: oci.MediaTypeImageManifest, Digest: oci.DigestOf([]byte("no such child")), Size: 13,
	}}}
	huge := bytes.Repeat([]byte(" "), oci.MaxManifestSize+1)

	tests := []struct {
		name        string
		ref         string
		body        []byte
		contentType string
		status      int
		code        errorCode
	}{
		{"missing blob", "t", mustJSON(t, missingBlob), oci.MediaTypeImageManifest, http.StatusBadRequest, codeManifestBlobUnknown},
		{"blob of another repository", "t", mustJSON(t, otherRepoBlob), oci.MediaTypeImageManifest, http.StatusBadRequest, codeManifestBlobUnknown},
		{"missing index child", "t", mustJSON(t, index), oci.MediaTypeImageIndex, http.StatusBadRequest, codeManifestBlobUnknown},
		{"bad json", "t", []byte(`{"schemaVersion":`), oci.MediaTypeImageManifest, http.StatusBadRequest, codeManifestInvalid},
		{"media type mismatch", "t", good, oci.MediaTypeDockerManifest, http.StatusBadRequest, codeManifestInvalid},
		{"schema version", "t", mustJSON(t, noSchema), oci.MediaTypeImageManifest, http.StatusBadRequest, codeManifestInvalid},
		{"bad descriptor digest", "t", mustJSON(t, badDesc), oci.MediaTypeImageManifest, http.StatusBadRequest, codeManifestInvalid},
		{"unsupported media type", "t", []byte(`{"schemaVersion":2}`), "application/vnd.docker.distribution.manifest.v1+prettyjws", http.StatusUnsupportedMediaType, codeUnsupported},
		{"too large", "t", huge, oci.MediaTypeImageManifest, http.StatusRequestEntityTooLarge, codeSizeInvalid},
		{"digest mismatch", oci.DigestOf([]byte("other")).String(), good, oci.MediaTypeImageManifest, http.StatusBadRequest, codeDigestInvalid},
		{"bad digest", "sha256:totallywrong", good, oci.MediaTypeImageManifest, http.StatusBadRequest, codeDigestInvalid},
		{"invalid tag", "-bad", good, oci.MediaTypeImageManifest, http.StatusBadRequest, codeManifestInvalid},
		{"tag too long", strings.Repeat("t", 129), good, oci.MediaTypeImageManifest, http.StatusBadRequest, codeManifestInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tr.putManifest(t, "app", tt.ref, tt.body, tt.contentType)
			wantError(t, resp, tt.status, tt.code)
		})
	}
	if tr.state.hasTag(t, "app", "t") {
		t.Fatal("a refused manifest was tagged")
	}

	reads := []struct {
		name   string
		path   string
		status int
		code   errorCode
	}{
		{"unknown tag", "/v2/app/manifests/nope", http.StatusNotFound, codeManifestUnknown},
		{"unknown digest", "/v2/app/manifests/" + oci.DigestOf([]byte("n")).String(), http.StatusNotFound, codeManifestUnknown},
		{"unknown repository", "/v2/none/manifests/latest", http.StatusNotFound, codeManifestUnknown},
		{"bad digest", "/v2/app/manifests/sha256:12", http.StatusBadRequest, codeDigestInvalid},
		{"bad tag", "/v2/app/manifests/.dot", http.StatusBadRequest, codeManifestInvalid},
	}
	for _, tt := range reads {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, tr.do(t, http.MethodGet, tt.path, nil), tt.status, tt.code)
			head := tr.do(t, http.MethodHead, tt.path, nil)
			wantStatus(t, head, tt.status)
			if len(head.body) != 0 {
				t.Fatal("HEAD error has a body")
			}
		})
	}
}

func TestManifestIndexAndDelete(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	child := mustJSON(t, tr.image(t, "multi", "amd64"))
	childDigest := oci.DigestOf(child)
	wantStatus(t, tr.putManifest(t, "multi", childDigest.String(), child, oci.MediaTypeImageManifest), http.StatusCreated)
	index := mustJSON(t, manifestJSON{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex, Manifests: []descriptorJSON{{
		MediaType: oci.MediaTypeImageManifest, Digest: childDigest, Size: int64(len(child)),
	}}})
	indexDigest := oci.DigestOf(index)
	wantStatus(t, tr.putManifest(t, "multi", "latest", index, oci.MediaTypeImageIndex), http.StatusCreated)
	wantStatus(t, tr.putManifest(t, "multi", "also", index, oci.MediaTypeImageIndex), http.StatusCreated)
	resp := tr.do(t, http.MethodGet, "/v2/multi/manifests/latest", nil)
	wantHeader(t, resp, "Content-Type", oci.MediaTypeImageIndex)

	// The index's child cannot go while the index lists it.
	denied := tr.do(t, http.MethodDelete, "/v2/multi/manifests/"+childDigest.String(), nil)
	wantError(t, denied, http.StatusForbidden, codeDenied)
	if !strings.Contains(fmt.Sprint(denied.apiErr().Detail), string(indexDigest)) {
		t.Fatalf("detail %v does not name the index", denied.apiErr().Detail)
	}

	// Deleting a tag removes only that tag.
	wantStatus(t, tr.do(t, http.MethodDelete, "/v2/multi/manifests/latest", nil), http.StatusAccepted)
	wantError(t, tr.do(t, http.MethodGet, "/v2/multi/manifests/latest", nil), http.StatusNotFound, codeManifestUnknown)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/multi/manifests/also", nil), http.StatusOK)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/multi/manifests/"+indexDigest.String(), nil), http.StatusOK)
	wantError(t, tr.do(t, http.MethodDelete, "/v2/multi/manifests/latest", nil), http.StatusNotFound, codeManifestUnknown)

	// Deleting by digest removes the manifest and its remaining tags.
	wantStatus(t, tr.do(t, http.MethodDelete, "/v2/multi/manifests/"+indexDigest.String(), nil), http.StatusAccepted)
	wantError(t, tr.do(t, http.MethodGet, "/v2/multi/manifests/also", nil), http.StatusNotFound, codeManifestUnknown)
	wantError(t, tr.do(t, http.MethodDelete, "/v2/multi/manifests/"+indexDigest.String(), nil), http.StatusNotFound, codeManifestUnknown)
	// Now the child can go.
	wantStatus(t, tr.do(t, http.MethodDelete, "/v2/multi/manifests/"+childDigest.String(), nil), http.StatusAccepted)

	wantError(t, tr.do(t, http.MethodDelete, "/v2/multi/manifests/sha256:0", nil), http.StatusBadRequest, codeDigestInvalid)
	wantError(t, tr.do(t, http.MethodDelete, "/v2/multi/manifests/-x", nil), http.StatusBadRequest, codeManifestInvalid)
}

func TestReferrers(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	subjectBody := mustJSON(t, tr.image(t, "ref", "subject"))
	subject := oci.DigestOf(subjectBody)

	empty := tr.pushBlob(t, "ref", []byte("{}"))
	artifact := func(artifactType, note string) []byte {
		return mustJSON(t, manifestJSON{
			SchemaVersion: 2,
			MediaType:     oci.MediaTypeImageManifest,
			ArtifactType:  artifactType,
			Config:        &descriptorJSON{MediaType: oci.MediaTypeEmptyJSON, Digest: empty, Size: 2},
			Layers:        []descriptorJSON{{MediaType: oci.MediaTypeEmptyJSON, Digest: empty, Size: 2}},
			Subject:       &descriptorJSON{MediaType: oci.MediaTypeImageManifest, Digest: subject, Size: int64(len(subjectBody))},
			Annotations:   map[string]string{"note": note},
		})
	}
	sig, sbom := artifact("application/vnd.example.sig", "signature"), artifact("application/vnd.example.sbom", "sbom")

	// The subject may be pushed after its referrers.
	for _, b := range [][]byte{sig, sbom} {
		resp := tr.putManifest(t, "ref", oci.DigestOf(b).String(), b, oci.MediaTypeImageManifest)
		wantStatus(t, resp, http.StatusCreated)
		wantHeader(t, resp, "OCI-Subject", subject.String())
	}
	wantStatus(t, tr.putManifest(t, "ref", "v1", subjectBody, oci.MediaTypeImageManifest), http.StatusCreated)

	list := func(t *testing.T, query string) ([]oci.Descriptor, *response) {
		t.Helper()
		resp := tr.do(t, http.MethodGet, "/v2/ref/referrers/"+subject.String()+query, nil, anonymous())
		wantStatus(t, resp, http.StatusOK)
		wantHeader(t, resp, "Content-Type", oci.MediaTypeImageIndex)
		var idx struct {
			SchemaVersion int              `json:"schemaVersion"`
			MediaType     string           `json:"mediaType"`
			Manifests     []oci.Descriptor `json:"manifests"`
		}
		if err := json.Unmarshal(resp.body, &idx); err != nil {
			t.Fatalf("referrers body: %v", err)
		}
		if idx.SchemaVersion != 2 || idx.MediaType != oci.MediaTypeImageIndex || idx.Manifests == nil {
			t.Fatalf("referrers index = %s", resp.body)
		}
		return idx.Manifests, resp
	}

	all, resp := list(t, "")
	if len(all) != 2 || resp.header.Get("OCI-Filters-Applied") != "" {
		t.Fatalf("all referrers = %+v", all)
	}
	for _, d := range all {
		if d.ArtifactType == "" || d.Annotations["note"] == "" || d.MediaType != oci.MediaTypeImageManifest {
			t.Fatalf("descriptor lacks fields: %+v", d)
		}
	}
	filtered, resp := list(t, "?artifactType="+url.QueryEscape("application/vnd.example.sbom"))
	wantHeader(t, resp, "OCI-Filters-Applied", "artifactType")
	if len(filtered) != 1 || filtered[0].Digest != oci.DigestOf(sbom) || filtered[0].Annotations["note"] != "sbom" {
		t.Fatalf("filtered = %+v", filtered)
	}
	none, _ := list(t, "?artifactType=application/none")
	if len(none) != 0 {
		t.Fatalf("unmatched filter = %+v", none)
	}

	// An unknown subject has no referrers; a bad digest is an error.
	resp = tr.do(t, http.MethodGet, "/v2/ref/referrers/"+oci.DigestOf([]byte("?")).String(), nil)
	wantStatus(t, resp, http.StatusOK)
	if !strings.Contains(string(resp.body), `"manifests":[]`) {
		t.Fatalf("empty referrers = %s", resp.body)
	}
	wantError(t, tr.do(t, http.MethodGet, "/v2/ref/referrers/sha256:nope", nil), http.StatusBadRequest, codeDigestInvalid)
}

func TestTagsPagination(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	body := mustJSON(t, tr.image(t, "tagged", "x"))
	want := []string{"a", "b", "c", "d", "e"}
	for _, tag := range []string{"c", "a", "e", "b", "d"} {
		wantStatus(t, tr.putManifest(t, "tagged", tag, body, oci.MediaTypeImageManifest), http.StatusCreated)
	}

	var got []string
	path := "/v2/tagged/tags/list?n=2"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		resp := tr.do(t, http.MethodGet, path, nil, anonymous())
		wantStatus(t, resp, http.StatusOK)
		var tl tagList
		if err := json.Unmarshal(resp.body, &tl); err != nil || tl.Name != "tagged" {
			t.Fatalf("tags body %s: %v", resp.body, err)
		}
		got = append(got, tl.Tags...)
		path = nextLink(t, resp)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("paged tags = %v", got)
	}

	tests := []struct {
		query string
		tags  string
		link  bool
	}{
		{"", "a,b,c,d,e", false},
		{"?n=5", "a,b,c,d,e", false},
		{"?n=0", "", false},
		{"?n=1&last=c", "d", true},
		{"?last=e", "", false},
		{"?n=-3", "a,b,c,d,e", false},
		{"?n=junk", "a,b,c,d,e", false},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp := tr.do(t, http.MethodGet, "/v2/tagged/tags/list"+tt.query, nil)
			wantStatus(t, resp, http.StatusOK)
			var tl tagList
			if err := json.Unmarshal(resp.body, &tl); err != nil || tl.Tags == nil {
				t.Fatalf("tags body %s: %v", resp.body, err)
			}
			if strings.Join(tl.Tags, ",") != tt.tags {
				t.Fatalf("tags = %v, want %s", tl.Tags, tt.tags)
			}
			if (resp.header.Get("Link") != "") != tt.link {
				t.Fatalf("Link = %q", resp.header.Get("Link"))
			}
		})
	}

	wantError(t, tr.do(t, http.MethodGet, "/v2/unknown/tags/list", nil), http.StatusNotFound, codeNameUnknown)
}

func TestTagsCap(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	body := mustJSON(t, tr.image(t, "many", "x"))
	rec := oci.Record{Repo: "many", Digest: oci.DigestOf(body), MediaType: oci.MediaTypeImageManifest, Size: int64(len(body))}
	for i := range maxPageSize + 5 {
		if err := tr.state.PutManifest(t.Context(), rec, body, fmt.Sprintf("t%05d", i), oci.TagVersion{}); err != nil {
			t.Fatal(err)
		}
	}
	resp := tr.do(t, http.MethodGet, "/v2/many/tags/list?n=100000", nil)
	var tl tagList
	if err := json.Unmarshal(resp.body, &tl); err != nil {
		t.Fatal(err)
	}
	if len(tl.Tags) != maxPageSize {
		t.Fatalf("%d tags, want the cap %d", len(tl.Tags), maxPageSize)
	}
	wantHeader(t, resp, "Link", `</v2/many/tags/list?last=t00999&n=1000>; rel="next"`)
	resp = tr.do(t, http.MethodGet, nextLink(t, resp), nil)
	if err := json.Unmarshal(resp.body, &tl); err != nil || len(tl.Tags) != 5 {
		t.Fatalf("second page: %s", resp.body)
	}
}

// nextLink returns the path of a rel="next" Link header, or "".
func nextLink(t *testing.T, resp *response) string {
	t.Helper()
	link := resp.header.Get("Link")
	if link == "" {
		return ""
	}
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start != 0 || end < 0 || !strings.HasSuffix(link, `; rel="next"`) {
		t.Fatalf("Link = %q", link)
	}
	return link[1:end]
}

func TestCatalog(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	empty := tr.do(t, http.MethodGet, "/v2/_catalog", nil)
	wantStatus(t, empty, http.StatusOK)
	if string(empty.body) != `{"repositories":[]}` {
		t.Fatalf("empty catalog = %s", empty.body)
	}
	// A repository exists once it holds a manifest; blobs alone do not
	// make one.
	tr.pushBlob(t, "b/blobs-only", []byte("blob"))
	for _, repo := range []string{"z/last", "a/first", "m/middle"} {
		body := mustJSON(t, tr.image(t, repo, "c"))
		wantStatus(t, tr.putManifest(t, repo, "v1", body, oci.MediaTypeImageManifest), http.StatusCreated)
	}
	resp := tr.do(t, http.MethodGet, "/v2/_catalog?n=2", nil)
	wantStatus(t, resp, http.StatusOK)
	var c catalog
	if err := json.Unmarshal(resp.body, &c); err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Repositories, ",") != "a/first,m/middle" {
		t.Fatalf("page 1 = %v", c.Repositories)
	}
	wantHeader(t, resp, "Link", `</v2/_catalog?last=m%2Fmiddle&n=2>; rel="next"`)
	resp = tr.do(t, http.MethodGet, nextLink(t, resp), nil)
	if err := json.Unmarshal(resp.body, &c); err != nil || strings.Join(c.Repositories, ",") != "z/last" {
		t.Fatalf("page 2 = %s", resp.body)
	}
	if resp.header.Get("Link") != "" {
		t.Fatal("Link on the last page")
	}
}

// onlyPrefix is the admin Authorizer with a CatalogFilter that lets the
// caller see the repositories whose names begin with prefix.
type onlyPrefix struct {
	Authorizer
	prefix string
}

func (o onlyPrefix) Visible(context.Context, Identity) func(string) (bool, error) {
	return func(repo string) (bool, error) { return strings.HasPrefix(repo, o.prefix), nil }
}

// TestCatalogFilterReads: a filtered catalog page that skips many names
// reads them in a few batches, not n+1 at a time, and still pages
// through exactly what the filter lets through.
func TestCatalogFilterReads(t *testing.T) {
	tr := newTestRegistry(t, testOpts{auth: onlyPrefix{Authorizer: NewAdminAuth(&fakeUsers{}, true, "berth"), prefix: "v/"}})
	const hidden = 40
	for i := range hidden {
		repo := fmt.Sprintf("h%02d/app", i)
		wantStatus(t, tr.putManifest(t, repo, "v1", mustJSON(t, tr.image(t, repo, "c")), oci.MediaTypeImageManifest), http.StatusCreated)
	}
	for _, repo := range []string{"v/one", "v/two"} {
		wantStatus(t, tr.putManifest(t, repo, "v1", mustJSON(t, tr.image(t, repo, "c")), oci.MediaTypeImageManifest), http.StatusCreated)
	}
	var reads atomic.Int64
	tr.state.setFaults(nil, func() error { reads.Add(1); return nil })
	var got []string
	for next := "/v2/_catalog?n=1"; next != ""; {
		resp := tr.do(t, http.MethodGet, next, nil)
		wantStatus(t, resp, http.StatusOK)
		var c catalog
		if err := json.Unmarshal(resp.body, &c); err != nil {
			t.Fatal(err)
		}
		got = append(got, c.Repositories...)
		next = nextLink(t, resp)
	}
	if !slices.Equal(got, []string{"v/one", "v/two"}) {
		t.Fatalf("paged filtered catalog = %v", got)
	}
	// Page 1 reads 2 names, then the rest at once; page 2 one read.
	if n := reads.Load(); n > 3 {
		t.Fatalf("two pages of a filtered catalog over %d names took %d reads", hidden+2, n)
	}
}

func TestNamesAndRoutes(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	d := oci.DigestOf([]byte("n"))
	tests := []struct {
		name   string
		method string
		path   string
		status int
		code   errorCode
	}{
		{"upper case", http.MethodGet, "/v2/Upper/tags/list", http.StatusBadRequest, codeNameInvalid},
		{"trailing separator", http.MethodPost, "/v2/a-/blobs/uploads/", http.StatusBadRequest, codeNameInvalid},
		{"too long", http.MethodGet, "/v2/" + strings.Repeat("a", 256) + "/tags/list", http.StatusBadRequest, codeNameInvalid},
		{"path too long", http.MethodGet, "/v2/" + strings.Repeat("a/", 600) + "tags/list", http.StatusBadRequest, codeNameInvalid},
		{"bad referrers name", http.MethodGet, "/v2/A/referrers/" + d.String(), http.StatusBadRequest, codeNameInvalid},
		{"unknown route", http.MethodGet, "/v2/a/unknown", http.StatusNotFound, codeUnsupported},
		{"no name", http.MethodGet, "/v2/manifests/latest", http.StatusNotFound, codeUnsupported},
		{"method not allowed", http.MethodPost, "/v2/a/manifests/latest", http.StatusMethodNotAllowed, codeUnsupported},
		{"catalog delete", http.MethodDelete, "/v2/_catalog", http.StatusMethodNotAllowed, codeUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tr.do(t, tt.method, tt.path, nil)
			wantError(t, resp, tt.status, tt.code)
			wantHeader(t, resp, "Docker-Distribution-API-Version", "registry/2.0")
		})
	}
	resp := tr.do(t, http.MethodPut, "/v2/a/tags/list", nil)
	wantHeader(t, resp, "Allow", "GET, HEAD")

	// A repository may be named like the keywords.
	for _, repo := range []string{"a/blobs/b", "x/manifests/y", "blobs/uploads", "tags/list/z"} {
		t.Run(repo, func(t *testing.T) {
			body := mustJSON(t, tr.image(t, repo, repo))
			wantStatus(t, tr.putManifest(t, repo, "v1", body, oci.MediaTypeImageManifest), http.StatusCreated)
			wantStatus(t, tr.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v1", nil), http.StatusOK)
			resp := tr.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil)
			if !strings.Contains(string(resp.body), `"name":"`+repo+`"`) {
				t.Fatalf("tags list = %s", resp.body)
			}
		})
	}
}

func TestParseRoute(t *testing.T) {
	tests := []struct {
		path string
		want route
		ok   bool
	}{
		{"/v2/", route{kind: routeBase}, true},
		{"/v2", route{kind: routeBase}, true},
		{"/v2/_catalog", route{kind: routeCatalog}, true},
		{"/v2/a/b/blobs/sha256:x", route{routeBlob, "a/b", "sha256:x"}, true},
		{"/v2/a/blobs/uploads/", route{routeUploads, "a", ""}, true},
		{"/v2/a/blobs/uploads", route{routeUploads, "a", ""}, true},
		{"/v2/a/blobs/uploads/id-1", route{routeUpload, "a", "id-1"}, true},
		{"/v2/a/blobs/b/blobs/uploads/id", route{routeUpload, "a/blobs/b", "id"}, true},
		{"/v2/a/blobs/uploads/blobs/d", route{routeBlob, "a/blobs/uploads", "d"}, true},
		{"/v2/a/manifests/latest", route{routeManifest, "a", "latest"}, true},
		{"/v2/a/manifests/b/manifests/c", route{routeManifest, "a/manifests/b", "c"}, true},
		{"/v2/a/tags/list", route{kind: routeTags, name: "a"}, true},
		{"/v2/a/referrers/sha256:x", route{routeReferrers, "a", "sha256:x"}, true},
		{"/v2/tags/list", route{}, false},
		{"/v2/a/tags/list/", route{}, false},
		{"/v3/a/tags/list", route{}, false},
		{"/v2x/a/tags/list", route{}, false},
		{"/v2/a", route{}, false},
	}
	for _, tt := range tests {
		got, ok := parseRoute(tt.path)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseRoute(%q) = %+v, %v; want %+v, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/blobs/uploads/x", "/v2/a/manifests/b", "/v2//", "/v2/a/tags/list"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt, ok := parseRoute(path)
		if !ok {
			return
		}
		if int(rt.kind) >= len(routeLabels) {
			t.Fatalf("kind %d out of range", rt.kind)
		}
		if rt.kind != routeBase && rt.kind != routeCatalog && !strings.Contains(path, rt.name) {
			t.Fatalf("name %q not in %q", rt.name, path)
		}
	})
}

// FuzzServe sends arbitrary methods, paths and headers through the handler:
// it must answer without panicking, and never with a 5xx.
func FuzzServe(f *testing.F) {
	tr := newTestRegistry(f, testOpts{})
	d := oci.DigestOf([]byte("x")).String()
	for _, s := range []string{"/v2/", "/v2/a/blobs/" + d, "/v2/a/blobs/uploads/", "/v2/a/manifests/latest",
		"/v2/a/tags/list?n=-1&last=\xff", "/v2/_catalog?n=99999999999999999999", "/v2/a/referrers/" + d + "?artifactType=x"} {
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
			f.Add(m, s, "0-1", "x")
		}
	}
	f.Fuzz(func(t *testing.T, method, target, contentRange, body string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(method, " \t\r\n") || method == "" {
			return
		}
		req, err := http.NewRequest(method, "http://registry"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Range", contentRange)
		req.SetBasicAuth(adminUser, adminPass)
		rec := httptest.NewRecorder()
		tr.reg.Handler().ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body)
		}
	})
}
