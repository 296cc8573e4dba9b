package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
)

// The Harbor-compatible subset under /api/v2.0/: projects, repositories,
// artifacts with their tags, members, robots and quotas, in the JSON
// shapes of Harbor's v2 API (its swagger), so that tooling written for
// Harbor can list and manage projects. It is another face of the same
// rules: the same authentication, every decision through authorize (and
// so policy.Allowed), the same 404 for a project the caller may not see,
// the same robot escalation checks; only the shapes differ. See
// DESIGN.md, "Harbor compatibility".

// harborV2 is HarborPrefix without its slash, for route patterns.
const harborV2 = "/api/v2.0"

// harborRoutes registers the Harbor-compatible endpoints, each with the
// permission it needs. Endpoints whose rule is not one project permission
// decide in their handler.
func (h *Handler) harborRoutes() {
	const v2 = harborV2
	var (
		read   = func(res policy.Resource) []policy.Access { return need(res, policy.ActRead) }
		list   = func(res policy.Resource) []policy.Access { return need(res, policy.ActList) }
		create = func(res policy.Resource) []policy.Access { return need(res, policy.ActCreate) }
		update = func(res policy.Resource) []policy.Access { return need(res, policy.ActUpdate) }
		del    = func(res policy.Resource) []policy.Access { return need(res, policy.ActDelete) }
	)
	// {project_name_or_id} is a name or, unless X-Is-Resource-Name says it
	// is a name, an id; {project_name} is a name.
	const (
		byNameOrID = "project_name_or_id"
		byName     = "project_name"
	)
	h.harborPublic("GET "+v2+"/systeminfo", h.harborSystemInfo)
	h.harborPublic("GET "+v2+"/health", h.harborHealth)
	h.harborHandle("GET "+v2+"/users/current", h.harborCurrentUser)

	h.harborHandle("GET "+v2+"/projects", h.harborListProjects)
	h.harborHandle("HEAD "+v2+"/projects", h.harborHeadProject)
	h.harborHandle("POST "+v2+"/projects", h.harborCreateProject)
	h.harborHandle("GET "+v2+"/projects/{project_name_or_id}", h.inHarborProject(byNameOrID, read(policy.ResProject), h.harborGetProject))
	h.harborHandle("PUT "+v2+"/projects/{project_name_or_id}", h.inHarborProject(byNameOrID, update(policy.ResProject), h.harborUpdateProject))
	h.harborHandle("DELETE "+v2+"/projects/{project_name_or_id}", h.inHarborProject(byNameOrID, del(policy.ResProject), h.harborDeleteProject))
	h.harborHandle("GET "+v2+"/projects/{project_name_or_id}/summary", h.inHarborProject(byNameOrID, read(policy.ResProject), h.harborProjectSummary))

	h.harborHandle("GET "+v2+"/projects/{project_name_or_id}/members", h.inHarborProject(byNameOrID, list(policy.ResMember), h.harborListMembers))
	h.harborHandle("POST "+v2+"/projects/{project_name_or_id}/members", h.inHarborProject(byNameOrID, create(policy.ResMember), h.harborAddMember))
	h.harborHandle("GET "+v2+"/projects/{project_name_or_id}/members/{mid}", h.inHarborProject(byNameOrID, read(policy.ResMember), h.harborGetMember))
	h.harborHandle("PUT "+v2+"/projects/{project_name_or_id}/members/{mid}", h.inHarborProject(byNameOrID, update(policy.ResMember), h.harborUpdateMember))
	h.harborHandle("DELETE "+v2+"/projects/{project_name_or_id}/members/{mid}", h.inHarborProject(byNameOrID, del(policy.ResMember), h.harborDeleteMember))

	const repo = v2 + "/projects/{project_name}/repositories/{repository_name}"
	h.harborHandle("GET "+v2+"/projects/{project_name}/repositories", h.inHarborProject(byName, list(policy.ResRepository), h.harborListRepositories))
	h.harborHandle("GET "+repo, h.inHarborProject(byName, read(policy.ResRepository), h.harborGetRepository))
	h.harborHandle("DELETE "+repo, h.inHarborProject(byName, del(policy.ResRepository), h.harborDeleteRepository))
	h.harborHandle("GET "+repo+"/artifacts", h.inHarborProject(byName, list(policy.ResArtifact), h.harborListArtifacts))
	h.harborHandle("GET "+repo+"/artifacts/{reference}", h.inHarborProject(byName, read(policy.ResArtifact), h.harborGetArtifact))
	h.harborHandle("DELETE "+repo+"/artifacts/{reference}", h.inHarborProject(byName, del(policy.ResArtifact), h.harborDeleteArtifact))
	h.harborHandle("GET "+repo+"/artifacts/{reference}/tags", h.inHarborProject(byName, list(policy.ResTag), h.harborListTags))
	// Creating a tag is a push of the tag: it needs repository:push as
	// the registry would, besides Harbor's tag:create.
	h.harborHandle("POST "+repo+"/artifacts/{reference}/tags", h.inHarborProject(byName,
		append(create(policy.ResTag), need(policy.ResRepository, policy.ActPush)...), h.harborCreateTag))
	h.harborHandle("DELETE "+repo+"/artifacts/{reference}/tags/{tag_name}", h.inHarborProject(byName, del(policy.ResTag), h.harborDeleteTag))

	h.harborHandle("GET "+v2+"/robots", h.harborListRobots)
	h.harborHandle("POST "+v2+"/robots", h.harborCreateRobot)
	h.harborHandle("GET "+v2+"/robots/{robot_id}", h.onHarborRobot(policy.ActRead, h.harborGetRobot))
	h.harborHandle("PUT "+v2+"/robots/{robot_id}", h.onHarborRobot(policy.ActUpdate, h.harborUpdateRobot))
	h.harborHandle("PATCH "+v2+"/robots/{robot_id}", h.onHarborRobot(policy.ActUpdate, h.harborRefreshRobot))
	h.harborHandle("DELETE "+v2+"/robots/{robot_id}", h.onHarborRobot(policy.ActDelete, h.harborDeleteRobot))

	h.harborHandle("GET "+v2+"/quotas", h.harborListQuotas)
	h.harborHandle("GET "+v2+"/quotas/{id}", h.harborGetQuota)
	h.harborHandle("PUT "+v2+"/quotas/{id}", h.harborPutQuota)
}

