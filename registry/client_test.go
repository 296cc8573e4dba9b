package registry

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestClientGoContainerRegistry drives the registry with go-containerregistry
// as crane, ko and many CI tools do.
func TestClientGoContainerRegistry(t *testing.T) {
	tr := newTestRegistry(t, testOpts{})
	host := strings.TrimPrefix(tr.srv.URL, "http://")
	admin := authn.FromConfig(authn.AuthConfig{Username: adminUser, Password: adminPass})
	push := []remote.Option{remote.WithAuth(admin), remote.WithContext(t.Context())}
	pull := []remote.Option{remote.WithContext(t.Context())} // anonymous
	ref := func(s string) name.Reference {
		t.Helper()
		r, err := name.ParseReference(host+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// An image: push, pull, validate every blob.
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	imgRef := ref("ggcr/image:v1")
	if err := remote.Write(imgRef, img, push...); err != nil {
		t.Fatalf("remote.Write: %v", err)
	}
	got, err := remote.Image(imgRef, pull...)
	if err != nil {
		t.Fatalf("remote.Image: %v", err)
	}
	readImage(t, got)
	wantDigest, _ := img.Digest()
	if d, _ := got.Digest(); d != wantDigest {
		t.Fatalf("pulled %s, pushed %s", d, wantDigest)
	}

	// An OCI image, pushed by digest only, then tagged.
	ociImg := mutate.MediaType(img, types.OCIManifestSchema1)
	ociImg = mutate.ConfigMediaType(ociImg, types.OCIConfigJSON)
	ociDigest, _ := ociImg.Digest()
	if err := remote.Write(ref("ggcr/image@"+ociDigest.String()), ociImg, push...); err != nil {
		t.Fatalf("write by digest: %v", err)
	}
	if err := remote.Tag(ref("ggcr/image:oci").(name.Tag), ociImg, push...); err != nil {
		t.Fatalf("remote.Tag: %v", err)
	}

	// An index of images.
	idx, err := random.Index(1024, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	idxRef := ref("ggcr/index:v1")
	if err := remote.WriteIndex(idxRef, idx, push...); err != nil {
		t.Fatalf("remote.WriteIndex: %v", err)
	}
	gotIdx, err := remote.Index(idxRef, pull...)
	if err != nil {
		t.Fatalf("remote.Index: %v", err)
	}
	children, err := gotIdx.IndexManifest()
	if err != nil || len(children.Manifests) != 3 {
		t.Fatalf("index manifest = %+v, %v", children, err)
	}
	for _, c := range children.Manifests {
		child, err := gotIdx.Image(c.Digest)
		if err != nil {
			t.Fatal(err)
		}
		readImage(t, child)
	}
	idxDigest, _ := idx.Digest()

	// Tags and catalog.
	tags, err := remote.List(imgRef.Context(), pull...)
	if err != nil || !slices.Equal(tags, []string{"oci", "v1"}) {
		t.Fatalf("remote.List = %v, %v", tags, err)
	}
	repos, err := remote.Catalog(t.Context(), imgRef.Context().Registry, pull...)
	if err != nil || !slices.Equal(repos, []string{"ggcr/image", "ggcr/index"}) {
		t.Fatalf("remote.Catalog = %v, %v", repos, err)
	}

	// A referrer attached to the image, found through the referrers API.
	subject, err := remote.Head(imgRef, pull...)
	if err != nil {
		t.Fatal(err)
	}
	sbom := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	sbom = mutate.ConfigMediaType(sbom, "application/vnd.example.sbom+json")
	sbom = mutate.Subject(sbom, *subject).(v1.Image)
	sbomDigest, _ := sbom.Digest()
	if err := remote.Write(ref("ggcr/image@"+sbomDigest.String()), sbom, push...); err != nil {
		t.Fatalf("write referrer: %v", err)
	}
	referrers, err := remote.Referrers(imgRef.Context().Digest(subject.Digest.String()), pull...)
	if err != nil {
		t.Fatalf("remote.Referrers: %v", err)
	}
	im, err := referrers.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != sbomDigest || im.Manifests[0].ArtifactType != "application/vnd.example.sbom+json" {
		t.Fatalf("referrers = %+v", im.Manifests)
	}

	// A copy to another repository mounts the blobs. One job: with several,
	// go-containerregistry v0.20.6's pusher races on its own mount scopes
	// (maybeUpdateScopes vs checkExistingBlob), which -race reports.
	auth := crane.WithAuth(admin)
	if err := crane.Copy(host+"/ggcr/image:v1", host+"/ggcr/copy:v1", crane.Insecure, auth, crane.WithJobs(1)); err != nil {
		t.Fatalf("crane.Copy: %v", err)
	}
	if d, err := crane.Digest(host+"/ggcr/copy:v1", crane.Insecure); err != nil || d != wantDigest.String() {
		t.Fatalf("copied digest = %s, %v", d, err)
	}

	// Delete the index by digest; it is gone.
	if err := remote.Delete(ref("ggcr/index@"+idxDigest.String()), push...); err != nil {
		t.Fatalf("remote.Delete: %v", err)
	}
	_, err = remote.Index(idxRef, pull...)
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
		t.Fatalf("pull of deleted index = %v", err)
	}

	// Anonymous clients cannot push.
	err = remote.Write(ref("ggcr/anon:v1"), img, pull...)
	if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous push = %v", err)
	}
}

// readImage reads an image's config and every layer; go-containerregistry
// verifies each against its digest as it reads.
func readImage(t *testing.T, img v1.Image) {
	t.Helper()
	if _, err := img.RawConfigFile(); err != nil {
		t.Fatalf("config: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
	}
}
