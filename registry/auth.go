package registry

import (
	"context"
	"net/http"
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

// Identity is who made a request; Name is empty for anonymous requests.
type Identity struct {
	Name  string
	Admin bool
}

// Authorizer makes every access decision of the registry in one place. It
// returns ErrUnauthorized when the request carries no (valid) credentials and
// they would help — the registry answers 401 with the challenge from
// Challenge — and ErrDenied when the credentials are valid but not enough.
// A later issue replaces the single-admin implementation with projects,
// roles and token auth behind this same interface.
type Authorizer interface {
	Authorize(r *http.Request, need Access) (Identity, error)
	// Challenge is the WWW-Authenticate value sent with a 401 for need.
	Challenge(r *http.Request, need Access) string
}

// PasswordChecker verifies a user's password against the state machine.
type PasswordChecker interface {
	CheckPassword(ctx context.Context, user, password string) (ok bool, admin bool, err error)
}