// harborHandle registers an authenticated Harbor-compatible endpoint.
// authenticated answers bad credentials through fail: here in Harbor's
// shape; fn answers on the plain writer.
func (h *Handler) harborHandle(pattern string, fn endpoint) {
	h.harborPublic(pattern, func(w http.ResponseWriter, r *http.Request) {
		h.authenticated(func(_ http.ResponseWriter, r *http.Request, p policy.Principal) {
			fn(w, r, p)
		})(&harborErrorWriter{ResponseWriter: w}, r)
	})
}

// harborPublic registers a Harbor-compatible endpoint that needs no
// credentials.
func (h *Handler) harborPublic(pattern string, fn http.HandlerFunc) {
	h.route(h.harbor, pattern, fn)
}

// serveHarbor routes a request under HarborPrefix. A trailing slash is
// dropped first, as Harbor's router does (some clients send
// /api/v2.0/quotas/?page=1).
func (h *Handler) serveHarbor(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; len(p) > len(HarborPrefix) && strings.HasSuffix(p, "/") {
		r = r.Clone(r.Context())
		r.URL.Path = strings.TrimSuffix(p, "/")
		r.URL.RawPath = strings.TrimSuffix(r.URL.RawPath, "/")
	}
	if _, pattern := h.harbor.Handler(r); pattern != "" {
		h.harbor.ServeHTTP(w, r)
		return
	}
	registry.SetRoute(r, HarborPrefix)
	methods := routedMethods(r, []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}, h.harbor)
	if len(methods) == 0 {
		writeHarborError(w, http.StatusNotFound, "no such endpoint")
		return
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeHarborError(w, http.StatusMethodNotAllowed, "method not allowed")
}

// --- errors

// HarborErrors is Harbor's error answer.
type HarborErrors struct {
	Errors []HarborError `json:"errors"`
}

// HarborError is one error of a HarborErrors.
type HarborError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// harborCodes are Harbor's error codes of the statuses this API answers.
var harborCodes = map[int]string{
	http.StatusBadRequest:          "BAD_REQUEST",
	http.StatusUnauthorized:        "UNAUTHORIZED",
	http.StatusForbidden:           "FORBIDDEN",
	http.StatusNotFound:            "NOT_FOUND",
	http.StatusMethodNotAllowed:    "METHOD_NOT_ALLOWED",
	http.StatusConflict:            "CONFLICT",
	http.StatusPreconditionFailed:  "PRECONDITION",
	http.StatusInternalServerError: "UNKNOWN",
	http.StatusServiceUnavailable:  "UNAVAILABLE",
}

