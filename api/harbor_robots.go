package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Harbor's v2 robot accounts: one endpoint for both levels, robots named
// by id. The rules are /api/v1's: a project robot is managed by whoever
// has the robot permissions in its project, a system robot by
// administrators; robots manage no robots; whoever gives a robot
// permissions, changes it or takes its secret must hold every permission
// it has and is given (grantable); the secret is answered once.

// HarborAccess is one permission of a robot (Harbor's Access). Berth's
// permissions allow; an effect other than "allow" is refused.
type HarborAccess struct {
	Resource string `json:"resource"`
	Action   string `json:"action"`
	Effect   string `json:"effect,omitempty"`
}

// HarborRobotPermission is a robot's permissions in one project, or in
// every project ("*", system robots).
type HarborRobotPermission struct {
	Kind      string         `json:"kind"`
	Namespace string         `json:"namespace"`
	Access    []HarborAccess `json:"access"`
}

// HarborRobot is Harbor's Robot, never with its secret. ExpiresAt is in
// unix seconds, -1 for never; Duration in days, -1 for never.
type HarborRobot struct {
	ID           uint64                  `json:"id"`
	Name         string                  `json:"name"`
	Description  string                  `json:"description"`
	Level        string                  `json:"level"`
	Duration     int64                   `json:"duration"`
	Editable     bool                    `json:"editable"`
	Disable      bool                    `json:"disable"`
	ExpiresAt    int64                   `json:"expires_at"`
	Permissions  []HarborRobotPermission `json:"permissions"`
	CreationTime string                  `json:"creation_time"`
	UpdateTime   string                  `json:"update_time"`
}

// HarborRobotCreate is Harbor's RobotCreate, the body of POST /robots.
// Name is the short name: the account is robot$<project>+<name> (level
// project, whose one permission names the project) or robot$<name>
// (level system). Duration is in days; -1 or 0 never expires. Secret is
// chosen by the caller (16 to 128 characters) or, empty, generated.
type HarborRobotCreate struct {
	Name        string                  `json:"name"`
	Description string                  `json:"description,omitempty"`
	Secret      string                  `json:"secret,omitempty"`
	Level       string                  `json:"level"`
	Disable     bool                    `json:"disable,omitempty"`
	Duration    int64                   `json:"duration"`
	Permissions []HarborRobotPermission `json:"permissions"`
}

// HarborRobotCreated is Harbor's RobotCreated: the secret, this once.
type HarborRobotCreated struct {
	ID           uint64 `json:"id"`
	Name         string `json:"name"`
	Secret       string `json:"secret"`
	CreationTime string `json:"creation_time"`
	ExpiresAt    int64  `json:"expires_at"`
}

// HarborRobotUpdate is the body of PUT /robots/{robot_id}: Harbor's Robot
// as the client read it. Its name, level and id must stay; description,
// disable, duration (counted from the creation, as Harbor's) and
// permissions change; a field left out keeps its value. The secret
// changes through PATCH only; the times and editable are read-only.
type HarborRobotUpdate struct {
	ID           uint64                  `json:"id,omitempty"`
	Name         string                  `json:"name,omitempty"`
	Description  *string                 `json:"description,omitempty"`
	Secret       string                  `json:"secret,omitempty"`
	Level        string                  `json:"level,omitempty"`
	Duration     *int64                  `json:"duration,omitempty"`
	Editable     *bool                   `json:"editable,omitempty"`
	Disable      *bool                   `json:"disable,omitempty"`
	ExpiresAt    *int64                  `json:"expires_at,omitempty"`
	Permissions  []HarborRobotPermission `json:"permissions,omitempty"`
	CreationTime string                  `json:"creation_time,omitempty"`
	UpdateTime   string                  `json:"update_time,omitempty"`
}

// HarborRobotSec is Harbor's RobotSec: the body of PATCH
// /robots/{robot_id} (a secret of the caller's, or empty for a generated
// one) and its answer (the generated secret; empty when the caller chose
// it, as Harbor answers).
type HarborRobotSec struct {
	Secret string `json:"secret"`
}

