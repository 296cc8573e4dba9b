package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3 description of /api/v1, written by hand; a
// test checks that it documents every route and method and nothing else.
//
//go:embed openapi.json
var openAPI []byte

// getOpenAPI answers GET /api/v1/openapi.json.
func (h *Handler) getOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPI)
}
