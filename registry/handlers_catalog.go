package registry

import "net/http"

type catalog struct {
	Repositories []string `json:"repositories"`
}

// maxCatalogScan bounds the repository names one catalog request reads; a
// filtered page that comes up short still links to the next one.
const maxCatalogScan = 10 * maxPageSize

// getCatalog answers GET /v2/_catalog: repository names in lexical order,
// paginated like the tags list. Who may list is the Authorizer's decision
// (ActionCatalog); what a caller sees, its CatalogFilter's, when it has one.
func (reg *Registry) getCatalog(w http.ResponseWriter, r *http.Request, _ route) {
	n, last := pageParams(r)
	repos, next, err := reg.visibleRepositories(r, n, last)
	if err != nil {
		reg.writeError(w, r, err)
		return
	}
	if next != "" {
		setNextLink(w, "/v2/_catalog", n, next)
	}
	writeJSON(w, http.StatusOK, catalog{Repositories: repos})
}

// visibleRepositories pages through the repositories after last and keeps
// the ones the caller may see, up to n; next is where the following page
// starts ("" at the end). It reads n+1 names first — one read when the
// caller sees them all — then up to maxPageSize at a time, and at most
// maxCatalogScan in all.
func (reg *Registry) visibleRepositories(r *http.Request, n int, last string) (repos []string, next string, err error) {
	ctx := r.Context()
	visible := func(string) (bool, error) { return true, nil }
	if reg.catalog != nil {
		visible = reg.catalog.Visible(ctx, identityFrom(ctx))
	}
	repos = []string{}
	if n == 0 {
		return repos, "", nil
	}
	cursor, scanned, batch := last, 0, n+1
	for {
		names, err := reg.state.Repositories(ctx, cursor, batch)
		if err != nil {
			return nil, "", err
		}
		for _, name := range names {
			ok, err := visible(name)
			if err != nil {
				return nil, "", err
			}
			if ok {
				if len(repos) == n {
					// One more visible name: there is a next page.
					return repos, repos[n-1], nil
				}
				repos = append(repos, name)
			}
			cursor = name
			scanned++
		}
		if len(names) < batch {
			return repos, "", nil
		}
		if scanned >= maxCatalogScan {
			return repos, cursor, nil
		}
		// The caller sees only some: read more at a time.
		batch = min(maxPageSize, maxCatalogScan-scanned)
	}
}