func writeHarborError(w http.ResponseWriter, status int, msg string) {
	code, ok := harborCodes[status]
	if !ok {
		code = "UNKNOWN"
	}
	writeJSON(w, status, HarborErrors{Errors: []HarborError{{Code: code, Message: msg}}})
}

// harborFail answers err as fail does — the same statuses, the same
// challenge, nothing of a 500's cause shown — in Harbor's error shape.
// What Harbor answers 412 (a rule of the content refuses: an immutable
// tag, a tag moved meanwhile) is 412 here too.
func (h *Handler) harborFail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, policy.ErrImmutable), errors.Is(err, oci.ErrPreconditionFailed):
		writeHarborError(w, http.StatusPreconditionFailed, err.Error())
	case errors.Is(err, oci.ErrManifestBlobUnknown):
		// The manifest went (and its blobs with it) while a tag was
		// being pointed at it.
		writeHarborError(w, http.StatusConflict, "the artifact was deleted meanwhile")
	default:
		h.fail(&harborErrorWriter{ResponseWriter: w}, r, err)
	}
}

// harborErrorWriter turns the {"error": "..."} answer that fail writes
// into Harbor's shape, keeping its status and headers (the challenge,
// Retry-After): one mapper of errors, two shapes.
type harborErrorWriter struct {
	http.ResponseWriter
	status int
}

func (e *harborErrorWriter) WriteHeader(status int) { e.status = status }

func (e *harborErrorWriter) Write(b []byte) (int, error) {
	var er ErrorResponse
	if err := json.Unmarshal(b, &er); err != nil || er.Error == "" {
		er.Error = http.StatusText(e.status)
	}
	writeHarborError(e.ResponseWriter, e.status, er.Error)
	return len(b), nil
}

// --- projects in paths

// isResourceName reports whether X-Is-Resource-Name says that
// {project_name_or_id} is a name even if it looks like a number.
func isResourceName(r *http.Request) bool {
	v, err := strconv.ParseBool(r.Header.Get("X-Is-Resource-Name"))
	return err == nil && v
}

// harborProjectName resolves the path's {param} to a project name: an id
// is looked up, unless X-Is-Resource-Name says it is a name. An id nobody
// has is the same not-found as a name nobody has.
func (h *Handler) harborProjectName(r *http.Request, param string) (string, error) {
	raw := r.PathValue(param)
	if param != "project_name_or_id" || isResourceName(r) {
		return raw, nil
	}
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return raw, nil
	}
	proj, err := h.store.ProjectByID(r.Context(), id)
	switch {
	case errors.Is(err, oci.ErrNotFound):
		return "", projectNotFound(raw)
	case err != nil:
		return "", err
	}
	return proj.Name, nil
}

// authorizeHarbor is authorizeAll for the project the path names (by
// name or id). An anonymous request that could never do one of needs is
// refused before the id is looked up; a project that does not exist or
// that p may not see is not found under the name or id the path gave, so
// that an id tells nothing of the name behind it.
func (h *Handler) authorizeHarbor(r *http.Request, p policy.Principal, param string, needs []policy.Access) (policy.ProjectAccess, error) {
	if err := anonymousRefused(p, needs); err != nil {
		return policy.ProjectAccess{}, err
	}
	name, err := h.harborProjectName(r, param)
	if err != nil {
		return policy.ProjectAccess{}, err
	}
	pa, err := h.authorizeAll(r.Context(), p, name, needs)
	if errors.Is(err, oci.ErrNotFound) {
		err = projectNotFound(r.PathValue(param))
	}
	return pa, err
}

// inHarborProject wraps fn: the principal must be allowed every access of
// needs in the project the path's {param} names.
func (h *Handler) inHarborProject(param string, needs []policy.Access, fn projectEndpoint) endpoint {
	return func(w http.ResponseWriter, r *http.Request, p policy.Principal) {
		pa, err := h.authorizeHarbor(r, p, param, needs)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		fn(w, r, p, pa)
	}
}

// --- paging and queries

// Paging as Harbor's: ?page= from 1, ?page_size= 10 by default, at most
// 100.
const (
	harborPageSize    = 10
	harborMaxPageSize = 100
)

