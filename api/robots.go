package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Robot accounts: project robots, managed by those with the robot
// permissions of their project, and system robots, managed by
// administrators. A robot never manages robots (policy.RobotAssignable
// has no robot permission, and the handlers refuse robots besides), and
// whoever grants a robot permissions must hold each of them: a project
// admin cannot make a robot that does more than it may. The secret is
// answered once, on creation and on refresh.

// maxExpiryDays bounds a robot's lifetime given in days.
const maxExpiryDays = 100 * 365

// ProjectRobotRequest is the body of POST /projects/{project}/robots.
type ProjectRobotRequest struct {
	// Name is the short name: the account is robot$<project>+<name>.
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// ExpiresInDays: 0 or -1 never expires.
	ExpiresInDays int             `json:"expires_in_days,omitempty"`
	Permissions   []policy.Access `json:"permissions"`
	Disabled      bool            `json:"disable,omitempty"`
	// Secret is chosen by the caller (16 to 128 characters) or, empty,
	// generated.
	Secret string `json:"secret,omitempty"`
}

// SystemRobotRequest is the body of POST /robots (administrators): a
// robot with permissions in several projects, or every one ("*").
type SystemRobotRequest struct {
	// Name is the short name: the account is robot$<name>.
	Name          string                   `json:"name"`
	Description   string                   `json:"description,omitempty"`
	ExpiresInDays int                      `json:"expires_in_days,omitempty"`
	Permissions   []policy.RobotPermission `json:"permissions"`
	Disabled      bool                     `json:"disable,omitempty"`
	Secret        string                   `json:"secret,omitempty"`
}

// ProjectRobotUpdate is the body of PUT /robots/{name} for a project
// robot; fields left out keep their value.
type ProjectRobotUpdate struct {
	Description *string `json:"description,omitempty"`
	Disabled    *bool   `json:"disable,omitempty"`
	// ExpiresAt is unix nanoseconds; 0 never expires.
	ExpiresAt   *int64          `json:"expires_at,omitempty"`
	Permissions []policy.Access `json:"permissions,omitempty"`
}

// SystemRobotUpdate is the body of PUT /robots/{name} for a system robot.
type SystemRobotUpdate struct {
	Description *string                  `json:"description,omitempty"`
	Disabled    *bool                    `json:"disable,omitempty"`
	ExpiresAt   *int64                   `json:"expires_at,omitempty"`
	Permissions []policy.RobotPermission `json:"permissions,omitempty"`
}

// SecretRequest is the optional body of POST /robots/{name}/secret.
type SecretRequest struct {
	Secret string `json:"secret,omitempty"`
}

// RobotCreated is the answer of a robot's creation: its secret is shown
// this once.
type RobotCreated struct {
	Robot  policy.Robot `json:"robot"`
	Secret string       `json:"secret"`
}

// RobotSecret is the answer of POST /robots/{name}/secret.
type RobotSecret struct {
	Name   string `json:"name"`
	Secret string `json:"secret"`
}

// robotProject splits a robot's account name: its project ("" for a
// system robot); ok is false for a name that is no robot's.
func robotProject(name string) (project string, ok bool) {
	rest, ok := strings.CutPrefix(name, policy.RobotPrefix)
	if !ok || rest == "" {
		return "", false
	}
	project, _, found := strings.Cut(rest, "+")
	if !found {
		return "", true
	}
	return project, project != ""
}

const day = 24 * time.Hour

// expiry is the unix nanoseconds a robot's life of days from from ends (0:
// never, for days -1 or 0); field names days in an error.
func expiry(field string, from time.Time, days int64) (int64, error) {
	switch {
	case days == 0 || days == -1:
		return 0, nil
	case days < -1 || days > maxExpiryDays:
		return 0, invalid(fmt.Sprintf("%s: -1 (never) or 1 to %d days", field, maxExpiryDays))
	}
	return from.Add(time.Duration(days) * day).UnixNano(), nil
}

