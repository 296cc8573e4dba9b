package registry

import (
	"net/http"
	"net/url"
	"strconv"
)

// maxPageSize caps ?n= on the tags list and the catalog, and is the page
// size when n is absent or malformed.
const maxPageSize = 1000

// maxLastLength bounds ?last=: longer than any tag or name, so a longer
// value cannot match anything a page could start after usefully.
const maxLastLength = 512

// pageParams reads ?n= and ?last=. n is capped at maxPageSize; n=0 asks for
// an empty page.
func pageParams(r *http.Request) (n int, last string) {
	q := r.URL.Query()
	n = maxPageSize
	if s := q.Get("n"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v >= 0 {
			n = min(v, maxPageSize)
		}
	}
	last = q.Get("last")
	if len(last) > maxLastLength {
		last = last[:maxLastLength]
	}
	return n, last
}

// trimPage cuts a list fetched with n+1 entries back to n and reports the
// "last" of the next page, or "" when this page is the last one.
func trimPage(list []string, n int) ([]string, string) {
	if list == nil {
		list = []string{}
	}
	if n == 0 {
		return list[:0], ""
	}
	if len(list) <= n {
		return list, ""
	}
	list = list[:n]
	return list, list[n-1]
}

// setNextLink sets the RFC 5988 Link header of the next page.
func setNextLink(w http.ResponseWriter, path string, n int, last string) {
	q := url.Values{"n": {strconv.Itoa(n)}, "last": {last}}
	w.Header().Set("Link", "<"+path+"?"+q.Encode()+`>; rel="next"`)
}

type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// getTags answers GET /v2/<name>/tags/list: tags in lexical order, at most
// n after last, with a Link to the next page when there may be more. A
// repository the state does not know is NAME_UNKNOWN.
func (reg *Registry) getTags(w http.ResponseWriter, r *http.Request, rt route) {
	n, last := pageParams(r)
	tags, err := reg.state.Tags(r.Context(), rt.name, last, n+1)
	if err != nil {
		reg.writeError(w, r, notFoundAs(err, newAPIError(codeNameUnknown, nil)))
		return
	}
	tags, next := trimPage(tags, n)
	if next != "" {
		setNextLink(w, "/v2/"+rt.name+"/tags/list", n, next)
	}
	writeJSON(w, http.StatusOK, tagList{Name: rt.name, Tags: tags})
}