// harborPage reads ?page= and ?page_size=.
func harborPage(r *http.Request) (page, size int, err error) {
	page, size = 1, harborPageSize
	q := r.URL.Query()
	if s := q.Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPage {
			return 0, 0, invalid(fmt.Sprintf("page %q: want a number from 1", clip(s, 32)))
		}
		page = n
	}
	if s := q.Get("page_size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, 0, invalid(fmt.Sprintf("page_size %q: want a number from 1 to %d", clip(s, 32), harborMaxPageSize))
		}
		if n > 0 {
			size = min(n, harborMaxPageSize)
		}
	}
	return page, size, nil
}

// harborListQuery reads what a Harbor list request asks for: a page
// (harborPage) and ?q= terms of the keys allowed (harborQuery).
func harborListQuery(r *http.Request, allowed ...string) (page, size int, terms map[string]queryTerm, err error) {
	if page, size, err = harborPage(r); err != nil {
		return 0, 0, nil, err
	}
	terms, err = harborQuery(r, allowed...)
	return page, size, terms, err
}

// pageOf returns the page of list that page and size select.
func pageOf[T any](list []T, page, size int) []T {
	start := (page - 1) * size
	if start >= len(list) {
		return list[:0]
	}
	return list[start:min(start+size, len(list))]
}

// setPaging sets X-Total-Count and, as Harbor does, a Link header to the
// previous and the next page.
func setPaging(w http.ResponseWriter, r *http.Request, total, page, size int) {
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	var links []string
	link := func(p int, rel string) {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(p))
		q.Set("page_size", strconv.Itoa(size))
		links = append(links, fmt.Sprintf(`<%s?%s>; rel="%s"`, r.URL.EscapedPath(), q.Encode(), rel))
	}
	if page > 1 {
		link(min(page-1, max(1, (total+size-1)/size)), "prev")
	}
	if page*size < total {
		link(page+1, "next")
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
}

// queryTerm is one condition of Harbor's ?q=: k=v (exact) or k=~v
// (fuzzy: a substring).
type queryTerm struct {
	value string
	fuzzy bool
}

// matches reports whether s satisfies t.
func (t queryTerm) matches(s string) bool {
	if t.fuzzy {
		return strings.Contains(s, t.value)
	}
	return s == t.value
}

// harborQuery parses ?q= (k1=v1,k2=~v2) into terms by key, its keys
// compared without case or underscores (Harbor writes ProjectID as well
// as project_id). Keys other than allowed, and Harbor's ranges and lists,
// are refused: a filter silently ignored would answer more than asked.
func harborQuery(r *http.Request, allowed ...string) (map[string]queryTerm, error) {
	terms := map[string]queryTerm{}
	q := r.URL.Query().Get("q")
	if q == "" {
		return terms, nil
	}
	for _, part := range strings.Split(q, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			return nil, invalid(fmt.Sprintf("q: %q is not key=value", clip(part, 64)))
		}
		key := normKey(k)
		known := false
		for _, a := range allowed {
			known = known || normKey(a) == key
		}
		if !known {
			return nil, invalid(fmt.Sprintf("q: cannot filter by %q here (only %s)", clip(k, 64), strings.Join(allowed, ", ")))
		}
		t := queryTerm{value: v}
		if rest, ok := strings.CutPrefix(v, "~"); ok {
			t = queryTerm{value: rest, fuzzy: true}
		}
		if strings.HasPrefix(t.value, "[") || strings.HasPrefix(t.value, "{") || strings.HasPrefix(t.value, "(") {
			return nil, invalid(fmt.Sprintf("q: ranges and lists are not supported (%q)", clip(part, 64)))
		}
		if u, err := url.PathUnescape(t.value); err == nil {
			t.value = u
		}
		terms[key] = t
	}
	return terms, nil
}

func normKey(k string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(k), "_", ""))
}

// --- values

// harborTime formats unix nanoseconds as Harbor's date-times; 0 (never)
// is the zero time, as Harbor shows it.
func harborTime(ns int64) string {
	t := time.Time{}
	if ns != 0 {
		t = time.Unix(0, ns)
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// syntheticID is a stable number for what berth does not number
// (repositories, artifacts, tags): a hash of its name, within the
// integers a JSON number holds exactly. It identifies, it finds nothing:
// no endpoint takes it.
func syntheticID(parts ...string) int64 {
	f := fnv.New64a()
	for _, p := range parts {
		f.Write([]byte(p))
		f.Write([]byte{0})
	}
	return int64(f.Sum64()&(1<<53-1)) | 1
}

// harborNoContent answers a success without a body, as Harbor does for
// updates and deletes.
func harborNoContent(w http.ResponseWriter, status int) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
}
