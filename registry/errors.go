package registry

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Errors of the registry's HTTP layer. Storage sentinels (ErrUploadUnknown,
// ErrRangeInvalid, ErrBlobTooLarge) live with the storage code; every one of
// them is mapped to an OCI error code by classify below.
var (
	// ErrUnauthorized: the request carries no credentials, or wrong ones,
	// and credentials would help. Answered 401 with a WWW-Authenticate
	// challenge.
	ErrUnauthorized = errors.New("authentication required")
	// ErrDenied: the credentials are valid but not enough for the access.
	ErrDenied = errors.New("access denied")
)

// errorCode is an OCI distribution-spec error code.
type errorCode string

// The codes of the distribution spec (v1.1, "Error Codes"), plus
// RANGE_INVALID, which distribution answers to an out-of-order chunk.
const (
	codeBlobUnknown         errorCode = "BLOB_UNKNOWN"
	codeBlobUploadInvalid   errorCode = "BLOB_UPLOAD_INVALID"
	codeBlobUploadUnknown   errorCode = "BLOB_UPLOAD_UNKNOWN"
	codeDigestInvalid       errorCode = "DIGEST_INVALID"
	codeManifestBlobUnknown errorCode = "MANIFEST_BLOB_UNKNOWN"
	codeManifestInvalid     errorCode = "MANIFEST_INVALID"
	codeManifestUnknown     errorCode = "MANIFEST_UNKNOWN"
	codeNameInvalid         errorCode = "NAME_INVALID"
	codeNameUnknown         errorCode = "NAME_UNKNOWN"
	codeSizeInvalid         errorCode = "SIZE_INVALID"
	codeUnauthorized        errorCode = "UNAUTHORIZED"
	codeDenied              errorCode = "DENIED"
	codeUnsupported         errorCode = "UNSUPPORTED"
	codeTooManyRequests     errorCode = "TOOMANYREQUESTS"
	codeRangeInvalid        errorCode = "RANGE_INVALID"
	codeUnavailable         errorCode = "UNAVAILABLE"
	codeUnknown             errorCode = "UNKNOWN"
)

// errorTable is the one table of codes: the HTTP status each is answered
// with and the message clients see.
var errorTable = map[errorCode]struct {
	status  int
	message string
}{
	codeBlobUnknown:         {http.StatusNotFound, "blob unknown to registry"},
	codeBlobUploadInvalid:   {http.StatusBadRequest, "blob upload invalid"},
	codeBlobUploadUnknown:   {http.StatusNotFound, "blob upload unknown to registry"},
	codeDigestInvalid:       {http.StatusBadRequest, "provided digest did not match uploaded content"},
	codeManifestBlobUnknown: {http.StatusBadRequest, "manifest references a manifest or blob unknown to registry"},
	codeManifestInvalid:     {http.StatusBadRequest, "manifest invalid"},
	codeManifestUnknown:     {http.StatusNotFound, "manifest unknown to registry"},
	codeNameInvalid:         {http.StatusBadRequest, "invalid repository name"},
	codeNameUnknown:         {http.StatusNotFound, "repository name not known to registry"},
	codeSizeInvalid:         {http.StatusBadRequest, "provided length did not match content length"},
	codeUnauthorized:        {http.StatusUnauthorized, "authentication required"},
	codeDenied:              {http.StatusForbidden, "requested access to the resource is denied"},
	codeUnsupported:         {http.StatusBadRequest, "the operation is unsupported"},
	codeTooManyRequests:     {http.StatusTooManyRequests, "too many requests"},
	codeRangeInvalid:        {http.StatusRequestedRangeNotSatisfiable, "invalid content range"},
	codeUnavailable:         {http.StatusServiceUnavailable, "service unavailable, retry later"},
	codeUnknown:             {http.StatusInternalServerError, "unknown error"},
}

// apiError is an error a handler built on purpose: a code, optionally a
// status other than the table's, and a detail safe to show to the client.
type apiError struct {
	code    errorCode
	status  int    // 0: the table's
	message string // "": the table's
	detail  any
	err     error // the cause, for errors.Is and the log
}

func (e *apiError) Error() string {
	if e.err != nil {
		return string(e.code) + ": " + e.err.Error()
	}
	return string(e.code)
}

func (e *apiError) Unwrap() error { return e.err }

// newAPIError returns an error answered with code and detail.
func newAPIError(code errorCode, detail any) *apiError {
	return &apiError{code: code, detail: detail}
}