// grantable checks that p may give a robot every access of list in
// project pa: each is one a robot may have, and one p holds there. It
// returns list without duplicates.
func grantable(p policy.Principal, pa policy.ProjectAccess, list []policy.Access) ([]policy.Access, error) {
	var out []policy.Access
	for _, a := range list {
		if !slices.Contains(policy.RobotAssignable, a) {
			return nil, invalid(fmt.Sprintf("a robot cannot be given %s", a))
		}
		if !policy.Allowed(p, pa, a.Resource, a.Action) {
			return nil, forbidden("%s cannot grant %s in project %s: it does not hold it", p, a, pa.Name)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// projectPermissions is the access list of project robot rb.
func projectPermissions(rb policy.Robot) []policy.Access {
	var out []policy.Access
	for _, perm := range rb.Permissions {
		if perm.Namespace == rb.Project {
			out = append(out, perm.Access...)
		}
	}
	return out
}

// holdsRobot refuses p unless it holds every permission of rb, when rb is
// a project robot: whoever changes a robot or takes its secret could use
// them. (A system robot is an administrator's, and onRobot checked that.)
func holdsRobot(p policy.Principal, pa policy.ProjectAccess, rb policy.Robot) error {
	if rb.Level != policy.RobotProject {
		return nil
	}
	_, err := grantable(p, pa, projectPermissions(rb))
	return err
}

// robotEndpoint is a handler of a request about one robot that the
// principal may make.
type robotEndpoint func(w http.ResponseWriter, r *http.Request, p policy.Principal, rb policy.Robot, pa policy.ProjectAccess)

// onRobot wraps fn for /robots/{name}: a project robot needs robot:a in
// its project (404 when the caller may not see the project), a system
// robot an administrator. Robots are refused either way.
func (h *Handler) onRobot(a policy.Action, fn robotEndpoint) endpoint {
	return func(w http.ResponseWriter, r *http.Request, p policy.Principal) {
		ctx := r.Context()
		name := r.PathValue("name")
		project, ok := robotProject(name)
		if !ok {
			h.fail(w, r, fmt.Errorf("robot %s: %w", clip(name, maxNameInMessage), oci.ErrNotFound))
			return
		}
		var pa policy.ProjectAccess
		if project == "" {
			if err := requireAdmin(p); err != nil {
				h.fail(w, r, err)
				return
			}
		} else {
			var err error
			if pa, err = h.authorize(ctx, p, project, policy.ResRobot, a); err != nil {
				h.fail(w, r, err)
				return
			}
			if err := requireUser(p); err != nil {
				h.fail(w, r, err)
				return
			}
		}
		rb, err := h.store.Robot(ctx, name)
		if err == nil && rb.Project != project {
			err = fmt.Errorf("robot %s: %w", name, oci.ErrNotFound)
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		fn(w, r, p, rb, pa)
	}
}

func (h *Handler) getRobot(w http.ResponseWriter, _ *http.Request, _ policy.Principal, rb policy.Robot, _ policy.ProjectAccess) {
	writeJSON(w, http.StatusOK, rb)
}

// updateRobot changes a robot's description, disabled flag, expiry and
// permissions. For a project robot the caller must hold both the
// permissions the robot has and those it is given.
func (h *Handler) updateRobot(w http.ResponseWriter, r *http.Request, p policy.Principal, rb policy.Robot, pa policy.ProjectAccess) {
	var (
		desc      *string
		disabled  *bool
		expiresAt *int64
	)
	if rb.Level == policy.RobotSystem {
		var req SystemRobotUpdate
		if err := decode(r, &req); err != nil {
			h.fail(w, r, err)
			return
		}
		desc, disabled, expiresAt = req.Description, req.Disabled, req.ExpiresAt
		if req.Permissions != nil {
			rb.Permissions = req.Permissions
		}
	} else {
		var req ProjectRobotUpdate
		if err := decode(r, &req); err != nil {
			h.fail(w, r, err)
			return
		}
		desc, disabled, expiresAt = req.Description, req.Disabled, req.ExpiresAt
		if err := holdsRobot(p, pa, rb); err != nil {
			h.fail(w, r, err)
			return
		}
		if req.Permissions != nil {
			perms, err := grantable(p, pa, req.Permissions)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			rb.Permissions = []policy.RobotPermission{{Kind: "project", Namespace: rb.Project, Access: perms}}
		}
	}
	if desc != nil {
		rb.Description = *desc
	}
	if disabled != nil {
		rb.Disabled = *disabled
	}
	if expiresAt != nil {
		if *expiresAt < 0 {
			h.fail(w, r, invalid("expires_at: unix nanoseconds, 0 for never"))
			return
		}
		rb.Expires = *expiresAt
	}
	if err := checkNUL(rb.Description); err != nil {
		h.fail(w, r, err)
		return
	}
	got, err := h.store.UpdateRobot(r.Context(), rb)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, got)
}

func (h *Handler) deleteRobot(w http.ResponseWriter, r *http.Request, _ policy.Principal, rb policy.Robot, _ policy.ProjectAccess) {
	if err := h.store.DeleteRobot(r.Context(), rb.Name); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// refreshRobotSecret gives a robot a new secret and answers it (once).
// Whoever takes over a robot's secret takes over its permissions: for a
// project robot the caller must hold them all.
func (h *Handler) refreshRobotSecret(w http.ResponseWriter, r *http.Request, p policy.Principal, rb policy.Robot, pa policy.ProjectAccess) {
	var req SecretRequest
	if err := decodeOptional(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := holdsRobot(p, pa, rb); err != nil {
		h.fail(w, r, err)
		return
	}
	secret, err := h.store.RefreshRobotSecret(r.Context(), rb.Name, req.Secret)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RobotSecret{Name: rb.Name, Secret: secret})
}

// createProjectRobot answers POST /projects/{project}/robots.
func (h *Handler) createProjectRobot(w http.ResponseWriter, r *http.Request, p policy.Principal, pa policy.ProjectAccess) {
	if err := requireUser(p); err != nil {
		h.fail(w, r, err)
		return
	}
	var req ProjectRobotRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if len(req.Permissions) == 0 {
		h.fail(w, r, invalid("permissions: give at least one {resource, action}"))
		return
	}
	perms, err := grantable(p, pa, req.Permissions)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	expires, err := expiry("expires_in_days", time.Now(), int64(req.ExpiresInDays))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rb := policy.Robot{
		Name: policy.RobotName(pa.Name, req.Name), Description: req.Description,
		Level: policy.RobotProject, Project: pa.Name, Disabled: req.Disabled, Expires: expires, Creator: p.Name,
		Permissions: []policy.RobotPermission{{Kind: "project", Namespace: pa.Name, Access: perms}},
	}
	h.createRobot(w, r, rb, req.Secret)
}

// createSystemRobot answers POST /robots (administrators).
func (h *Handler) createSystemRobot(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	if err := requireAdmin(p); err != nil {
		h.fail(w, r, err)
		return
	}
	var req SystemRobotRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	expires, err := expiry("expires_in_days", time.Now(), int64(req.ExpiresInDays))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rb := policy.Robot{
		Name: policy.RobotName("", req.Name), Description: req.Description, Level: policy.RobotSystem,
		Disabled: req.Disabled, Expires: expires, Creator: p.Name, Permissions: req.Permissions,
	}
	h.createRobot(w, r, rb, req.Secret)
}

func (h *Handler) createRobot(w http.ResponseWriter, r *http.Request, rb policy.Robot, secret string) {
	if err := checkNUL(rb.Description); err != nil {
		h.fail(w, r, err)
		return
	}
	got, secret, err := h.store.CreateRobot(r.Context(), rb, secret)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", Prefix+"robots/"+got.Name)
	writeJSON(w, http.StatusCreated, RobotCreated{Robot: got, Secret: secret})
}

func (h *Handler) listProjectRobots(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	h.listRobots(w, r, pa.Name)
}

func (h *Handler) listSystemRobots(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	if err := requireAdmin(p); err != nil {
		h.fail(w, r, err)
		return
	}
	h.listRobots(w, r, "")
}

// robotsBatch is how many robots one read of the state returns.
const robotsBatch = 500

// listRobots answers a page of the robots of project ("": the system
// robots), with the total in X-Total-Count.
func (h *Handler) listRobots(w http.ResponseWriter, r *http.Request, project string) {
	page, size, err := pageParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	shown := newWindow[policy.Robot](page, size)
	if err := h.eachRobot(r.Context(), project, func(rb policy.Robot) bool { shown.add(rb); return true }); err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(shown.total))
	writeJSON(w, http.StatusOK, shown.items)
}

// eachRobot calls fn with every robot of project ("": the system robots),
// in name order, until it returns false.
func (h *Handler) eachRobot(ctx context.Context, project string, fn func(policy.Robot) bool) error {
	prefix := policy.RobotName(project, "")
	return eachBatch(robotsBatch, func(last string, n int) ([]policy.Robot, error) {
		return h.store.Robots(ctx, project, last, n)
	}, func(rb policy.Robot) string { return strings.TrimPrefix(rb.Name, prefix) }, fn)
}
