package registry

import "net/http"

type catalog struct {
	Repositories []string `json:"repositories"`
}

// getCatalog answers GET /v2/_catalog: repository names in lexical order,
// paginated like the tags list. Who may list is the Authorizer's decision
// (ActionCatalog).
func (reg *Registry) getCatalog(w http.ResponseWriter, r *http.Request, _ route) {
	n, last := pageParams(r)
	repos, err := reg.state.Repositories(r.Context(), last, n+1)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	repos, next := trimPage(repos, n)
	if next != "" {
		setNextLink(w, "/v2/_catalog", n, next)
	}
	writeJSON(w, http.StatusOK, catalog{Repositories: repos})
}
