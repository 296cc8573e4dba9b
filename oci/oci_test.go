package oci

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	sha256Hex := strings.Repeat("a", 64)
	tests := []struct {
		in   string
		ok   bool
		alg  string
		desc string
	}{
		{"sha256:" + sha256Hex, true, "sha256", "sha256"},
		{"sha512:" + strings.Repeat("0", 128), true, "sha512", "sha512"},
		{"sha256:" + strings.Repeat("A", 64), false, "", "uppercase hex"},
		{"sha256:" + sha256Hex[:63], false, "", "short"},
		{"sha256:" + sha256Hex + "0", false, "", "long"},
		{"md5:" + strings.Repeat("a", 32), false, "", "unknown algorithm"},
		{sha256Hex, false, "", "no algorithm"},
		{"sha256:../../../../etc/passwd" + strings.Repeat("a", 36), false, "", "path"},
		{"", false, "", "empty"},
		{"sha256:", false, "", "empty hex"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			d, err := ParseDigest(tt.in)
			if tt.ok != (err == nil) {
				t.Fatalf("ParseDigest(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrDigestInvalid) {
					t.Fatalf("error %v does not wrap ErrDigestInvalid", err)
				}
				return
			}
			if d.Algorithm() != tt.alg {
				t.Fatalf("Algorithm() = %q, want %q", d.Algorithm(), tt.alg)
			}
		})
	}
}

func TestDigestOfAndVerify(t *testing.T) {
	d := DigestOf(nil)
	if d != "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatalf("DigestOf(nil) = %s", d)
	}
	if !d.Verify(nil) || d.Verify([]byte("x")) {
		t.Fatal("Verify does not match DigestOf")
	}
	h := NewHash("sha512")
	h.Write([]byte("abc"))
	d512 := DigestFromHash("sha512", h)
	if _, err := ParseDigest(string(d512)); err != nil || !d512.Verify([]byte("abc")) {
		t.Fatalf("sha512 round trip: %s %v", d512, err)
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"library/alpine", true},
		{"a", true},
		{"a/b/c/d", true},
		{"my-org/my_app.v2", true},
		{"a__b", true},
		{"a---b", true},
		{"a___b", false},
		{"Upper/case", false},
		{"/leading", false},
		{"trailing/", false},
		{"a//b", false},
		{"..", false},
		{"a/../b", false},
		{"a/./b", false},
		{".hidden", false},
		{"a/b-", false},
		{"", false},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
		{"a\x00b", false},
		{"a b", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if tt.ok != (err == nil) {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrNameInvalid) {
			t.Errorf("ValidateName(%q) error does not wrap ErrNameInvalid", tt.name)
		}
	}
}

