package policy

import (
	"errors"
	"fmt"

	"github.com/berth-registry/berth/oci"
	"slices"
	"strings"
)

// The access model: who may do what in which project. It follows Harbor's
// project roles and permission matrix (src/common/rbac/project), reduced to
// the resources berth has. The state machine stores users, members and
// robots; this file decides. See DESIGN.md, "Access".

// Role is a member's role in a project.
type Role string

// Project roles, from the most to the least privileged.
const (
	RoleProjectAdmin Role = "projectAdmin"
	RoleMaintainer   Role = "maintainer"
	RoleDeveloper    Role = "developer"
	RoleGuest        Role = "guest"
	RoleLimitedGuest Role = "limitedGuest"
)

// Roles lists every role, most privileged first.
var Roles = []Role{RoleProjectAdmin, RoleMaintainer, RoleDeveloper, RoleGuest, RoleLimitedGuest}

// ParseRole accepts a role's name in any case, with or without '-' or '_'
// ("project-admin", "limited_guest"), and Harbor's numeric role ids (1
// project admin, 2 developer, 3 guest, 4 maintainer, 5 limited guest).
func ParseRole(s string) (Role, error) {
	norm := strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(s))
	switch norm {
	case "projectadmin", "admin", "1":
		return RoleProjectAdmin, nil
	case "maintainer", "master", "4":
		return RoleMaintainer, nil
	case "developer", "2":
		return RoleDeveloper, nil
	case "guest", "3":
		return RoleGuest, nil
	case "limitedguest", "5":
		return RoleLimitedGuest, nil
	}
	return "", invalidf("role %q: want projectAdmin, maintainer, developer, guest or limitedGuest", s)
}

// RoleID is Harbor's numeric id of a role (its API speaks ids).
func (r Role) RoleID() int {
	switch r {
	case RoleProjectAdmin:
		return 1
	case RoleDeveloper:
		return 2
	case RoleGuest:
		return 3
	case RoleMaintainer:
		return 4
	case RoleLimitedGuest:
		return 5
	}
	return 0
}

// Resource is what a permission is about.
type Resource string

// Resources of a project.
const (
	ResProject      Resource = "project"       // the project itself
	ResMember       Resource = "member"        // its members
	ResLog          Resource = "log"           // its audit log
	ResQuota        Resource = "quota"         // its quota and usage
	ResRepository   Resource = "repository"    // repositories: pull, push, delete, list
	ResArtifact     Resource = "artifact"      // manifests
	ResTag          Resource = "tag"           // tags
	ResAccessory    Resource = "accessory"     // signatures, attestations, SBOMs
	ResRetention    Resource = "tag-retention" // retention policy
	ResImmutableTag Resource = "immutable-tag" // immutability rules
	ResRobot        Resource = "robot"         // project robot accounts
)

// Action is what is done to a resource.
type Action string

// Actions.
const (
	ActRead    Action = "read"
	ActList    Action = "list"
	ActCreate  Action = "create"
	ActUpdate  Action = "update"
	ActDelete  Action = "delete"
	ActPull    Action = "pull"
	ActPush    Action = "push"
	ActOperate Action = "operate" // run (retention)
)

// Access is one permission: an action on a resource.
type Access struct {
	Resource Resource `json:"resource"`
	Action   Action   `json:"action"`
}

func (a Access) String() string { return string(a.Resource) + ":" + string(a.Action) }

func acc(r Resource, actions ...Action) []Access {
	out := make([]Access, len(actions))
	for i, a := range actions {
		out[i] = Access{r, a}
	}
	return out
}

