package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
)

// Projects and their members.

// ProjectView is a project as a caller sees it: its quota and usage, its
// immutability rules and its retention policy only when the caller may
// read them.
type ProjectView struct {
	ID      uint64 `json:"project_id"`
	Name    string `json:"name"`
	Public  bool   `json:"public"`
	Owner   string `json:"owner_name,omitempty"`
	Created int64  `json:"creation_time"` // unix nanoseconds
	Updated int64  `json:"update_time"`
	// Role is the caller's role in the project ("" for none).
	Role      policy.Role             `json:"current_user_role,omitempty"`
	Quota     *policy.Quota           `json:"quota,omitempty"`
	Usage     *policy.Usage           `json:"usage,omitempty"`
	Immutable []policy.ImmutableRule  `json:"immutable_rules,omitempty"`
	Retention *policy.RetentionPolicy `json:"retention,omitempty"`
}

// projectView shows proj to p, whose access to it is pa.
func (h *Handler) projectView(ctx context.Context, p policy.Principal, pa policy.ProjectAccess, proj policy.Project) (ProjectView, error) {
	v := ProjectView{
		ID: proj.ID, Name: proj.Name, Public: proj.Public, Owner: proj.Owner,
		Created: proj.Created, Updated: proj.Updated, Role: pa.Role,
	}
	if policy.Allowed(p, pa, policy.ResQuota, policy.ActRead) {
		q := proj.Quota
		u, err := h.store.ProjectUsage(ctx, proj.Name)
		if err != nil {
			return ProjectView{}, err
		}
		v.Quota, v.Usage = &q, &u
	}
	if policy.Allowed(p, pa, policy.ResImmutableTag, policy.ActList) {
		v.Immutable = proj.Immutable
	}
	if policy.Allowed(p, pa, policy.ResRetention, policy.ActRead) {
		v.Retention = proj.Retention
	}
	return v, nil
}

// projectsBatch is how many projects one read of the state returns.
const projectsBatch = 500

// eachProject calls fn with every project, in name order, until it
// returns false.
func (h *Handler) eachProject(ctx context.Context, fn func(policy.Project) bool) error {
	return eachBatch(projectsBatch, func(last string, n int) ([]policy.Project, error) {
		return h.store.Projects(ctx, last, n)
	}, func(p policy.Project) string { return p.Name }, fn)
}

// seenProject is a project with the caller's access to it.
type seenProject struct {
	proj policy.Project
	pa   policy.ProjectAccess
}

// eachVisibleProject calls fn with every project p may see, in name order.
func (h *Handler) eachVisibleProject(ctx context.Context, p policy.Principal, fn func(seenProject)) error {
	roles, err := h.roles(ctx, p)
	if err != nil {
		return err
	}
	return h.eachProject(ctx, func(proj policy.Project) bool {
		pa := policy.ProjectAccess{Name: proj.Name, Exists: true, Public: proj.Public, Role: roles[proj.Name]}
		if policy.Sees(p, pa) {
			fn(seenProject{proj, pa})
		}
		return true
	})
}

// roles returns p's role in every project it is a member of.
func (h *Handler) roles(ctx context.Context, p policy.Principal) (map[string]policy.Role, error) {
	roles := map[string]policy.Role{}
	if p.Kind != policy.PrincipalUser {
		return roles, nil
	}
	ms, err := h.store.Memberships(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		roles[m.Project] = m.Role
	}
	return roles, nil
}

// listProjects answers GET /projects: the projects the caller may see
// (public ones, its own, all for an administrator), filtered by ?name=
// (a substring) and ?public=, a page of them, with the total in
// X-Total-Count.
func (h *Handler) listProjects(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	page, size, err := pageParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	public, publicSet, err := queryBool(r, "public")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	name := r.URL.Query().Get("name")
	shown := newWindow[seenProject](page, size)
	err = h.eachVisibleProject(ctx, p, func(m seenProject) {
		if (!publicSet || m.proj.Public == public) && strings.Contains(m.proj.Name, name) {
			shown.add(m)
		}
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]ProjectView, 0, len(shown.items))
	for _, m := range shown.items {
		v, err := h.projectView(ctx, p, m.pa, m.proj)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out = append(out, v)
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(shown.total))
	writeJSON(w, http.StatusOK, out)
}

// ProjectRequest is the body of POST /projects. Only a system
// administrator may set the limits (-1: unlimited, the default).
type ProjectRequest struct {
	Name         string `json:"name"`
	Public       bool   `json:"public"`
	StorageLimit *int64 `json:"storage_limit,omitempty"`
	CountLimit   *int64 `json:"count_limit,omitempty"`
}