func harborRobot(rb policy.Robot) HarborRobot {
	out := HarborRobot{
		ID: rb.ID, Name: rb.Name, Description: rb.Description, Level: rb.Level, Duration: robotDuration(rb),
		Editable: true, Disable: rb.Disabled, ExpiresAt: -1, Permissions: []HarborRobotPermission{},
		CreationTime: harborTime(rb.Created), UpdateTime: harborTime(rb.Updated),
	}
	if rb.Expires != 0 {
		out.ExpiresAt = time.Unix(0, rb.Expires).Unix()
	}
	for _, perm := range rb.Permissions {
		hp := HarborRobotPermission{Kind: "project", Namespace: perm.Namespace, Access: []HarborAccess{}}
		for _, a := range perm.Access {
			hp.Access = append(hp.Access, HarborAccess{Resource: string(a.Resource), Action: string(a.Action), Effect: "allow"})
		}
		out.Permissions = append(out.Permissions, hp)
	}
	return out
}

// robotDuration is rb's lifetime in whole days (-1: it never expires).
func robotDuration(rb policy.Robot) int64 {
	if rb.Expires == 0 {
		return -1
	}
	d := time.Duration(rb.Expires - rb.Created)
	return int64((d + day - 1) / day)
}

// robotPermissions turns Harbor's permissions into berth's; whether a
// robot may be given them is decided by grantable and Robot.Validate.
func robotPermissions(in []HarborRobotPermission) ([]policy.RobotPermission, error) {
	var out []policy.RobotPermission
	for _, hp := range in {
		if hp.Kind != "" && hp.Kind != "project" {
			return nil, invalid(fmt.Sprintf("permission kind %q: berth robots have project permissions only", clip(hp.Kind, 32)))
		}
		perm := policy.RobotPermission{Kind: "project", Namespace: hp.Namespace}
		for _, a := range hp.Access {
			if a.Effect != "" && a.Effect != "allow" {
				return nil, invalid(fmt.Sprintf("effect %q: berth's permissions allow", clip(a.Effect, 32)))
			}
			perm.Access = append(perm.Access, policy.Access{Resource: policy.Resource(a.Resource), Action: policy.Action(a.Action)})
		}
		out = append(out, perm)
	}
	return out, nil
}

// robotIDNotFound is the answer about a robot that does not exist or
// whose project the caller may not see: the same in both cases.
func robotIDNotFound(id uint64) error {
	return fmt.Errorf("robot %d: %w", id, oci.ErrNotFound)
}

// onHarborRobot wraps fn for /robots/{robot_id} as onRobot does for
// names: robot:a in a project robot's project (not found when the caller
// may not see it), an administrator for a system robot, never a robot.
func (h *Handler) onHarborRobot(a policy.Action, fn robotEndpoint) endpoint {
	return func(w http.ResponseWriter, r *http.Request, p policy.Principal) {
		ctx := r.Context()
		if p.IsAnonymous() {
			// Nobody anonymous manages robots: refused before the id is
			// looked up.
			h.harborFail(w, r, errUnauthenticated)
			return
		}
		id, err := pathUint(r, "robot_id")
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		rb, err := h.store.RobotByID(ctx, id)
		if errors.Is(err, oci.ErrNotFound) {
			err = robotIDNotFound(id)
		}
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		var pa policy.ProjectAccess
		if rb.Level == policy.RobotSystem {
			err = requireAdmin(p)
		} else if pa, err = h.authorize(ctx, p, rb.Project, policy.ResRobot, a); err == nil {
			err = requireUser(p)
		} else if errors.Is(err, oci.ErrNotFound) {
			err = robotIDNotFound(id)
		}
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		fn(w, r, p, rb, pa)
	}
}

func (h *Handler) harborGetRobot(w http.ResponseWriter, _ *http.Request, _ policy.Principal, rb policy.Robot, _ policy.ProjectAccess) {
	writeJSON(w, http.StatusOK, harborRobot(rb))
}