func join(parts ...[]Access) []Access {
	var out []Access
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// crud is every management action.
var crud = []Action{ActCreate, ActRead, ActUpdate, ActDelete, ActList}

// rolePermissions is Harbor's matrix for the resources berth has.
var rolePermissions = map[Role][]Access{
	RoleProjectAdmin: join(
		acc(ResProject, ActRead, ActUpdate, ActDelete),
		acc(ResMember, crud...),
		acc(ResLog, ActList),
		acc(ResQuota, ActRead),
		acc(ResRepository, ActCreate, ActRead, ActUpdate, ActDelete, ActList, ActPull, ActPush),
		acc(ResRetention, ActCreate, ActRead, ActUpdate, ActDelete, ActList, ActOperate),
		acc(ResImmutableTag, ActCreate, ActUpdate, ActDelete, ActList),
		acc(ResRobot, crud...),
		acc(ResArtifact, ActCreate, ActRead, ActDelete, ActList),
		acc(ResTag, ActList, ActCreate, ActDelete),
		acc(ResAccessory, ActList),
	),
	RoleMaintainer: join(
		acc(ResProject, ActRead),
		acc(ResMember, ActRead, ActList),
		acc(ResLog, ActList),
		acc(ResQuota, ActRead),
		acc(ResRepository, ActCreate, ActRead, ActUpdate, ActDelete, ActList, ActPush, ActPull),
		acc(ResRetention, ActCreate, ActRead, ActUpdate, ActDelete, ActList, ActOperate),
		acc(ResImmutableTag, ActCreate, ActUpdate, ActDelete, ActList),
		acc(ResRobot, ActRead, ActList),
		acc(ResArtifact, ActCreate, ActRead, ActDelete, ActList),
		acc(ResTag, ActList, ActCreate, ActDelete),
		acc(ResAccessory, ActList),
	),
	RoleDeveloper: join(
		acc(ResProject, ActRead),
		acc(ResMember, ActRead, ActList),
		acc(ResLog, ActList),
		acc(ResQuota, ActRead),
		acc(ResRepository, ActCreate, ActRead, ActUpdate, ActList, ActPush, ActPull),
		acc(ResRetention, ActCreate, ActRead, ActUpdate, ActDelete, ActList, ActOperate),
		acc(ResRobot, ActRead, ActList),
		acc(ResArtifact, ActCreate, ActRead, ActList),
		acc(ResTag, ActList, ActCreate),
		acc(ResAccessory, ActList),
	),
	RoleGuest: join(
		acc(ResProject, ActRead),
		acc(ResMember, ActRead, ActList),
		acc(ResLog, ActList),
		acc(ResQuota, ActRead),
		acc(ResRepository, ActRead, ActList, ActPull),
		acc(ResRobot, ActRead, ActList),
		acc(ResTag, ActList),
		acc(ResAccessory, ActList),
		acc(ResArtifact, ActRead, ActList),
	),
	RoleLimitedGuest: join(
		acc(ResProject, ActRead),
		acc(ResQuota, ActRead),
		acc(ResRepository, ActList, ActPull),
		acc(ResTag, ActList),
		acc(ResAccessory, ActList),
		acc(ResArtifact, ActRead, ActList),
	),
}

// publicPermissions is what anyone, anonymous included, may do in a public
// project: read its content (Harbor's anonymous access to public projects).
var publicPermissions = join(
	acc(ResProject, ActRead),
	acc(ResRepository, ActRead, ActList, ActPull),
	acc(ResTag, ActList),
	acc(ResAccessory, ActList),
	acc(ResArtifact, ActRead, ActList),
)

// RolePermissions returns the permissions of role in a project (a copy).
func RolePermissions(role Role) []Access {
	return slices.Clone(rolePermissions[role])
}

// RoleAllows reports whether role may do a on r.
func RoleAllows(role Role, r Resource, a Action) bool {
	return slices.Contains(rolePermissions[role], Access{r, a})
}

// RobotAssignable lists what a robot may be given in a project. Robots
// never manage members or robots, and never change the project itself:
// a robot that could create robots could escape its permissions
// (CVE-2022-31667), and one that could add members could grant them.
var RobotAssignable = join(
	acc(ResRepository, ActPull, ActPush, ActDelete, ActList, ActRead),
	acc(ResArtifact, ActRead, ActList, ActDelete, ActCreate),
	acc(ResTag, ActList, ActCreate, ActDelete),
	acc(ResAccessory, ActList),
	acc(ResLog, ActList),
	acc(ResQuota, ActRead),
	acc(ResRetention, ActRead, ActList, ActOperate, ActCreate, ActUpdate, ActDelete),
	acc(ResImmutableTag, ActList, ActCreate, ActUpdate, ActDelete),
	acc(ResProject, ActRead),
)

// Principal is who makes a request, as access decisions need it.
type Principal struct {
	// Kind is PrincipalUser, PrincipalRobot or PrincipalAnonymous.
	Kind string `json:"kind"`
	Name string `json:"name,omitempty"`
	// Admin: a system administrator (users only).
	Admin bool `json:"admin,omitempty"`
	// Robot is the robot's permissions (robots only).
	Robot *Robot `json:"-"`
}

// Principal kinds.
const (
	PrincipalAnonymous = "anonymous"
	PrincipalUser      = "user"
	PrincipalRobot     = "robot"
)

// Anonymous is the principal of a request without credentials.
var Anonymous = Principal{Kind: PrincipalAnonymous}

// IsAnonymous reports whether p made no claim of identity.
func (p Principal) IsAnonymous() bool { return p.Kind == "" || p.Kind == PrincipalAnonymous }

// ProjectAccess is what a decision about one project needs to know of it.
type ProjectAccess struct {
	Name   string
	Exists bool
	Public bool
	// Role is the principal's role there; "" when it is not a member.
	Role Role
}

// Allowed reports whether p may do a on r in project pr.
//
//   - A system administrator may do anything in any existing project.
//   - A robot may do what its permission list grants for the project (or
//     for every project, with the "*" namespace), and nothing else, even
//     in a public project beyond reading it.
//   - A member may do what its role allows.
//   - Anyone, anonymous included, may read a public project's content.
//
// Nothing is allowed in a project that does not exist: pushes into it are
// refused with a clear error by the caller, not created.
func Allowed(p Principal, pr ProjectAccess, r Resource, a Action) bool {
	if !pr.Exists {
		return false
	}
	if pr.Public && slices.Contains(publicPermissions, Access{r, a}) {
		return true
	}
	switch p.Kind {
	case PrincipalUser:
		if p.Admin {
			return true
		}
		return pr.Role != "" && RoleAllows(pr.Role, r, a)
	case PrincipalRobot:
		return p.Robot != nil && p.Robot.Allows(pr.Name, r, a)
	}
	return false
}

// Errors of the access model, besides ErrInvalid. ErrQuotaExceeded and
// ErrImmutable wrap oci.ErrDenied, so a registry that knows only the OCI
// sentinels answers them 403 DENIED.
var (
	// ErrExists: a project, user, robot or member that is being created
	// exists already.
	ErrExists = errors.New("already exists")
	// ErrQuotaExceeded: a push would take a project over its quota.
	ErrQuotaExceeded = fmt.Errorf("quota exceeded: %w", oci.ErrDenied)
	// ErrImmutable: a push would move, or a delete remove, an immutable tag.
	ErrImmutable = fmt.Errorf("tag is immutable: %w", oci.ErrDenied)
	// ErrNoProject: a repository's project does not exist.
	ErrNoProject = fmt.Errorf("project does not exist: %w", oci.ErrNotFound)
)

// Sees reports whether p may know that project pa exists: it is public,
// p is an administrator or a member, or p is a robot whose permissions
// name it. Everyone else is answered as if it did not exist, so nobody
// learns which private projects there are.
func Sees(p Principal, pa ProjectAccess) bool {
	if !pa.Exists {
		return false
	}
	if Allowed(p, pa, ResProject, ActRead) {
		return true
	}
	if p.Kind == PrincipalRobot && p.Robot != nil {
		for _, perm := range p.Robot.Permissions {
			if perm.Namespace == pa.Name || perm.Namespace == AllProjects {
				return true
			}
		}
	}
	return false
}