// createProject answers POST /projects: any user (or only administrators,
// per Config.ProjectCreation) creates a project and becomes its project
// admin. Robots never create projects.
func (h *Handler) createProject(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	if err := h.mayCreateProject(p); err != nil {
		h.fail(w, r, err)
		return
	}
	var req ProjectRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	quota := policy.NoQuota
	limited := func(v *int64) bool { return v != nil && *v != policy.Unlimited }
	if limited(req.StorageLimit) || limited(req.CountLimit) {
		if !p.Admin {
			h.fail(w, r, forbidden("only system administrators set quotas"))
			return
		}
		if req.StorageLimit != nil {
			quota.Storage = *req.StorageLimit
		}
		if req.CountLimit != nil {
			quota.Count = *req.CountLimit
		}
	}
	proj, err := h.createOwnedProject(ctx, p, policy.Project{Name: req.Name, Public: req.Public, Quota: quota})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	pa := policy.ProjectAccess{Name: proj.Name, Exists: true, Public: proj.Public, Role: policy.RoleProjectAdmin}
	v, err := h.projectView(ctx, p, pa, proj)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", Prefix+"projects/"+proj.Name)
	writeJSON(w, http.StatusCreated, v)
}

// mayCreateProject refuses p if it may not create projects at all:
// anonymous requests and robots never may; users only as
// Config.ProjectCreation says. It is decided before the body is read.
func (h *Handler) mayCreateProject(p policy.Principal) error {
	if err := requireUser(p); err != nil {
		return err
	}
	if h.cfg.ProjectCreation != ProjectCreationEveryone && !p.Admin {
		return forbidden("only system administrators create projects")
	}
	return nil
}

// createOwnedProject creates proj with p as its owner and project admin
// (the caller has checked mayCreateProject, and that only an
// administrator sets limits).
func (h *Handler) createOwnedProject(ctx context.Context, p policy.Principal, proj policy.Project) (policy.Project, error) {
	proj.Owner = p.Name
	created, err := h.store.CreateProject(ctx, proj)
	if err != nil {
		return policy.Project{}, err
	}
	m := policy.Member{Project: created.Name, User: p.Name, Role: policy.RoleProjectAdmin}
	if err := h.store.PutMember(ctx, m, true); err != nil {
		// A project nobody but the administrators can manage is worth
		// less than none: take it back, so that the client may retry.
		if derr := h.store.DeleteProject(context.WithoutCancel(ctx), created.Name); derr != nil {
			h.logger.ErrorContext(ctx, "undo project creation", "project", created.Name, "error", derr,
				"request_id", registry.RequestID(ctx))
		}
		return policy.Project{}, err
	}
	return created, nil
}

func (h *Handler) getProject(w http.ResponseWriter, r *http.Request, p policy.Principal, pa policy.ProjectAccess) {
	proj, err := h.store.Project(r.Context(), pa.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	v, err := h.projectView(r.Context(), p, pa, proj)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// ProjectUpdate is the body of PUT /projects/{project}.
type ProjectUpdate struct {
	Public *bool `json:"public"`
}

func (h *Handler) updateProject(w http.ResponseWriter, r *http.Request, p policy.Principal, pa policy.ProjectAccess) {
	var req ProjectUpdate
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Public == nil {
		h.fail(w, r, invalid("give {\"public\": true|false}"))
		return
	}
	proj, err := h.store.UpdateProject(r.Context(), policy.Project{Name: pa.Name, Public: *req.Public}, "public")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	pa.Public = proj.Public
	v, err := h.projectView(r.Context(), p, pa, proj)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// deleteProject deletes an empty project with its members and robots; one
// that still holds repositories is refused (409).
func (h *Handler) deleteProject(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	if err := h.store.DeleteProject(r.Context(), pa.Name); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// --- members

func (h *Handler) listMembers(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	ms, err := h.store.ProjectMembers(r.Context(), pa.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

// MemberRequest is the body of POST /projects/{project}/members (and, with
// the role only, of PUT .../members/{user}). A role is its name
// (projectAdmin, maintainer, developer, guest, limitedGuest) or Harbor's
// role id.
type MemberRequest struct {
	User string `json:"username"`
	Role string `json:"role"`
}

// RoleRequest is the body of PUT /projects/{project}/members/{user}.
type RoleRequest struct {
	Role string `json:"role"`
}

func (h *Handler) addMember(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	var req MemberRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	h.putMember(w, r, pa.Name, req.User, req.Role, true)
}

func (h *Handler) updateMember(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	var req RoleRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	h.putMember(w, r, pa.Name, r.PathValue("user"), req.Role, false)
}

func (h *Handler) putMember(w http.ResponseWriter, r *http.Request, project, user, role string, create bool) {
	rl, err := policy.ParseRole(role)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := policy.ValidateUserName(user); err != nil {
		h.fail(w, r, err)
		return
	}
	m := policy.Member{Project: project, User: user, Role: rl}
	if err := h.store.PutMember(r.Context(), m, create); err != nil {
		h.fail(w, r, err)
		return
	}
	if u, err := h.store.User(r.Context(), user); err == nil {
		m.UserID = u.ID
	}
	status := http.StatusOK
	if create {
		status = http.StatusCreated
	}
	writeJSON(w, status, m)
}

func (h *Handler) deleteMember(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	if err := h.store.DeleteMember(r.Context(), pa.Name, r.PathValue("user")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// invalid is a validation error of a request.
func invalid(msg string) error {
	return fmt.Errorf("%w: %s", policy.ErrInvalid, msg)
}
