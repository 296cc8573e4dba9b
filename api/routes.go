package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
)

// accessRoutes registers the endpoints of projects, members, users,
// robots, quotas, immutability, retention, the audit log and token keys,
// each with the permission it needs (see DESIGN.md's table). Endpoints
// whose rule is not one project permission decide in their handler.
func (h *Handler) accessRoutes() {
	const v1 = "/api/v1"
	h.public("GET "+v1+"/openapi.json", h.getOpenAPI)

	h.handle("GET "+v1+"/users/current", h.currentUser)

	h.handle("GET "+v1+"/projects", h.listProjects)
	h.handle("POST "+v1+"/projects", h.createProject)
	h.handle("GET "+v1+"/projects/{project}", h.inProject(policy.ResProject, policy.ActRead, h.getProject))
	h.handle("PUT "+v1+"/projects/{project}", h.inProject(policy.ResProject, policy.ActUpdate, h.updateProject))
	h.handle("DELETE "+v1+"/projects/{project}", h.inProject(policy.ResProject, policy.ActDelete, h.deleteProject))

	h.handle("GET "+v1+"/projects/{project}/members", h.inProject(policy.ResMember, policy.ActList, h.listMembers))
	h.handle("POST "+v1+"/projects/{project}/members", h.inProject(policy.ResMember, policy.ActCreate, h.addMember))
	h.handle("PUT "+v1+"/projects/{project}/members/{user}", h.inProject(policy.ResMember, policy.ActUpdate, h.updateMember))
	h.handle("DELETE "+v1+"/projects/{project}/members/{user}", h.inProject(policy.ResMember, policy.ActDelete, h.deleteMember))

	h.handle("GET "+v1+"/projects/{project}/robots", h.inProject(policy.ResRobot, policy.ActList, h.listProjectRobots))
	h.handle("POST "+v1+"/projects/{project}/robots", h.inProject(policy.ResRobot, policy.ActCreate, h.createProjectRobot))
	h.handle("GET "+v1+"/robots", h.listSystemRobots)
	h.handle("POST "+v1+"/robots", h.createSystemRobot)
	h.handle("GET "+v1+"/robots/{name}", h.onRobot(policy.ActRead, h.getRobot))
	h.handle("PUT "+v1+"/robots/{name}", h.onRobot(policy.ActUpdate, h.updateRobot))
	h.handle("DELETE "+v1+"/robots/{name}", h.onRobot(policy.ActDelete, h.deleteRobot))
	h.handle("POST "+v1+"/robots/{name}/secret", h.onRobot(policy.ActUpdate, h.refreshRobotSecret))

	h.handle("GET "+v1+"/users", h.listUsers)
	h.handle("POST "+v1+"/users", h.createUser)
	h.handle("GET "+v1+"/users/{user}", h.getUser)
	h.handle("PUT "+v1+"/users/{user}", h.updateUser)
	h.handle("PUT "+v1+"/users/{user}/password", h.setPassword)
	h.handle("PUT "+v1+"/users/{user}/sysadmin", h.setSysadmin)
	h.handle("DELETE "+v1+"/users/{user}", h.deleteUser)

	h.handle("GET "+v1+"/quotas", h.listQuotas)
	h.handle("GET "+v1+"/projects/{project}/quota", h.inProject(policy.ResQuota, policy.ActRead, h.getQuota))
	h.handle("PUT "+v1+"/projects/{project}/quota", h.putQuota)

	h.handle("GET "+v1+"/projects/{project}/immutable", h.inProject(policy.ResImmutableTag, policy.ActList, h.listImmutable))
	h.handle("POST "+v1+"/projects/{project}/immutable", h.inProject(policy.ResImmutableTag, policy.ActCreate, h.createImmutable))
	h.handle("PUT "+v1+"/projects/{project}/immutable/{id}", h.inProject(policy.ResImmutableTag, policy.ActUpdate, h.updateImmutable))
	h.handle("DELETE "+v1+"/projects/{project}/immutable/{id}", h.inProject(policy.ResImmutableTag, policy.ActDelete, h.deleteImmutable))

	h.handle("GET "+v1+"/projects/{project}/retention", h.inProject(policy.ResRetention, policy.ActRead, h.getRetention))
	h.handle("PUT "+v1+"/projects/{project}/retention", h.inProject(policy.ResRetention, policy.ActUpdate, h.putRetention))
	h.handle("POST "+v1+"/projects/{project}/retention/run", h.inProject(policy.ResRetention, policy.ActOperate, h.runRetention))
	h.handle("GET "+v1+"/projects/{project}/retention/runs", h.inProject(policy.ResRetention, policy.ActList, h.listRetentionRuns))
	h.handle("GET "+v1+"/projects/{project}/retention/runs/{id}", h.inProject(policy.ResRetention, policy.ActRead, h.getRetentionRun))

	h.handle("GET "+v1+"/audit", h.listAudit)

	h.handle("GET "+v1+"/system/token-keys", h.admin(h.listTokenKeys))
	h.handle("POST "+v1+"/system/token-keys/rotate", h.admin(h.rotateTokenKey))
}

