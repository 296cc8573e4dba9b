package oci

import (
	"encoding/json"
	"fmt"
	"mime"
)

// Media types berth understands as manifests.
const (
	MediaTypeImageManifest  = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeImageIndex     = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeEmptyJSON      = "application/vnd.oci.empty.v1+json"
)

// MaxManifestSize bounds a manifest body (the spec's recommended minimum a
// registry must accept is 4 MiB).
const MaxManifestSize = 4 << 20

// IsManifestMediaType reports whether mt is one of the manifest media types.
func IsManifestMediaType(mt string) bool {
	switch mt {
	case MediaTypeImageManifest, MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerList:
		return true
	}
	return false
}

// IsIndexMediaType reports whether mt lists other manifests.
func IsIndexMediaType(mt string) bool {
	return mt == MediaTypeImageIndex || mt == MediaTypeDockerList
}

// Descriptor points at content, as in the OCI image spec.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       Digest            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	URLs         []string          `json:"urls,omitempty"`
	Platform     json.RawMessage   `json:"platform,omitempty"`
}

// wireManifest is the union of the image manifest and index JSON shapes.
type wireManifest struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *Descriptor       `json:"config,omitempty"`
	Layers        []Descriptor      `json:"layers,omitempty"`
	Manifests     []Descriptor      `json:"manifests,omitempty"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Manifest is what berth needs to know about a parsed manifest.
type Manifest struct {
	MediaType    string
	ArtifactType string // the effective artifact type: artifactType, else config.mediaType
	Config       *Descriptor
	Layers       []Descriptor
	Manifests    []Descriptor // children of an index
	Subject      *Descriptor
	Annotations  map[string]string
}

// ParseManifest validates a manifest body sent with Content-Type contentType.
//
// The media type is taken from the body's mediaType field, else from the
// Content-Type; when both are present they must agree. Config, layer and
// child descriptors must carry valid digests. Blob presence is checked by
// the caller, which knows the repository.
func ParseManifest(contentType string, body []byte) (*Manifest, error) {
	if len(body) > MaxManifestSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrManifestInvalid, MaxManifestSize)
	}
	var w wireManifest
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifestInvalid, err)
	}
	ct := contentType
	if ct != "" {
		if parsed, _, err := mime.ParseMediaType(ct); err == nil {
			ct = parsed
		}
	}
	mt := w.MediaType
	switch {
	case mt != "" && ct != "" && mt != ct:
		return nil, fmt.Errorf("%w: mediaType %q does not match Content-Type %q", ErrManifestInvalid, mt, ct)
	case mt == "":
		mt = ct
	}
	if mt == "" {
		// Neither says: infer, as the image spec allows for OCI manifests.
		if w.Manifests != nil {
			mt = MediaTypeImageIndex
		} else {
			mt = MediaTypeImageManifest
		}
	}
	if !IsManifestMediaType(mt) {
		return nil, fmt.Errorf("%w: media type %q", ErrUnsupported, mt)
	}
	if w.SchemaVersion == nil || *w.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion must be 2", ErrManifestInvalid)
	}
	m := &Manifest{
		MediaType:    mt,
		ArtifactType: w.ArtifactType,
		Subject:      w.Subject,
		Annotations:  w.Annotations,
	}
	if IsIndexMediaType(mt) {
		if w.Config != nil || w.Layers != nil {
			return nil, fmt.Errorf("%w: an index has no config or layers", ErrManifestInvalid)
		}
		m.Manifests = w.Manifests
	} else {
		if w.Config == nil {
			return nil, fmt.Errorf("%w: config is required", ErrManifestInvalid)
		}
		if w.Manifests != nil {
			return nil, fmt.Errorf("%w: an image manifest has no manifests list", ErrManifestInvalid)
		}
		m.Config = w.Config
		m.Layers = w.Layers
		if m.ArtifactType == "" {
			m.ArtifactType = w.Config.MediaType
		}
	}
	for _, d := range m.descriptors() {
		if _, err := ParseDigest(string(d.Digest)); err != nil {
			return nil, fmt.Errorf("%w: descriptor: %v", ErrManifestInvalid, err)
		}
		if d.Size < 0 {
			return nil, fmt.Errorf("%w: descriptor %s has a negative size", ErrManifestInvalid, d.Digest)
		}
	}
	return m, nil
}

func (m *Manifest) descriptors() []Descriptor {
	ds := m.Blobs()
	ds = append(ds, m.Manifests...)
	if m.Subject != nil {
		ds = append(ds, *m.Subject)
	}
	return ds
}

// Blobs returns the config and layer descriptors that must exist as blobs.
// Layers with URLs (foreign layers) are not required to be present.
func (m *Manifest) Blobs() []Descriptor {
	var ds []Descriptor
	if m.Config != nil {
		ds = append(ds, *m.Config)
	}
	for _, l := range m.Layers {
		if len(l.URLs) == 0 {
			ds = append(ds, l)
		}
	}
	return ds
}

// Record is a manifest as the state machine keeps it. The proposer fills it
// from ParseManifest and the request, so that apply stays deterministic.
type Record struct {
	Repo         string            `json:"repo"`
	Digest       Digest            `json:"digest"`
	MediaType    string            `json:"mediaType"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Subject      Digest            `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Blobs        []Digest          `json:"blobs,omitempty"`    // config and layers
	Children     []Digest          `json:"children,omitempty"` // manifests of an index
	Created      int64             `json:"created"`            // unix nanoseconds, chosen by the proposer
}

// NewRecord builds the state-machine record of a parsed manifest.
func NewRecord(repo string, dgst Digest, size int64, m *Manifest, created int64) Record {
	r := Record{
		Repo:         repo,
		Digest:       dgst,
		MediaType:    m.MediaType,
		Size:         size,
		ArtifactType: m.ArtifactType,
		Annotations:  m.Annotations,
		Created:      created,
	}
	if m.Subject != nil {
		r.Subject = m.Subject.Digest
	}
	for _, b := range m.Blobs() {
		r.Blobs = append(r.Blobs, b.Digest)
	}
	for _, c := range m.Manifests {
		r.Children = append(r.Children, c.Digest)
	}
	return r
}

// Descriptor returns the descriptor of the recorded manifest, as the
// referrers API lists it.
func (r Record) Descriptor() Descriptor {
	return Descriptor{
		MediaType:    r.MediaType,
		Digest:       r.Digest,
		Size:         r.Size,
		ArtifactType: r.ArtifactType,
		Annotations:  r.Annotations,
	}
}
