package policy

import (
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"unicode"
)

// Users and robot accounts. The state machine stores them (with password
// and secret hashes, which never leave it through the API); this file
// holds their model and validation.

// Bounds of accounts.
const (
	MaxUserName       = 255
	MinPasswordLength = 8
	// MaxPasswordLength is bcrypt's limit: it hashes no more than 72
	// bytes, and refuses a longer password.
	MaxPasswordLength = 72
	maxEmail          = 255
	maxRealName       = 255
	maxDescription    = 1024
	// MaxRobotPermissions bounds the projects a robot's list names.
	MaxRobotPermissions = 128
)

// User is a local account, as the API shows it (never its hash).
type User struct {
	ID       uint64 `json:"id"`
	Name     string `json:"username"`
	Email    string `json:"email,omitempty"`
	RealName string `json:"realname,omitempty"`
	Comment  string `json:"comment,omitempty"`
	// Admin: a system administrator. Only an administrator may set it,
	// through its own operation; no profile update carries it.
	Admin   bool  `json:"sysadmin_flag"`
	Created int64 `json:"creation_time"` // unix nanoseconds
	Updated int64 `json:"update_time"`
}

// ValidateUserName checks a user name: 1 to 255 lowercase letters,
// digits, '.', '_' and '-', starting and ending with a letter or digit. A
// name starting with "robot$" is a robot's, never a user's.
func ValidateUserName(name string) error {
	if len(name) > MaxUserName || !nameRE.MatchString(name) {
		return invalidf("user name %q: use 1 to %d lowercase letters, digits, '.', '_' or '-'", name, MaxUserName)
	}
	return nil
}

// ValidatePassword checks a new password's strength: 8 characters to 72
// bytes (bcrypt's limit) with at least one upper-case letter, one
// lower-case letter and one digit (Harbor's rule), and not the user name.
func ValidatePassword(user, password string) error {
	n := len([]rune(password))
	if n < MinPasswordLength || len(password) > MaxPasswordLength {
		return invalidf("password: use %d characters to %d bytes", MinPasswordLength, MaxPasswordLength)
	}
	var upper, lower, digit bool
	for _, r := range password {
		switch {
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsLower(r):
			lower = true
		case unicode.IsDigit(r):
			digit = true
		}
	}
	if !upper || !lower || !digit {
		return invalidf("password: use at least one upper-case letter, one lower-case letter and one digit")
	}
	if strings.EqualFold(password, user) {
		return invalidf("password: must not be the user name")
	}
	return nil
}

// Validate checks u's profile fields.
func (u User) Validate() error {
	if err := ValidateUserName(u.Name); err != nil {
		return err
	}
	if u.Email != "" {
		if len(u.Email) > maxEmail {
			return invalidf("email longer than %d bytes", maxEmail)
		}
		if a, err := mail.ParseAddress(u.Email); err != nil || a.Address != u.Email {
			return invalidf("email %q is not an address", u.Email)
		}
	}
	if len(u.RealName) > maxRealName || len(u.Comment) > maxDescription {
		return invalidf("realname or comment too long")
	}
	if strings.ContainsAny(u.RealName+u.Comment, "\x00") {
		return invalidf("realname or comment holds a NUL byte")
	}
	return nil
}

// Robot levels.
const (
	RobotSystem  = "system"
	RobotProject = "project"
)

// RobotPrefix starts every robot account's name.
const RobotPrefix = "robot$"

// AllProjects is the namespace of a system robot's permission that covers
// every project.
const AllProjects = "*"

// RobotPermission grants a robot actions in one project (or, for a system
// robot, every project: Namespace "*").
type RobotPermission struct {
	Kind      string   `json:"kind"`      // always "project"
	Namespace string   `json:"namespace"` // project name or "*"
	Access    []Access `json:"access"`
}

// Robot is a robot account as the API shows it (never its secret).
type Robot struct {
	ID          uint64            `json:"id"`
	Name        string            `json:"name"` // robot$<project>+<name> or robot$<name>
	Description string            `json:"description,omitempty"`
	Level       string            `json:"level"`             // RobotSystem or RobotProject
	Project     string            `json:"project,omitempty"` // of a project robot
	Permissions []RobotPermission `json:"permissions"`
	Disabled    bool              `json:"disable"`
	// Expires is the unix time in nanoseconds after which the robot
	// cannot authenticate; 0: never.
	Expires int64  `json:"expires_at"`
	Creator string `json:"creator,omitempty"`
	Created int64  `json:"creation_time"`
	Updated int64  `json:"update_time"`
}

// RobotName is the account name of robot short in project ("" for a
// system robot): robot$<project>+<short>, or robot$<short>.
func RobotName(project, short string) string {
	if project == "" {
		return RobotPrefix + short
	}
	return RobotPrefix + project + "+" + short
}

// IsRobotName reports whether name is a robot account's.
func IsRobotName(name string) bool { return strings.HasPrefix(name, RobotPrefix) }

