package registry

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/berth-registry/berth/oci"
)

// referrersIndex is the OCI image index the referrers API answers.
type referrersIndex struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Manifests     []oci.Descriptor `json:"manifests"`
}

// getReferrers answers GET /v2/<name>/referrers/<digest>: the manifests of
// the repository whose subject is digest, as an OCI index, filtered by
// ?artifactType= (announced by OCI-Filters-Applied). A subject with no
// referrers, or one that does not exist, gets an empty index, as the spec
// says.
func (reg *Registry) getReferrers(w http.ResponseWriter, r *http.Request, rt route) {
	d, err := parseDigest(rt.arg)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	descs, err := reg.state.Referrers(r.Context(), rt.name, d)
	if err != nil && !errors.Is(err, oci.ErrNotFound) {
		reg.writeError(w, r, err)
		return
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		kept := descs[:0:0]
		for _, desc := range descs {
			if desc.ArtifactType == at {
				kept = append(kept, desc)
			}
		}
		descs = kept
		w.Header().Set(headerFilters, "artifactType")
	}
	if descs == nil {
		descs = []oci.Descriptor{}
	}
	body, err := json.Marshal(referrersIndex{
		SchemaVersion: 2,
		MediaType:     oci.MediaTypeImageIndex,
		Manifests:     descs,
	})
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	writeBody(w, http.StatusOK, oci.MediaTypeImageIndex, body)
}
