package registry

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// AccessState is what access decisions read from the state machine: the
// accounts, and a project's existence, visibility and the caller's role.
// cmd passes a *cluster.Node.
type AccessState interface {
	// Authenticate checks a user's password or a robot's secret; a wrong
	// one is ok false with a nil error.
	Authenticate(ctx context.Context, name, secret string) (acct policy.Account, ok bool, err error)
	// LookupAccount returns account name as it is now (oci.ErrNotFound
	// when it is gone, disabled or expired).
	LookupAccount(ctx context.Context, name string) (policy.Account, error)
	// ProjectAccess returns what a decision about project needs, with the
	// role of user userName ("" for none) there. A project it does not
	// find it looks for again after catching up with the leader, as Sync
	// does: a project just created through another node counts.
	ProjectAccess(ctx context.Context, userName, project string) (policy.ProjectAccess, error)
	// Sync catches up with the leader, so that what another node just
	// wrote counts.
	Sync(ctx context.Context) error
}

// AuditSink takes the audit events that are not part of a change: failed
// logins. It does not block. cmd passes a *cluster.Node.
type AuditSink interface {
	RecordEvent(e policy.AuditEvent)
}

// AuthConfig configures NewAccessAuth: token auth and its token service.
type AuthConfig struct {
	// ExternalURL is the registry's URL as clients reach it
	// (https://registry.example.com); the token realm is
	// <ExternalURL>/service/token. Empty: the scheme and Host of each
	// request.
	ExternalURL string
	// Issuer is the tokens' iss, Service their aud and the challenge's
	// service.
	Issuer  string
	Service string
	// TokenTTL is an access token's lifetime (at most MaxTokenTTL).
	TokenTTL time.Duration
	// RefreshTTL is a refresh token's (docker login's) lifetime.
	RefreshTTL time.Duration
	// Leeway is the clock skew tolerated on exp, nbf and iat (at most
	// MaxTokenLeeway).
	Leeway time.Duration
	// AnonymousPull lets callers without credentials pull from public
	// projects (never from private ones).
	AnonymousPull bool
}

// DefaultAuthConfig returns the configuration of `berth serve` with no
// flags.
func DefaultAuthConfig() AuthConfig {
	return AuthConfig{
		Issuer:        "berth",
		Service:       "berth",
		TokenTTL:      5 * time.Minute,
		RefreshTTL:    30 * 24 * time.Hour,
		Leeway:        30 * time.Second,
		AnonymousPull: true,
	}
}

// maxServiceName bounds the issuer and service names.
const maxServiceName = 255

// Validate reports the first invalid field.
func (c AuthConfig) Validate() error {
	if c.ExternalURL != "" {
		u, err := url.Parse(c.ExternalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || !safeRealm(c.ExternalURL) {
			return fmt.Errorf("registry: external URL %q: want http(s)://host[:port][/path]", c.ExternalURL)
		}
	}
	for _, s := range []string{c.Issuer, c.Service} {
		if s == "" || len(s) > maxServiceName || !safeRealm(s) {
			return fmt.Errorf("registry: token issuer and service must be 1 to %d printable characters without quotes", maxServiceName)
		}
	}
	switch {
	case c.TokenTTL <= 0 || c.TokenTTL > MaxTokenTTL:
		return fmt.Errorf("registry: token lifetime %s: want more than 0 and at most %s", c.TokenTTL, MaxTokenTTL)
	case c.RefreshTTL <= 0:
		return fmt.Errorf("registry: refresh token lifetime %s must be positive", c.RefreshTTL)
	case c.Leeway < 0 || c.Leeway > MaxTokenLeeway:
		return fmt.Errorf("registry: token leeway %s: want 0 to %s", c.Leeway, MaxTokenLeeway)
	}
	return nil
}

// safeRealm reports whether s can go inside a quoted challenge parameter
// as it is: printable ASCII without quotes, backslashes or commas.
func safeRealm(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == ',' {
			return false
		}
	}
	return true
}

// Credential cache bounds (of both Authorizers): a successful password
// check is remembered this long, for at most this many credential pairs.
const (
	credentialCacheTTL  = 60 * time.Second
	credentialCacheSize = 1024
	// maxCredentialLength bounds user names and passwords we hash or check.
	maxCredentialLength = 1024
)

// Cache bounds of the access Authorizer.
const (
	// accountCacheTTL is how long a looked-up account is trusted: a
	// deleted or disabled account's tokens stop within it.
	accountCacheTTL  = 5 * time.Second
	accountCacheSize = 4096
)