// handle registers an authenticated endpoint.
func (h *Handler) handle(pattern string, fn endpoint) {
	h.public(pattern, h.authenticated(fn))
}

// public registers an endpoint that needs no credentials.
func (h *Handler) public(pattern string, fn http.HandlerFunc) {
	h.route(h.mux, pattern, fn)
}

// route registers fn at pattern in mux, naming the route for the metrics,
// and lists the pattern for the OpenAPI test.
func (h *Handler) route(mux *http.ServeMux, pattern string, fn http.HandlerFunc) {
	h.routes = append(h.routes, pattern)
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		registry.SetRoute(r, pattern)
		fn(w, r)
	})
}

// routedMethods returns those of methods for which one of muxes (nil ones
// aside) routes r's path.
func routedMethods(r *http.Request, methods []string, muxes ...*http.ServeMux) []string {
	var out []string
	for _, m := range methods {
		probe := r.Clone(r.Context())
		probe.Method = m
		for _, mux := range muxes {
			if mux == nil {
				continue
			}
			if _, p := mux.Handler(probe); p != "" {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// projectEndpoint is a handler of a request about one project that the
// principal may make.
type projectEndpoint func(w http.ResponseWriter, r *http.Request, p policy.Principal, pa policy.ProjectAccess)

// inProject wraps fn: the principal must be allowed a on res in the
// path's {project}.
func (h *Handler) inProject(res policy.Resource, a policy.Action, fn projectEndpoint) endpoint {
	return func(w http.ResponseWriter, r *http.Request, p policy.Principal) {
		pa, err := h.authorize(r.Context(), p, r.PathValue("project"), res, a)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		fn(w, r, p, pa)
	}
}

// admin wraps fn for system endpoints.
func (h *Handler) admin(fn endpoint) endpoint {
	return func(w http.ResponseWriter, r *http.Request, p policy.Principal) {
		if err := requireAdmin(p); err != nil {
			h.fail(w, r, err)
			return
		}
		fn(w, r, p)
	}
}

// Paging by page number, as Harbor's API does.
const (
	defaultPageSize = 50
	maxPageSize     = 500
	maxPage         = 1 << 20
)

// pageParams reads ?page= (from 1) and ?page_size= (bounded).
func pageParams(r *http.Request) (page, size int, err error) {
	page, size = 1, defaultPageSize
	q := r.URL.Query()
	if s := q.Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPage {
			return 0, 0, fmt.Errorf("%w: page %q: want a number from 1", policy.ErrInvalid, clip(s, 32))
		}
		page = n
	}
	if s := q.Get("page_size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return 0, 0, fmt.Errorf("%w: page_size %q: want a number from 1", policy.ErrInvalid, clip(s, 32))
		}
		size = min(n, maxPageSize)
	}
	return page, size, nil
}

// pathUint reads a positive number from the path.
func pathUint(r *http.Request, name string) (uint64, error) {
	s := r.PathValue(name)
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: %s %q is not a positive number", policy.ErrInvalid, name, clip(s, 32))
	}
	return id, nil
}

// queryBool reads a boolean query parameter; set is false when absent.
func queryBool(r *http.Request, name string) (v, set bool, err error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, false, nil
	}
	v, err = strconv.ParseBool(s)
	if err != nil {
		return false, false, fmt.Errorf("%w: %s %q is not a boolean", policy.ErrInvalid, name, clip(s, 32))
	}
	return v, true, nil
}