// withDetail keeps err's classification and attaches a detail for the client.
// Only pass details built from request data, never a storage error string:
// those may contain file paths.
func withDetail(err error, detail any) error {
	var ae *apiError
	if errors.As(err, &ae) {
		cp := *ae
		cp.detail = detail
		return &cp
	}
	code, status := classify(err)
	return &apiError{code: code, status: status, message: policyMessage(err), detail: detail, err: err}
}

// classify maps a domain error to its OCI code and HTTP status.
func classify(err error) (errorCode, int) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.code, statusOf(ae.code, ae.status)
	}
	code, status := codeUnknown, 0
	switch {
	case errors.Is(err, oci.ErrUnavailable):
		code = codeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codeUnavailable
	case errors.Is(err, ErrUnauthorized):
		code = codeUnauthorized
	case errors.Is(err, oci.ErrSuperseded):
		code, status = codeDenied, http.StatusConflict
	case errors.Is(err, oci.ErrPreconditionFailed):
		code, status = codeDenied, http.StatusPreconditionFailed
	case errors.Is(err, policy.ErrNoProject):
		code = codeNameUnknown
	case errors.Is(err, ErrDenied), errors.Is(err, oci.ErrDenied):
		code = codeDenied
	case errors.Is(err, ErrBlobTooLarge):
		code, status = codeSizeInvalid, http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrRangeInvalid):
		code = codeRangeInvalid
	case errors.Is(err, ErrUploadUnknown):
		code = codeBlobUploadUnknown
	case errors.Is(err, oci.ErrDigestInvalid):
		code = codeDigestInvalid
	case errors.Is(err, oci.ErrNameInvalid):
		code = codeNameInvalid
	case errors.Is(err, oci.ErrTagInvalid), errors.Is(err, oci.ErrManifestInvalid):
		code = codeManifestInvalid
	case errors.Is(err, oci.ErrManifestBlobUnknown):
		code = codeManifestBlobUnknown
	case errors.Is(err, oci.ErrUnsupported):
		code = codeUnsupported
	case errors.Is(err, oci.ErrNotFound):
		// Handlers say which thing was missing; a bare one is a manifest.
		code = codeManifestUnknown
	}
	return code, statusOf(code, status)
}

// policyMessage is the message a client sees for a refusal by the access
// model — a quota, an immutable tag, a missing project — so that `docker
// push` prints why: the state's own text, which names only projects,
// repositories, tags, digests and numbers, without the trailing text of
// the OCI sentinel it wraps. Any other error gets the table's message ("").
func policyMessage(err error) string {
	var sentinel error
	switch {
	case errors.Is(err, policy.ErrQuotaExceeded), errors.Is(err, policy.ErrImmutable):
		sentinel = oci.ErrDenied
	case errors.Is(err, policy.ErrNoProject):
		sentinel = oci.ErrNotFound
	default:
		return ""
	}
	return strings.TrimSuffix(err.Error(), ": "+sentinel.Error())
}

func statusOf(code errorCode, override int) int {
	if override != 0 {
		return override
	}
	return errorTable[code].status
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    errorCode `json:"code"`
	Message string    `json:"message"`
	Detail  any       `json:"detail,omitempty"`
}

// retryAfterSeconds is what a 503 asks clients to wait: about one Raft
// election.
const retryAfterSeconds = 1

// writeError is the one place that turns an error into an OCI error
// response. Unknown errors become 500 UNKNOWN and are logged once with the
// request id; the client never sees a Go error string.
func (reg *Registry) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, status := classify(err)
	var detail any
	message := policyMessage(err)
	var ae *apiError
	if errors.As(err, &ae) {
		detail = ae.detail
		if ae.message != "" {
			message = ae.message
		}
	}
	switch code {
	case codeUnknown:
		if r.Context().Err() != nil {
			// The client went away; nobody reads the answer.
			reg.logFor(r).Debug("request canceled", keyError, err)
		} else {
			reg.logFor(r).Error("request failed", keyError, err)
		}
	case codeUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		reg.logFor(r).Warn("state unavailable", keyError, err)
	}
	writeErrorMessage(w, code, status, message, detail)
}

// writeErrorCode writes the envelope for one code, with the table's status
// unless status overrides it.
func writeErrorCode(w http.ResponseWriter, code errorCode, status int, detail any) {
	writeErrorMessage(w, code, status, "", detail)
}

// writeErrorMessage is writeErrorCode with a message other than the
// table's ("" keeps it).
func writeErrorMessage(w http.ResponseWriter, code errorCode, status int, message string, detail any) {
	status = statusOf(code, status)
	if message == "" {
		message = errorTable[code].message
	}
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{
		Code:    code,
		Message: message,
		Detail:  detail,
	}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Del("Docker-Content-Digest")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
