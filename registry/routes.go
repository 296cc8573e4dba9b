package registry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// maxPathLength bounds a request path: a name (255), a keyword and a digest
// (135) or an upload id fit many times over.
const maxPathLength = 1024

// routeKind is a route template of the API. Its label names it in metrics
// and logs, never the raw path.
type routeKind int

const (
	routeBase      routeKind = iota // /v2/
	routeCatalog                    // /v2/_catalog
	routeBlob                       // /v2/<name>/blobs/<digest>
	routeUploads                    // /v2/<name>/blobs/uploads/
	routeUpload                     // /v2/<name>/blobs/uploads/<id>
	routeManifest                   // /v2/<name>/manifests/<reference>
	routeTags                       // /v2/<name>/tags/list
	routeReferrers                  // /v2/<name>/referrers/<digest>
)

var routeLabels = [...]string{
	routeBase:      "base",
	routeCatalog:   "catalog",
	routeBlob:      "blobs",
	routeUploads:   "uploads",
	routeUpload:    "upload",
	routeManifest:  "manifests",
	routeTags:      "tags",
	routeReferrers: "referrers",
}

func (k routeKind) String() string { return routeLabels[k] }

// route is a parsed request path.
type route struct {
	kind routeKind
	name string // repository; empty for base and catalog
	arg  string // digest, manifest reference or upload id
}

// parseRoute parses a path under /v2/. Repository names contain slashes, so
// the route is recognised by its fixed-length tail: the last keyword
// segments win, and "a/blobs/b" is a valid repository name.
func parseRoute(path string) (route, bool) {
	rest, ok := strings.CutPrefix(path, "/v2")
	if !ok {
		return route{}, false
	}
	if rest == "" || rest == "/" {
		return route{kind: routeBase}, true
	}
	rest, ok = strings.CutPrefix(rest, "/")
	if !ok {
		return route{}, false
	}
	if rest == "_catalog" {
		return route{kind: routeCatalog}, true
	}
	s := strings.Split(rest, "/")
	n := len(s)
	name := func(k int) string { return strings.Join(s[:k], "/") }
	switch {
	case n >= 4 && s[n-3] == "blobs" && s[n-2] == "uploads":
		if s[n-1] == "" {
			return route{kind: routeUploads, name: name(n - 3)}, true
		}
		return route{kind: routeUpload, name: name(n - 3), arg: s[n-1]}, true
	case n >= 3 && s[n-2] == "blobs" && s[n-1] == "uploads":
		return route{kind: routeUploads, name: name(n - 2)}, true
	case n >= 3 && s[n-2] == "blobs":
		return route{kind: routeBlob, name: name(n - 2), arg: s[n-1]}, true
	case n >= 3 && s[n-2] == "manifests":
		return route{kind: routeManifest, name: name(n - 2), arg: s[n-1]}, true
	case n >= 3 && s[n-2] == "tags" && s[n-1] == "list":
		return route{kind: routeTags, name: name(n - 2)}, true
	case n >= 3 && s[n-2] == "referrers":
		return route{kind: routeReferrers, name: name(n - 2), arg: s[n-1]}, true
	}
	return route{}, false
}

type routeHandler func(w http.ResponseWriter, r *http.Request, rt route)

// routeTable maps each route and method to its handler.
type routeTable [len(routeLabels)]map[string]routeHandler

func (reg *Registry) newRouteTable() *routeTable {
	type m = map[string]routeHandler
	return &routeTable{
		routeBase:    m{http.MethodGet: reg.getBase, http.MethodHead: reg.getBase},
		routeCatalog: m{http.MethodGet: reg.getCatalog, http.MethodHead: reg.getCatalog},
		routeBlob:    m{http.MethodGet: reg.getBlob, http.MethodHead: reg.getBlob, http.MethodDelete: reg.deleteBlob},
		routeUploads: m{http.MethodPost: reg.startUpload},
		routeUpload: m{
			http.MethodGet: reg.uploadStatus, http.MethodHead: reg.uploadStatus,
			http.MethodPatch: reg.patchUpload, http.MethodPut: reg.putUpload,
			http.MethodDelete: reg.cancelUpload,
		},
		routeManifest: m{
			http.MethodGet: reg.getManifest, http.MethodHead: reg.getManifest,
			http.MethodPut: reg.putManifest, http.MethodDelete: reg.deleteManifest,
		},
		routeTags:      m{http.MethodGet: reg.getTags, http.MethodHead: reg.getTags},
		routeReferrers: m{http.MethodGet: reg.getReferrers, http.MethodHead: reg.getReferrers},
	}
}