// ValidateRobotShortName checks the short name of a robot (the part after
// the project): 1 to 64 lowercase letters, digits, '.', '_' or '-'.
func ValidateRobotShortName(short string) error {
	return ValidateName("robot", short)
}

// Validate checks r: its name matches its level and project, a project
// robot's permissions name only its project, a system robot's name
// existing projects or "*", and every action is one a robot may have.
func (r Robot) Validate() error {
	switch r.Level {
	case RobotProject:
		if err := ValidateProjectName(r.Project); err != nil {
			return err
		}
		short, ok := strings.CutPrefix(r.Name, RobotPrefix+r.Project+"+")
		if !ok {
			return invalidf("project robot %q must be named %s", r.Name, RobotName(r.Project, "<name>"))
		}
		if err := ValidateRobotShortName(short); err != nil {
			return err
		}
	case RobotSystem:
		if r.Project != "" {
			return invalidf("a system robot belongs to no project")
		}
		short, ok := strings.CutPrefix(r.Name, RobotPrefix)
		if !ok || strings.Contains(short, "+") {
			return invalidf("system robot %q must be named %s", r.Name, RobotName("", "<name>"))
		}
		if err := ValidateRobotShortName(short); err != nil {
			return err
		}
	default:
		return invalidf("robot level %q: want %s or %s", r.Level, RobotSystem, RobotProject)
	}
	if len(r.Description) > maxDescription {
		return invalidf("robot description longer than %d bytes", maxDescription)
	}
	if len(r.Permissions) == 0 {
		return invalidf("a robot needs at least one permission")
	}
	if len(r.Permissions) > MaxRobotPermissions {
		return invalidf("a robot may name at most %d projects", MaxRobotPermissions)
	}
	seen := map[string]bool{}
	for _, p := range r.Permissions {
		if p.Kind != "" && p.Kind != "project" {
			return invalidf("robot permission kind %q: want project", p.Kind)
		}
		switch {
		case p.Namespace == AllProjects:
			if r.Level != RobotSystem {
				return invalidf("only a system robot may have permissions in every project")
			}
		case r.Level == RobotProject && p.Namespace != r.Project:
			return invalidf("robot of project %s cannot have permissions in project %s", r.Project, p.Namespace)
		default:
			if err := ValidateProjectName(p.Namespace); err != nil {
				return err
			}
		}
		if seen[p.Namespace] {
			return invalidf("project %s is listed twice", p.Namespace)
		}
		seen[p.Namespace] = true
		if len(p.Access) == 0 || len(p.Access) > len(RobotAssignable) {
			return invalidf("permission in %s: give 1 to %d actions", p.Namespace, len(RobotAssignable))
		}
		for _, a := range p.Access {
			if !slices.Contains(RobotAssignable, a) {
				return invalidf("a robot cannot be given %s", a)
			}
		}
	}
	return nil
}

// Allows reports whether r's permission list grants a on res in project.
func (r Robot) Allows(project string, res Resource, a Action) bool {
	for _, p := range r.Permissions {
		if p.Namespace != project && p.Namespace != AllProjects {
			continue
		}
		if slices.Contains(p.Access, Access{res, a}) {
			return true
		}
	}
	return false
}

// Expired reports whether r cannot authenticate at now (unix nanoseconds).
func (r Robot) Expired(now int64) bool { return r.Expires != 0 && now >= r.Expires }

// Member is a user's role in a project.
type Member struct {
	Project string `json:"project"`
	User    string `json:"entity_name"`
	UserID  uint64 `json:"entity_id"`
	Role    Role   `json:"role_name"`
}

// Validate checks m.
func (m Member) Validate() error {
	if err := ValidateProjectName(m.Project); err != nil {
		return err
	}
	if err := ValidateUserName(m.User); err != nil {
		return err
	}
	if m.Role.RoleID() == 0 {
		return invalidf("role %q: want projectAdmin, maintainer, developer, guest or limitedGuest", m.Role)
	}
	return nil
}

// String names the principal for logs and the audit log.
func (p Principal) String() string {
	if p.IsAnonymous() {
		return "anonymous"
	}
	return fmt.Sprintf("%s %s", p.Kind, p.Name)
}

// Account is an authenticated account: its principal, its id (a deleted
// and re-created account gets a new one, so that tokens of the old one do
// not pass for it) and the generation of its credentials (a password or
// secret change raises it, so that refresh tokens issued before stop
// working).
type Account struct {
	Principal Principal
	ID        uint64
	Gen       uint64
}

// SigningKey describes a signing key of the token service, never the key
// itself: its id (a token's kid), when it was made, and whether it signs
// new tokens (the others only verify the tokens they signed).
type SigningKey struct {
	Kid     string `json:"kid"`
	Created int64  `json:"created"` // unix nanoseconds
	Current bool   `json:"current"`
}
