package registry

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/berth-registry/berth/oci"
)

// Response headers of the API.
const (
	headerContentDigest = "Docker-Content-Digest"
	headerUploadUUID    = "Docker-Upload-UUID"
	headerSubject       = "OCI-Subject"
	headerFilters       = "OCI-Filters-Applied"
)

// getBase answers GET /v2/: the client speaks to a registry/2.0 API and its
// credentials (if any, or if needed) are good; authorize already checked.
func (reg *Registry) getBase(w http.ResponseWriter, _ *http.Request, _ route) {
	writeJSON(w, http.StatusOK, struct{}{})
}

// writeJSON writes v as a JSON body with a Content-Length.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own plain structs are written here.
		writeErrorCode(w, codeUnknown, 0, nil)
		return
	}
	writeBody(w, status, "application/json", body)
}

// writeBody writes body with its type and length.
func writeBody(w http.ResponseWriter, status int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func blobURL(name string, d oci.Digest) string {
	return "/v2/" + name + "/blobs/" + d.String()
}

func uploadURL(name, id string) string {
	return "/v2/" + name + "/blobs/uploads/" + id
}

func manifestURL(name string, d oci.Digest) string {
	return "/v2/" + name + "/manifests/" + d.String()
}

// parseDigest validates a digest from the path or the query. Its error is
// DIGEST_INVALID with the offending value as detail (request data only).
func parseDigest(s string) (oci.Digest, error) {
	d, err := oci.ParseDigest(s)
	if err != nil {
		return "", withDetail(err, err.Error())
	}
	return d, nil
}

// rangeHeader is the Range an upload's state reports: the inclusive range of
// bytes received, "0-0" when none were (as distribution answers).
func rangeHeader(offset int64) string {
	end := offset - 1
	if end < 0 {
		end = 0
	}
	return "0-" + strconv.FormatInt(end, 10)
}
