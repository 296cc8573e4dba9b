package registry

import (
	"context"
	"net/http"

	"github.com/berth-registry/berth/policy"
)

// Action is what a request wants to do to a repository.
type Action string

// Actions, named as in the distribution token spec's scopes.
const (
	ActionPull   Action = "pull"
	ActionPush   Action = "push"
	ActionDelete Action = "delete"
	// ActionCatalog is the registry-wide catalog listing (scope
	// "registry:catalog:*"); its Access has no repository.
	ActionCatalog Action = "catalog"
)

// Access is one permission a request needs.
type Access struct {
	Repo   string // empty for ActionCatalog
	Action Action
}

// Identity is who made a request.
type Identity struct {
	// Principal is the caller as access decisions see it (policy.Anonymous
	// for a request without credentials): its kind, name, system-admin flag
	// and a robot's permissions.
	Principal policy.Principal
}

// actor is how the audit log names the caller.
func (id Identity) actor() string {
	if id.Principal.IsAnonymous() {
		return policy.PrincipalAnonymous
	}
	return id.Principal.Name
}

// Authorizer makes every access decision of the registry in one place. It
// returns ErrUnauthorized when the request carries no (valid) credentials and
// they would help — the registry answers 401 with the challenge from
// Challenge — and ErrDenied when the credentials are valid but not enough.
// NewAccessAuth is the implementation with projects, roles, robots and
// token auth; NewAdminAuth the single-admin one of the first release.
type Authorizer interface {
	Authorize(r *http.Request, need Access) (Identity, error)
	// Challenge is the WWW-Authenticate value sent with a 401 for need;
	// err is what Authorize returned.
	Challenge(r *http.Request, need Access, err error) string
}

// CatalogFilter is implemented by an Authorizer whose callers may see only
// part of the catalog. Visible returns the test the catalog applies to
// each repository name, for the caller id; it is used for one request.
type CatalogFilter interface {
	Visible(ctx context.Context, id Identity) func(repo string) (bool, error)
}

// PasswordChecker verifies a user's password against the state machine.
type PasswordChecker interface {
	CheckPassword(ctx context.Context, user, password string) (ok bool, admin bool, err error)
}
