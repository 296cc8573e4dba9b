package registry

import (
	"net/http"
	"testing"

	"github.com/berth-registry/berth/oci"
)

// TestTagVersions covers what replication between berth clusters relies
// on: the version a tag write carries, the version a read reports, the
// refusal of an older write, and conditional deletes.
func TestTagVersions(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	m1 := mustJSON(t, tr.image(t, "app", "one"))
	m2 := mustJSON(t, tr.image(t, "app", "two"))
	ct := withHeader("Content-Type", oci.MediaTypeImageManifest)

	// A local push gets a version, reported on reads by tag.
	wantStatus(t, tr.putManifest(t, "app", "v1", m1, oci.MediaTypeImageManifest), http.StatusCreated)
	head := tr.do(t, http.MethodHead, "/v2/app/manifests/v1", nil)
	wantStatus(t, head, http.StatusOK)
	local, err := oci.ParseTagVersion(head.header.Get(oci.HeaderTagVersion))
	if err != nil || local.IsZero() {
		t.Fatalf("version of a local push: %q (%v)", head.header.Get(oci.HeaderTagVersion), err)
	}

	// A replicated write with a higher version wins and is kept as is.
	newer := oci.TagVersion{HLC: local.HLC + 100, Origin: "cother"}
	resp := tr.do(t, http.MethodPut, "/v2/app/manifests/v1", m2, ct, withHeader(oci.HeaderTagVersion, newer.String()))
	wantStatus(t, resp, http.StatusCreated)
	if got := tr.do(t, http.MethodHead, "/v2/app/manifests/v1", nil).header.Get(oci.HeaderTagVersion); got != newer.String() {
		t.Fatalf("version after a newer write: %q, want %q", got, newer)
	}

	// An older one is refused with the version held, and changes nothing.
	older := oci.TagVersion{HLC: local.HLC + 50, Origin: "cthird"}
	resp = tr.do(t, http.MethodPut, "/v2/app/manifests/v1", m1, ct, withHeader(oci.HeaderTagVersion, older.String()))
	wantError(t, resp, http.StatusConflict, codeDenied)
	if got := resp.header.Get(oci.HeaderTagVersion); got != newer.String() {
		t.Fatalf("409 carries version %q, want %q", got, newer)
	}
	if got := tr.do(t, http.MethodHead, "/v2/app/manifests/v1", nil).header.Get(headerContentDigest); got != oci.DigestOf(m2).String() {
		t.Fatalf("an older write moved the tag to %s", got)
	}

	// A malformed version is a bad request, not a silent local write.
	resp = tr.do(t, http.MethodPut, "/v2/app/manifests/v1", m1, ct, withHeader(oci.HeaderTagVersion, "yesterday"))
	wantError(t, resp, http.StatusBadRequest, codeManifestInvalid)

	// A conditional delete leaves a tag that moved alone.
	resp = tr.do(t, http.MethodDelete, "/v2/app/manifests/v1", nil, withHeader(oci.HeaderIfDigest, oci.DigestOf(m1).String()))
	wantStatus(t, resp, http.StatusPreconditionFailed)
	resp = tr.do(t, http.MethodDelete, "/v2/app/manifests/v1", nil, withHeader(oci.HeaderIfDigest, oci.DigestOf(m2).String()))
	wantStatus(t, resp, http.StatusAccepted)

	// The tombstone's version answers a read of the deleted tag, and an
	// older write cannot bring the tag back.
	gone := tr.do(t, http.MethodHead, "/v2/app/manifests/v1", nil)
	wantStatus(t, gone, http.StatusNotFound)
	tomb, err := oci.ParseTagVersion(gone.header.Get(oci.HeaderTagVersion))
	if err != nil || tomb.Compare(newer) <= 0 {
		t.Fatalf("tombstone version %q (%v), want above %v", gone.header.Get(oci.HeaderTagVersion), err, newer)
	}
	resp = tr.do(t, http.MethodPut, "/v2/app/manifests/v1", m2, ct, withHeader(oci.HeaderTagVersion, newer.String()))
	wantError(t, resp, http.StatusConflict, codeDenied)
	// A local push after the delete brings it back with a newer version.
	wantStatus(t, tr.putManifest(t, "app", "v1", m1, oci.MediaTypeImageManifest), http.StatusCreated)
}
