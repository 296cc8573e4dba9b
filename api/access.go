package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
)

// Authentication and access decisions of the management API. Every
// request is authenticated (basic auth of a user or robot, a bearer token,
// or none: anonymous); every decision about a project goes through
// policy.Allowed. See DESIGN.md, "Authentication" and "Decisions".

// Who may create projects (Config.ProjectCreation).
const (
	ProjectCreationEveryone  = "everyone"  // every user (not robots)
	ProjectCreationAdminOnly = "adminonly" // system administrators only
)

// Config holds the access settings of the management API.
type Config struct {
	// SelfRegistration lets anyone, anonymous included, create a user
	// (never an administrator) with POST /api/v1/users.
	SelfRegistration bool
	// ProjectCreation is ProjectCreationEveryone or
	// ProjectCreationAdminOnly.
	ProjectCreation string
}

// DefaultConfig returns the defaults: no self-registration, every user may
// create projects.
func DefaultConfig() Config {
	return Config{ProjectCreation: ProjectCreationEveryone}
}

// Validate checks c.
func (c Config) Validate() error {
	switch c.ProjectCreation {
	case ProjectCreationEveryone, ProjectCreationAdminOnly:
		return nil
	}
	return fmt.Errorf("%w: project_creation %q: want %s or %s", ErrConfig, c.ProjectCreation,
		ProjectCreationEveryone, ProjectCreationAdminOnly)
}

// Errors of this package. Handlers answer them with fail: the first two
// are 401 (with a basic challenge) and 403; errors of the state are mapped
// by their oci and policy sentinels.
var (
	// ErrConfig: a Config is invalid.
	ErrConfig = errors.New("invalid api config")
	// errUnauthenticated: no credentials where they are needed, or bad
	// ones.
	errUnauthenticated = errors.New("authentication required")
	// errForbidden: the principal may see the object but not do this.
	errForbidden = errors.New("permission denied")
)

// forbidden is errForbidden with the reason a client needs.
func forbidden(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errForbidden, fmt.Sprintf(format, args...))
}

type principalKey struct{}

// principalFrom returns the principal an authenticated request carries.
func principalFrom(ctx context.Context) policy.Principal {
	if p, ok := ctx.Value(principalKey{}).(policy.Principal); ok {
		return p
	}
	return policy.Anonymous
}

// clientAddr is the address of r's client, as the audit log records it.
func clientAddr(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// authenticate returns r's principal, as the Authenticator finds it:
// from basic auth (a user or a robot), a bearer token, or anonymous
// without credentials. Empty basic credentials count as none
// (containers/image sends them). What the authenticator would take for no
// credentials — another scheme, basic credentials it cannot read, a
// bearer header without a token — is refused here, so that a client that
// meant to authenticate learns that it did not.
func (h *Handler) authenticate(r *http.Request) (policy.Principal, error) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return policy.Anonymous, nil
	}
	name, secret, basic := r.BasicAuth()
	if basic && name == "" && secret == "" {
		return policy.Anonymous, nil
	}
	scheme, token, _ := strings.Cut(authz, " ")
	bearer := strings.EqualFold(scheme, "Bearer")
	switch {
	case basic:
	case bearer && strings.TrimSpace(token) == "":
		return policy.Principal{}, fmt.Errorf("%w: invalid bearer token", errUnauthenticated)
	case bearer:
	case strings.EqualFold(scheme, "Basic"):
		return policy.Principal{}, fmt.Errorf("%w: malformed basic credentials", errUnauthenticated)
	default:
		return policy.Principal{}, fmt.Errorf("%w: unsupported authorization scheme %q", errUnauthenticated, clip(scheme, 32))
	}
	if h.auth == nil {
		return policy.Principal{}, fmt.Errorf("%w: this server checks no credentials", errUnauthenticated)
	}
	id, err := h.auth.Authenticate(r)
	switch {
	case errors.Is(err, registry.ErrUnauthorized) && bearer:
		h.logger.DebugContext(r.Context(), "bearer token refused", "error", err, "request_id", registry.RequestID(r.Context()))
		return policy.Principal{}, fmt.Errorf("%w: invalid bearer token", errUnauthenticated)
	case errors.Is(err, registry.ErrUnauthorized):
		return policy.Principal{}, fmt.Errorf("%w: invalid username or password", errUnauthenticated)
	case err != nil:
		return policy.Principal{}, err
	}
	return id.Principal, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// endpoint is a handler of an authenticated request.
type endpoint func(w http.ResponseWriter, r *http.Request, p policy.Principal)

// authenticated wraps fn: it authenticates the request, answers 401 for
// bad credentials, and puts the principal and the audit actor in the
// request's context.
func (h *Handler) authenticated(fn endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := h.authenticate(r)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		actor := policy.Actor{Name: p.Name, Addr: clientAddr(r)}
		if p.IsAnonymous() {
			actor.Name = policy.PrincipalAnonymous
		}
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		ctx = policy.WithActor(ctx, actor)
		fn(w, r.WithContext(ctx), p)
	}
}

// adminOnly wraps fn for system endpoints: 401 without (good)
// credentials, 403 for a principal that is not a system administrator.
func (h *Handler) adminOnly(fn http.HandlerFunc) http.HandlerFunc {
	return h.authenticated(func(w http.ResponseWriter, r *http.Request, p policy.Principal) {
		if err := requireAdmin(p); err != nil {
			h.fail(w, r, err)
			return
		}
		fn(w, r)
	})
}