// handlerFor returns the handler of a route and method, or nil and the
// methods the route allows (for a 405's Allow header).
func (t *routeTable) handlerFor(k routeKind, method string) (routeHandler, string) {
	table := t[k]
	if h, ok := table[method]; ok {
		return h, ""
	}
	var allow []string
	for _, meth := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if _, ok := table[meth]; ok {
			allow = append(allow, meth)
		}
	}
	return nil, strings.Join(allow, ", ")
}

// accessFor is the permission a request needs: pull to read, push to write
// (every upload request, even a status GET or a cancel, is part of a push),
// delete to delete; the catalog is its own action; the API root asks for the
// zero Access, which only checks the credentials.
func accessFor(rt route, method string) Access {
	switch rt.kind {
	case routeBase:
		return Access{}
	case routeCatalog:
		return Access{Action: ActionCatalog}
	case routeUploads, routeUpload:
		return Access{Repo: rt.name, Action: ActionPush}
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		return Access{Repo: rt.name, Action: ActionPull}
	case http.MethodDelete:
		return Access{Repo: rt.name, Action: ActionDelete}
	}
	return Access{Repo: rt.name, Action: ActionPush}
}

// serve is the Registry's handler: it parses the route, checks the method
// and the name, authorizes, and only then calls the route's handler.
func (reg *Registry) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if len(r.URL.Path) > maxPathLength {
		writeErrorCode(w, codeNameInvalid, 0, "path too long")
		return
	}
	rt, ok := parseRoute(r.URL.Path)
	if !ok {
		writeErrorCode(w, codeUnsupported, http.StatusNotFound, "no such route")
		return
	}
	SetRoute(r, rt.kind.String())
	h, allow := reg.routes.handlerFor(rt.kind, r.Method)
	if h == nil {
		w.Header().Set("Allow", allow)
		writeErrorCode(w, codeUnsupported, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if rt.kind != routeBase && rt.kind != routeCatalog {
		if err := oci.ValidateName(rt.name); err != nil {
			writeErrorCode(w, codeNameInvalid, 0, nil)
			return
		}
	}
	id, ok := reg.authorize(w, r, accessFor(rt, r.Method))
	if !ok {
		return
	}
	// The state audits its writes as the context's actor.
	ctx := policy.WithActor(r.Context(), policy.Actor{Name: id.actor(), Addr: clientIP(r)})
	r = r.WithContext(context.WithValue(ctx, identityKey{}, id))
	if rt.kind == routeUpload && reg.proxyUpload(w, r, rt) {
		return
	}
	h(w, r, rt)
}

// authorize is the one place requests are checked against the Authorizer.
// It answers the request itself (401 with the challenge, 403, 404 for a
// missing project) and returns false when the request may not go on.
func (reg *Registry) authorize(w http.ResponseWriter, r *http.Request, need Access) (Identity, bool) {
	id, err := reg.auth.Authorize(r, need)
	if err == nil {
		return id, true
	}
	if errors.Is(err, ErrUnauthorized) {
		w.Header().Set("WWW-Authenticate", reg.auth.Challenge(r, need, err))
	}
	reg.writeError(w, r, err)
	return id, false
}

// clientIP is the address of r's client, without the port: the audit
// log's Addr.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// identityKey carries the authorized Identity in a request's context.
type identityKey struct{}

// identityFrom returns the Identity serve authorized the request as.
func identityFrom(ctx context.Context) Identity {
	id, _ := ctx.Value(identityKey{}).(Identity)
	return id
}

// allowed asks the Authorizer without answering the request: for secondary
// checks such as pull access to a mount's source repository.
func (reg *Registry) allowed(r *http.Request, need Access) bool {
	_, err := reg.auth.Authorize(r, need)
	return err == nil
}