// harborCreateRobot answers POST /robots. The body says the level and
// the project, so it is read before the decision (anonymous requests are
// refused before it); the decision then is /api/v1's: a project robot
// needs robot:create in its project and a user who holds every permission
// it is given, a system robot an administrator.
func (h *Handler) harborCreateRobot(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	if p.IsAnonymous() {
		h.harborFail(w, r, errUnauthenticated)
		return
	}
	var req HarborRobotCreate
	if err := decode(r, &req); err != nil {
		h.harborFail(w, r, err)
		return
	}
	perms, err := robotPermissions(req.Permissions)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	var rb policy.Robot
	switch req.Level {
	case policy.RobotProject:
		if len(perms) != 1 {
			h.harborFail(w, r, invalid("a project robot has one permission entry, for its project"))
			return
		}
		pa, err := h.authorize(ctx, p, perms[0].Namespace, policy.ResRobot, policy.ActCreate)
		if err == nil {
			err = requireUser(p)
		}
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		access, err := grantable(p, pa, perms[0].Access)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		rb = policy.Robot{Name: policy.RobotName(pa.Name, req.Name), Level: policy.RobotProject, Project: pa.Name,
			Permissions: []policy.RobotPermission{{Kind: "project", Namespace: pa.Name, Access: access}}}
	case policy.RobotSystem:
		if err := requireAdmin(p); err != nil {
			h.harborFail(w, r, err)
			return
		}
		rb = policy.Robot{Name: policy.RobotName("", req.Name), Level: policy.RobotSystem, Permissions: perms}
	default:
		h.harborFail(w, r, invalid(fmt.Sprintf("level %q: want project or system", clip(req.Level, 32))))
		return
	}
	expires, err := expiry("duration", time.Now(), req.Duration)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	rb.Description, rb.Disabled, rb.Expires, rb.Creator = req.Description, req.Disable, expires, p.Name
	if err := checkNUL(rb.Description); err != nil {
		h.harborFail(w, r, err)
		return
	}
	got, secret, err := h.store.CreateRobot(ctx, rb, req.Secret)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	created := HarborRobotCreated{ID: got.ID, Name: got.Name, Secret: secret, CreationTime: harborTime(got.Created), ExpiresAt: -1}
	if got.Expires != 0 {
		created.ExpiresAt = time.Unix(0, got.Expires).Unix()
	}
	w.Header().Set("Location", harborV2+"/robots/"+strconv.FormatUint(got.ID, 10))
	writeJSON(w, http.StatusCreated, created)
}

// harborUpdateRobot answers PUT /robots/{robot_id}. For a project robot
// the caller must hold the permissions it has and those it is given.
func (h *Handler) harborUpdateRobot(w http.ResponseWriter, r *http.Request, p policy.Principal, rb policy.Robot, pa policy.ProjectAccess) {
	var req HarborRobotUpdate
	if err := decode(r, &req); err != nil {
		h.harborFail(w, r, err)
		return
	}
	switch {
	case req.ID != 0 && req.ID != rb.ID:
		h.harborFail(w, r, invalid("id: the path names another robot"))
		return
	case req.Name != "" && req.Name != rb.Name && policy.RobotName(rb.Project, req.Name) != rb.Name:
		h.harborFail(w, r, invalid("name: a robot cannot be renamed"))
		return
	case req.Level != "" && req.Level != rb.Level:
		h.harborFail(w, r, invalid("level: a robot's level cannot change"))
		return
	}
	var perms []policy.RobotPermission
	if req.Permissions != nil {
		var err error
		if perms, err = robotPermissions(req.Permissions); err != nil {
			h.harborFail(w, r, err)
			return
		}
	}
	if err := holdsRobot(p, pa, rb); err != nil {
		h.harborFail(w, r, err)
		return
	}
	switch {
	case perms == nil:
	case rb.Level == policy.RobotProject:
		if len(perms) != 1 || perms[0].Namespace != rb.Project {
			h.harborFail(w, r, invalid("permissions: a project robot has one permission entry, for its project"))
			return
		}
		access, err := grantable(p, pa, perms[0].Access)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		rb.Permissions = []policy.RobotPermission{{Kind: "project", Namespace: rb.Project, Access: access}}
	default:
		rb.Permissions = perms
	}
	if req.Description != nil {
		rb.Description = *req.Description
	}
	if req.Disable != nil {
		rb.Disabled = *req.Disable
	}
	if req.Duration != nil && *req.Duration != robotDuration(rb) {
		expires, err := expiry("duration", time.Unix(0, rb.Created), *req.Duration)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		rb.Expires = expires
	}
	if err := checkNUL(rb.Description); err != nil {
		h.harborFail(w, r, err)
		return
	}
	if _, err := h.store.UpdateRobot(r.Context(), rb); err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusOK)
}