// requireAdmin refuses a principal that is not a system administrator.
func requireAdmin(p policy.Principal) error {
	switch {
	case p.IsAnonymous():
		return errUnauthenticated
	case p.Kind != policy.PrincipalUser || !p.Admin:
		return forbidden("system administrators only")
	}
	return nil
}

// requireUser refuses anonymous requests and robots.
func requireUser(p policy.Principal) error {
	switch {
	case p.IsAnonymous():
		return errUnauthenticated
	case p.Kind != policy.PrincipalUser:
		return forbidden("a robot account cannot do this")
	}
	return nil
}

// anonymousMay reports whether an anonymous request may ever do a on r
// (in a public project). When it may not, an anonymous request is
// answered 401 before anything is looked up, so that the answer does not
// tell whether a private project exists.
func anonymousMay(r policy.Resource, a policy.Action) bool {
	return policy.Allowed(policy.Anonymous, policy.ProjectAccess{Name: "-", Exists: true, Public: true}, r, a)
}

// projectAccess returns what decisions about project need for p (a
// project with an invalid name does not exist).
func (h *Handler) projectAccess(ctx context.Context, p policy.Principal, project string) (policy.ProjectAccess, error) {
	if policy.ValidateProjectName(project) != nil {
		return policy.ProjectAccess{Name: project}, nil
	}
	user := ""
	if p.Kind == policy.PrincipalUser {
		user = p.Name
	}
	return h.store.ProjectAccess(ctx, user, project)
}

// projectNotFound is the answer about a project that does not exist or that the
// caller may not see: the same in both cases.
func projectNotFound(project string) error {
	return fmt.Errorf("project %s: %w", clip(project, maxNameInMessage), oci.ErrNotFound)
}

const maxNameInMessage = 255

// authorize decides whether p may do a on r in project (see
// authorizeAll).
func (h *Handler) authorize(ctx context.Context, p policy.Principal, project string, r policy.Resource, a policy.Action) (policy.ProjectAccess, error) {
	return h.authorizeAll(ctx, p, project, need(r, a))
}

func need(r policy.Resource, a policy.Action) []policy.Access {
	return []policy.Access{{Resource: r, Action: a}}
}

// anonymousRefused is errUnauthenticated when p is anonymous and one of
// needs is something no anonymous request could ever do; it is decided
// before anything is looked up.
func anonymousRefused(p policy.Principal, needs []policy.Access) error {
	if p.IsAnonymous() {
		for _, n := range needs {
			if !anonymousMay(n.Resource, n.Action) {
				return errUnauthenticated
			}
		}
	}
	return nil
}

// authorizeAll decides whether p may do every access of needs in project.
// It returns the project's access (nil error: allowed), errUnauthenticated
// for an anonymous request that could never do one of them, a not-found
// error when the project does not exist or p may not see it, and
// errForbidden, naming the first access missing, when p sees it but may
// not do all of this. A refusal is decided again after catching up with
// the leader, so that a membership just granted through another node
// counts.
func (h *Handler) authorizeAll(ctx context.Context, p policy.Principal, project string, needs []policy.Access) (policy.ProjectAccess, error) {
	if err := anonymousRefused(p, needs); err != nil {
		return policy.ProjectAccess{}, err
	}
	pa, err := h.projectAccess(ctx, p, project)
	if err != nil {
		return pa, err
	}
	// missing is the first of needs that p may not do in pa.
	missing := func(pa policy.ProjectAccess) (policy.Access, bool) {
		for _, n := range needs {
			if !policy.Allowed(p, pa, n.Resource, n.Action) {
				return n, true
			}
		}
		return policy.Access{}, false
	}
	m, refused := missing(pa)
	if refused && pa.Exists && h.store.Sync(ctx) == nil {
		if pa, err = h.projectAccess(ctx, p, project); err != nil {
			return pa, err
		}
		m, refused = missing(pa)
	}
	switch {
	case !refused:
		return pa, nil
	case !policy.Sees(p, pa):
		return pa, projectNotFound(project)
	case p.IsAnonymous():
		return pa, errUnauthenticated
	}
	return pa, forbidden("%s cannot %s %s in project %s", p, m.Action, m.Resource, project)
}

// authorizeAdmin is authorize for what only a system administrator may do
// in a project (set its quota): others get 404 for a project they may not
// see, 403 for one they may.
func (h *Handler) authorizeAdmin(ctx context.Context, p policy.Principal, project string) (policy.ProjectAccess, error) {
	if p.IsAnonymous() {
		return policy.ProjectAccess{}, errUnauthenticated
	}
	pa, err := h.projectAccess(ctx, p, project)
	if err != nil {
		return pa, err
	}
	if !policy.Sees(p, pa) {
		return pa, projectNotFound(project)
	}
	if err := requireAdmin(p); err != nil {
		return pa, err
	}
	return pa, nil
}

// fail answers err: 401 with a challenge, 403, 400 for validation, 404,
// 409 for what exists or is refused by the state, 503 without quorum;
// anything else is a 500 whose cause is logged, not shown.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errUnauthenticated):
		challenge(w, err.Error())
	case errors.Is(err, errForbidden):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, policy.ErrInvalid), errors.Is(err, oci.ErrNameInvalid), errors.Is(err, oci.ErrTagInvalid),
		errors.Is(err, oci.ErrDigestInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, oci.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, policy.ErrExists), errors.Is(err, oci.ErrDenied), errors.Is(err, oci.ErrPreconditionFailed):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, oci.ErrUnavailable):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "the cluster cannot take this request now; retry")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away.
	default:
		h.logger.ErrorContext(r.Context(), "management request", "method", r.Method, "path", r.URL.Path,
			"error", err, "request_id", registry.RequestID(r.Context()))
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}