// AccessAuth is the Authorizer of projects, roles and robots, with Docker
// token auth (see NewAccessAuth). It also serves the token service
// (TokenHandler) and filters the catalog (CatalogFilter).
type AccessAuth struct {
	cfg    AuthConfig
	state  AccessState
	audit  AuditSink
	tokens *tokens
	logger *slog.Logger
	now    func() time.Time

	credKey  []byte // HMAC key of the credentials cache, random per process
	creds    *ttlCache[[sha256.Size]byte, policy.Account]
	accounts *ttlCache[string, policy.Account]
}

var (
	_ Authorizer    = (*AccessAuth)(nil)
	_ CatalogFilter = (*AccessAuth)(nil)
)

// NewAccessAuth returns the Authorizer of projects, roles and robots.
//
// Every request is decided for the path's repository and action (pull for
// GET and HEAD, push for uploads and manifest PUTs, delete for DELETE):
//   - `Authorization: Bearer <token>`: a token from the token service,
//     verified (see tokens.verifyAccess), whose subject must still exist
//     and be usable, and whose scope must grant exactly this repository
//     and action. A token that does not is answered 401 with the scope
//     the request needs when its subject may have it (the client fetches
//     a new token), else 403 DENIED.
//   - HTTP basic auth of a user or robot: authenticated (successes cached
//     about a minute under an HMAC of the credentials) and decided by
//     policy.Allowed from the state.
//   - Nothing: pull from public projects when cfg.AnonymousPull, and the
//     401 Bearer challenge for everything else.
//
// A project that does not exist is 404 NAME_UNKNOWN for an authenticated
// caller, and the challenge for an anonymous one (which must not learn
// which private projects exist). logger may be nil.
func NewAccessAuth(cfg AuthConfig, state AccessState, keys TokenKeys, audit AuditSink, logger *slog.Logger) (*AccessAuth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if state == nil || keys == nil || audit == nil {
		return nil, errors.New("registry: access auth needs the state, the token keys and an audit sink")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.ExternalURL = strings.TrimSuffix(cfg.ExternalURL, "/")
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (Go ≥ 1.24)
	a := &AccessAuth{
		cfg:      cfg,
		state:    state,
		audit:    audit,
		logger:   logger.With(keyComponent, "auth"),
		now:      time.Now,
		credKey:  key,
		creds:    newTTLCache[[sha256.Size]byte, policy.Account](credentialCacheSize),
		accounts: newTTLCache[string, policy.Account](accountCacheSize),
	}
	a.tokens = newTokens(cfg, keys, func() time.Time { return a.now() })
	return a, nil
}

// Authorize implements Authorizer.
func (a *AccessAuth) Authorize(r *http.Request, need Access) (Identity, error) {
	ctx := r.Context()
	id, claims, err := a.identify(r, viaRegistry)
	if err != nil {
		return id, err
	}
	anonymous := id.Principal.IsAnonymous()
	if need == (Access{}) {
		// The API root answers a challenge to a caller without
		// credentials, so that docker sends its own (see DESIGN.md).
		if claims == nil && anonymous {
			return id, ErrUnauthorized
		}
		return id, nil
	}
	if claims == nil {
		return id, a.decide(ctx, id.Principal, need)
	}
	if claims.allows(need) {
		return id, nil
	}
	// The token does not grant it. Anonymous callers may log in; others
	// get a new token when their permissions allow it now.
	if anonymous {
		return id, errTokenScope
	}
	if err := a.decide(ctx, id.Principal, need); err != nil {
		if errors.Is(err, ErrDenied) {
			// As distribution answers a token without the scope: 401 with
			// error="insufficient_scope". A 403 on a HEAD (which has no
			// body to say DENIED) makes docker retry a refused push for a
			// minute; a 401 it does not retry.
			return id, errScopeDenied
		}
		return id, err
	}
	return id, errInsufficientScope
}

// errTokenScope: a valid token that does not grant what a request needs.
// Challenge answers it, and the errors that wrap it, with
// error="insufficient_scope".
var errTokenScope = fmt.Errorf("%w: the token does not grant this access", ErrUnauthorized)

// errScopeDenied: errTokenScope when the token's subject may not have the
// access: 401 with the insufficient-scope challenge and DENIED in the
// body, so clients say "denied".
var errScopeDenied = &apiError{
	code: codeDenied, status: http.StatusUnauthorized,
	message: "requested access to the resource is denied",
	err:     fmt.Errorf("%w, and its subject may not have it", errTokenScope),
}

// errInsufficientScope: errTokenScope when the token's subject may have
// the access.
var errInsufficientScope = fmt.Errorf("%w; fetch one that does", errTokenScope)

// Authenticate returns who made r, from its bearer token or basic
// credentials (the anonymous Identity without any), or an error wrapping
// ErrUnauthorized for credentials that are wrong or no longer valid. It
// decides nothing: the management API uses it and then decides from the
// state. Unlike Authorize it reads the account as the state holds it now
// (see viaAPI).
func (a *AccessAuth) Authenticate(r *http.Request) (Identity, error) {
	id, _, err := a.identify(r, viaAPI)
	return id, err
}

// via is where a request came in; it decides how fresh an account must be
// and how a failed login is recorded.
type via int

const (
	// viaRegistry: /v2/ and the token service. A looked-up account is
	// trusted for accountCacheTTL; a failed login is anonymous's.
	viaRegistry via = iota
	// viaAPI: the management API, where accounts change. Every request
	// reads its account now, so that a changed password, a deleted or
	// disabled account or a revoked admin flag counts at the next request;
	// a failed login is recorded under the name tried (`berth audit --user
	// NAME` finds it), with the detail "management API".
	viaAPI
)

// identify returns who made r and, for a bearer token, its claims.
func (a *AccessAuth) identify(r *http.Request, v via) (Identity, *accessClaims, error) {
	anon := Identity{Principal: policy.Anonymous}
	if tok, ok := bearerToken(r); ok {
		return a.bearer(r.Context(), tok, v)
	}
	user, password, ok := r.BasicAuth()
	if !ok || (user == "" && password == "") {
		// Another scheme, or empty basic credentials (containers/image
		// sends "Basic Og==" when it has none), is no credentials.
		return anon, nil, nil
	}
	acct, err := a.basic(r, user, password, v)
	if err != nil {
		return anon, nil, err
	}
	return Identity{Principal: acct.Principal}, nil, nil
}

// bearerToken returns the token of r's Authorization header when it is of
// the Bearer scheme.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// bearer verifies an access token and the account it names.
func (a *AccessAuth) bearer(ctx context.Context, raw string, v via) (Identity, *accessClaims, error) {
	anon := Identity{Principal: policy.Anonymous}
	c, err := a.tokens.verifyAccess(raw)
	if err != nil {
		a.logger.Debug("bearer token refused", keyError, err)
		return anon, nil, err
	}
	if c.Subject == "" {
		return anon, c, nil
	}
	acct, err := a.account(ctx, c.Subject, v)
	if err != nil {
		return anon, nil, err
	}
	if !issuedFor(acct, c.UID, c.Gen) {
		return anon, nil, fmt.Errorf("%w: account %s was re-created, or its credentials changed, after the token was issued", ErrUnauthorized, c.Subject)
	}
	return Identity{Principal: acct.Principal}, c, nil
}

// account returns account name as the state has it now, trusting a
// lookup for accountCacheTTL except via the API. A missing, disabled or
// expired account is ErrUnauthorized.
func (a *AccessAuth) account(ctx context.Context, name string, v via) (policy.Account, error) {
	now := a.now()
	if acct, ok := a.accounts.get(name, now); ok && v != viaAPI {
		return acct, nil
	}
	acct, err := a.state.LookupAccount(ctx, name)
	switch {
	case errors.Is(err, oci.ErrNotFound):
		return policy.Account{}, fmt.Errorf("%w: account %s no longer exists or is disabled", ErrUnauthorized, name)
	case err != nil:
		return policy.Account{}, fmt.Errorf("look up account %s: %w", name, err)
	}
	a.accounts.put(name, acct, now, now.Add(accountCacheTTL))
	return acct, nil
}

// basic authenticates a user or robot by password or secret. A success is
// cached for credentialCacheTTL under an HMAC of the credentials; a cached
// one still needs the account as it is now (account), with the same id
// and credential generation, so a deleted robot or a changed password
// stops working within accountCacheTTL (at once via the API). A failure is
// audited as login_failed.
func (a *AccessAuth) basic(r *http.Request, user, password string, v via) (policy.Account, error) {
	ctx := r.Context()
	if user == "" || len(user) > maxCredentialLength || len(password) > maxCredentialLength {
		a.loginFailed(r, user, v)
		return policy.Account{}, ErrUnauthorized
	}
	key := credentialKey(a.credKey, user, password)
	now := a.now()
	if cached, ok := a.creds.get(key, now); ok {
		cur, err := a.account(ctx, user, v)
		if err == nil && issuedFor(cur, cached.ID, cached.Gen) {
			return cur, nil
		}
		a.creds.drop(key)
	}
	acct, ok, err := a.state.Authenticate(ctx, user, password)
	if err != nil {
		return policy.Account{}, fmt.Errorf("authenticate %q: %w", user, err)
	}
	if !ok {
		a.loginFailed(r, user, v)
		return policy.Account{}, ErrUnauthorized
	}
	a.creds.put(key, acct, now, now.Add(credentialCacheTTL))
	a.accounts.put(user, acct, now, now.Add(accountCacheTTL))
	return acct, nil
}

// credentialKey is the cache key of a user and password: an HMAC-SHA-256
// under key, so that the cache never holds the password.
func credentialKey(key []byte, user, password string) [sha256.Size]byte {
	mac := hmac.New(sha256.New, key)
	// The user name cannot contain ':' in basic auth, so this is unambiguous.
	mac.Write([]byte(user))
	mac.Write([]byte{':'})
	mac.Write([]byte(password))
	var k [sha256.Size]byte
	copy(k[:], mac.Sum(nil))
	return k
}

// loginFailed records a failed login of name from r's client.
func (a *AccessAuth) loginFailed(r *http.Request, name string, v via) {
	e := policy.AuditEvent{
		Actor: policy.PrincipalAnonymous, Addr: clientIP(r), Op: policy.AuditLoginFailed,
		Resource: policy.AuditAccount, Target: name,
	}
	if v == viaAPI {
		e.Actor, e.Detail = name, "management API"
	}
	a.audit.RecordEvent(e)
}

// verdict is a decision from the state.
type verdict int

const (
	denied verdict = iota
	granted
	noProject
	hidden // denied, in a project the caller may not know of
)

// permission is the (resource, action) of the access model that a
// registry action needs.
func permission(act Action) (policy.Resource, policy.Action, bool) {
	switch act {
	case ActionPull:
		return policy.ResRepository, policy.ActPull, true
	case ActionPush:
		return policy.ResRepository, policy.ActPush, true
	case ActionDelete:
		return policy.ResArtifact, policy.ActDelete, true
	}
	return "", "", false
}

// userOf is the name ProjectAccess looks a role up for: a user's, none for
// robots (whose permissions are their own) and anonymous callers.
func userOf(p policy.Principal) string {
	if p.Kind == policy.PrincipalUser {
		return p.Name
	}
	return ""
}

// projects memoizes ProjectAccess for one decision or one token request.
type projects struct {
	state AccessState
	user  string
	seen  map[string]policy.ProjectAccess
}

func (a *AccessAuth) projectsFor(p policy.Principal) *projects {
	return &projects{state: a.state, user: userOf(p), seen: map[string]policy.ProjectAccess{}}
}

func (ps *projects) get(ctx context.Context, project string) (policy.ProjectAccess, error) {
	if pa, ok := ps.seen[project]; ok {
		return pa, nil
	}
	pa, err := ps.state.ProjectAccess(ctx, ps.user, project)
	if err != nil {
		return pa, fmt.Errorf("access to project %s: %w", project, err)
	}
	ps.seen[project] = pa
	return pa, nil
}

// forget drops what was read, after a Sync.
func (ps *projects) forget() { clear(ps.seen) }

// verdict decides whether p may do act on repo, from the state.
func (a *AccessAuth) verdict(ctx context.Context, ps *projects, p policy.Principal, repo string, act Action) (verdict, error) {
	project, ok := policy.ProjectOf(repo)
	if !ok {
		return noProject, nil
	}
	res, pact, ok := permission(act)
	if !ok {
		return denied, nil
	}
	pa, err := ps.get(ctx, project)
	if err != nil {
		return denied, err
	}
	switch {
	case !pa.Exists:
		return noProject, nil
	case p.IsAnonymous() && !a.cfg.AnonymousPull:
		return denied, nil
	case policy.Allowed(p, pa, res, pact):
		return granted, nil
	case !policy.Sees(p, pa):
		return hidden, nil
	}
	return denied, nil
}

// decide answers need for p from the state (basic auth, anonymous
// callers, and tokens that lack the scope). An authenticated caller that
// would be refused in a project that exists is decided again after
// catching up with the leader: a membership just made through another node
// counts at once. (ProjectAccess has caught up already on a missing
// project.)
func (a *AccessAuth) decide(ctx context.Context, p policy.Principal, need Access) error {
	anonymous := p.IsAnonymous()
	if need.Action == ActionCatalog {
		if anonymous {
			return ErrUnauthorized
		}
		return nil
	}
	ps := a.projectsFor(p)
	v, err := a.verdict(ctx, ps, p, need.Repo, need.Action)
	if err == nil && (v == denied || v == hidden) && !anonymous {
		// A node that cannot catch up decides from what it has.
		if serr := a.state.Sync(ctx); serr == nil {
			ps.forget()
			v, err = a.verdict(ctx, ps, p, need.Repo, need.Action)
		} else {
			a.logger.Debug("decide without catching up", keyError, serr)
		}
	}
	switch {
	case err != nil:
		return err
	case v == granted:
		return nil
	case anonymous:
		return ErrUnauthorized
	case v == noProject && (p.Admin || !strings.Contains(need.Repo, "/")):
		return noProjectError(need.Repo)
	case v == noProject || v == hidden:
		// A project that does not exist and a private one the caller may
		// not see answer alike: the caller must not learn which private
		// projects exist. An administrator sees every project, so it is
		// told exactly.
		project, _ := policy.ProjectOf(need.Repo)
		return &apiError{code: codeDenied, err: ErrDenied,
			message: fmt.Sprintf("project %s does not exist, or you have no access to it", project)}
	}
	return ErrDenied
}

// noProjectError is the answer to an authenticated caller about a
// repository outside any existing project: 404 NAME_UNKNOWN that says what
// to do.
func noProjectError(repo string) error {
	project, ok := policy.ProjectOf(repo)
	msg := fmt.Sprintf("project %s does not exist; create it first", project)
	if !ok {
		msg = fmt.Sprintf("repository %s is in no project; name it <project>/%s", repo, repo)
	}
	return &apiError{code: codeNameUnknown, message: msg, err: policy.ErrNoProject}
}

// Challenge implements Authorizer: the Bearer challenge of the token
// service, with the scope need asks for (none for the API root). A request
// that sent a token learns from err, Authorize's answer, whether the token
// was invalid or only insufficient; it is not verified again.
func (a *AccessAuth) Challenge(r *http.Request, need Access, err error) string {
	var b strings.Builder
	fmt.Fprintf(&b, `Bearer realm="%s",service="%s"`, a.realm(r), a.cfg.Service)
	if s := scopeOf(need); s != "" {
		fmt.Fprintf(&b, `,scope="%s"`, s)
	}
	switch {
	case errors.Is(err, errTokenScope):
		b.WriteString(`,error="insufficient_scope"`)
	default:
		if _, ok := bearerToken(r); ok {
			b.WriteString(`,error="invalid_token"`)
		}
	}
	return b.String()
}

// realm is the token service's URL: under ExternalURL, else under the
// request's scheme and Host (a Host that could break the header out of
// its quotes becomes "localhost").
func (a *AccessAuth) realm(r *http.Request) string {
	if a.cfg.ExternalURL != "" {
		return a.cfg.ExternalURL + TokenPath
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" || len(host) > 255 || !safeRealm(host) || strings.ContainsAny(host, "/?#@") {
		host = "localhost"
	}
	return scheme + "://" + host + TokenPath
}

// TokenPath is where cmd mounts TokenHandler.
const TokenPath = "/service/token"

// scopeOf is the token scope need asks for, as the challenge names it. A
// push asks for pull too, as docker does.
func scopeOf(need Access) string {
	switch need.Action {
	case ActionCatalog:
		return scopeRegistry + ":" + catalogName + ":" + actionAll
	case ActionPull, ActionDelete:
		return scopeRepository + ":" + need.Repo + ":" + string(need.Action)
	case ActionPush:
		return scopeRepository + ":" + need.Repo + ":pull,push"
	}
	return ""
}

// Visible implements CatalogFilter: a system administrator sees every
// repository; anyone else those of the projects it may pull from.
func (a *AccessAuth) Visible(ctx context.Context, id Identity) func(string) (bool, error) {
	p := id.Principal
	if p.Kind == policy.PrincipalUser && p.Admin {
		return func(string) (bool, error) { return true, nil }
	}
	ps := a.projectsFor(p)
	return func(repo string) (bool, error) {
		v, err := a.verdict(ctx, ps, p, repo, ActionPull)
		return v == granted, err
	}
}