// harborRefreshRobot answers PATCH /robots/{robot_id}: a new secret.
// Whoever takes a project robot's secret must hold its permissions.
func (h *Handler) harborRefreshRobot(w http.ResponseWriter, r *http.Request, p policy.Principal, rb policy.Robot, pa policy.ProjectAccess) {
	var req HarborRobotSec
	if err := decodeOptional(r, &req); err != nil {
		h.harborFail(w, r, err)
		return
	}
	if err := holdsRobot(p, pa, rb); err != nil {
		h.harborFail(w, r, err)
		return
	}
	secret, err := h.store.RefreshRobotSecret(r.Context(), rb.Name, req.Secret)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if req.Secret != "" {
		secret = ""
	}
	writeJSON(w, http.StatusOK, HarborRobotSec{Secret: secret})
}

func (h *Handler) harborDeleteRobot(w http.ResponseWriter, r *http.Request, _ policy.Principal, rb policy.Robot, _ policy.ProjectAccess) {
	if err := h.store.DeleteRobot(r.Context(), rb.Name); err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusOK)
}

// harborListRobots answers GET /robots: the system robots for an
// administrator; with ?q=Level=project,ProjectID=N the robots of project
// N, for whoever may list them there. ?q=name= (or name=~) filters by
// name.
func (h *Handler) harborListRobots(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	if p.IsAnonymous() {
		h.harborFail(w, r, errUnauthenticated)
		return
	}
	page, size, terms, err := harborListQuery(r, "Level", "ProjectID", "name")
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	project := ""
	switch level := terms["level"]; {
	case level.fuzzy:
		h.harborFail(w, r, invalid("q: Level takes a value, project or system"))
		return
	case level.value == "" || level.value == policy.RobotSystem:
		if err := requireAdmin(p); err != nil {
			h.harborFail(w, r, err)
			return
		}
	case level.value == policy.RobotProject:
		raw := terms["projectid"]
		id, err := strconv.ParseUint(raw.value, 10, 64)
		if err != nil || raw.fuzzy {
			h.harborFail(w, r, invalid("q: Level=project needs ProjectID=<id>"))
			return
		}
		proj, err := h.store.ProjectByID(ctx, id)
		if err == nil {
			_, err = h.authorize(ctx, p, proj.Name, policy.ResRobot, policy.ActList)
		}
		if errors.Is(err, oci.ErrNotFound) {
			err = projectNotFound(raw.value)
		}
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		project = proj.Name
	default:
		h.harborFail(w, r, invalid(fmt.Sprintf("q: Level %q: want project or system", clip(level.value, 32))))
		return
	}
	shown := newWindow[policy.Robot](page, size)
	err = h.eachRobot(ctx, project, func(rb policy.Robot) bool {
		short := strings.TrimPrefix(rb.Name, policy.RobotName(project, ""))
		if t, ok := terms["name"]; !ok || t.matches(rb.Name) || t.matches(short) {
			shown.add(rb)
		}
		return true
	})
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	out := []HarborRobot{}
	for _, rb := range shown.items {
		out = append(out, harborRobot(rb))
	}
	setPaging(w, r, shown.total, page, size)
	writeJSON(w, http.StatusOK, out)
}