func TestValidateTag(t *testing.T) {
	tests := []struct {
		tag string
		ok  bool
	}{
		{"latest", true},
		{"v1.2.3-rc_1", true},
		{"_x", true},
		{"sha256-" + strings.Repeat("a", 64) + ".sig", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{".x", false},
		{"-x", false},
		{"a:b", false},
		{"a/b", false},
		{"", false},
	}
	for _, tt := range tests {
		if err := ValidateTag(tt.tag); tt.ok != (err == nil) {
			t.Errorf("ValidateTag(%q) = %v, want ok=%v", tt.tag, err, tt.ok)
		}
	}
}

func TestParseManifest(t *testing.T) {
	cfg := `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":2}`
	layer := `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:` + strings.Repeat("b", 64) + `","size":3}`
	foreign := `{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"sha256:` + strings.Repeat("d", 64) + `","size":3,"urls":["https://example.invalid/l"]}`
	child := `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("c", 64) + `","size":100}`
	subject := `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("e", 64) + `","size":100}`

	image := `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `","config":` + cfg + `,"layers":[` + layer + `,` + foreign + `]}`
	artifact := `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `","artifactType":"application/x.sig","config":` + cfg + `,"layers":[],"subject":` + subject + `}`
	index := `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[` + child + `]}`
	noMediaType := `{"schemaVersion":2,"config":` + cfg + `,"layers":[]}`
	docker := `{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifest + `","config":` + cfg + `,"layers":[` + layer + `]}`

	tests := []struct {
		desc         string
		contentType  string
		body         string
		wantErr      error
		wantType     string
		wantArtifact string
		wantBlobs    int
		wantChildren int
		wantSubject  bool
	}{
		{"image", MediaTypeImageManifest, image, nil, MediaTypeImageManifest, "application/vnd.oci.image.config.v1+json", 2, 0, false},
		{"content type with params", MediaTypeImageManifest + "; charset=utf-8", image, nil, MediaTypeImageManifest, "application/vnd.oci.image.config.v1+json", 2, 0, false},
		{"artifact with subject", MediaTypeImageManifest, artifact, nil, MediaTypeImageManifest, "application/x.sig", 1, 0, true},
		{"index", MediaTypeImageIndex, index, nil, MediaTypeImageIndex, "", 0, 1, false},
		{"docker", MediaTypeDockerManifest, docker, nil, MediaTypeDockerManifest, "application/vnd.oci.image.config.v1+json", 2, 0, false},
		{"type from content type", MediaTypeImageManifest, noMediaType, nil, MediaTypeImageManifest, "application/vnd.oci.image.config.v1+json", 1, 0, false},
		{"type inferred", "", noMediaType, nil, MediaTypeImageManifest, "application/vnd.oci.image.config.v1+json", 1, 0, false},
		{"mismatch", MediaTypeImageIndex, image, ErrManifestInvalid, "", "", 0, 0, false},
		{"not json", MediaTypeImageManifest, "{", ErrManifestInvalid, "", "", 0, 0, false},
		{"schema 1", MediaTypeImageManifest, `{"schemaVersion":1,"config":` + cfg + `}`, ErrManifestInvalid, "", "", 0, 0, false},
		{"no config", MediaTypeImageManifest, `{"schemaVersion":2,"layers":[]}`, ErrManifestInvalid, "", "", 0, 0, false},
		{"index with layers", MediaTypeImageIndex, `{"schemaVersion":2,"manifests":[],"layers":[` + layer + `]}`, ErrManifestInvalid, "", "", 0, 0, false},
		{"bad digest", MediaTypeImageManifest, `{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1}}`, ErrManifestInvalid, "", "", 0, 0, false},
		{"negative size", MediaTypeImageManifest, `{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:` + strings.Repeat("a", 64) + `","size":-1}}`, ErrManifestInvalid, "", "", 0, 0, false},
		{"unknown type", "application/json", `{"schemaVersion":2}`, ErrUnsupported, "", "", 0, 0, false},
		{"too large", MediaTypeImageManifest, strings.Repeat(" ", MaxManifestSize+1), ErrManifestInvalid, "", "", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			m, err := ParseManifest(tt.contentType, []byte(tt.body))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != tt.wantType || m.ArtifactType != tt.wantArtifact {
				t.Fatalf("types = %q %q, want %q %q", m.MediaType, m.ArtifactType, tt.wantType, tt.wantArtifact)
			}
			if len(m.Blobs()) != tt.wantBlobs || len(m.Manifests) != tt.wantChildren || (m.Subject != nil) != tt.wantSubject {
				t.Fatalf("blobs %d children %d subject %v", len(m.Blobs()), len(m.Manifests), m.Subject != nil)
			}
			rec := NewRecord("r", DigestOf([]byte(tt.body)), int64(len(tt.body)), m, 42)
			if len(rec.Blobs) != tt.wantBlobs || len(rec.Children) != tt.wantChildren || (rec.Subject != "") != tt.wantSubject {
				t.Fatalf("record %+v does not mirror the manifest", rec)
			}
			if desc := rec.Descriptor(); desc.Digest != rec.Digest || desc.ArtifactType != tt.wantArtifact {
				t.Fatalf("descriptor %+v", desc)
			}
		})
	}
}

func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("a", 64))
	f.Add("sha512:" + strings.Repeat("f", 128))
	f.Add("sha256:../x")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		if string(d) != s || strings.ContainsAny(d.Hex(), "/.\\") || d.Algorithm() == "" {
			t.Fatalf("accepted unsafe digest %q", s)
		}
	})
}

func FuzzValidateName(f *testing.F) {
	f.Add("library/alpine")
	f.Add("a/../b")
	f.Add("a__b/c-d.e")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateName(s) != nil {
			return
		}
		if len(s) > MaxNameLength || strings.Contains(s, "..") || strings.HasPrefix(s, "/") ||
			strings.HasSuffix(s, "/") || strings.Contains(s, "//") || strings.ContainsAny(s, "\\:\x00 ") {
			t.Fatalf("accepted unsafe name %q", s)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add(MediaTypeImageManifest, []byte(`{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:`+strings.Repeat("a", 64)+`","size":1}}`))
	f.Add(MediaTypeImageIndex, []byte(`{"schemaVersion":2,"manifests":[]}`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		m, err := ParseManifest(ct, body)
		if err != nil {
			return
		}
		if !IsManifestMediaType(m.MediaType) {
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		for _, d := range m.descriptors() {
			if _, err := ParseDigest(string(d.Digest)); err != nil {
				t.Fatalf("accepted descriptor with bad digest %q", d.Digest)
			}
		}
	})
}
