package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The token service (/service/token) of the distribution token
// specification: GET with basic auth or anonymous, and the OAuth2 POST form
// docker uses (password and refresh_token grants). It grants the
// intersection of the scopes asked for and the caller's permissions.

// Bounds of a token request.
const (
	maxTokenForm   = 16 << 10 // POST body
	maxTokenQuery  = 16 << 10 // GET query
	maxScopes      = 16       // scopes in one request
	maxScopeLength = 512      // one scope
	maxClientID    = 255
)

// tokenResponse is the token service's answer. token and access_token are
// the same (the spec's and OAuth2's names).
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// tokenErrorBody is an error of the token service: the OCI envelope docker
// prints, and OAuth2's error fields for OAuth2 clients.
type tokenErrorBody struct {
	Errors      []errorEntry `json:"errors"`
	Error       string       `json:"error"`
	Description string       `json:"error_description"`
}

// OAuth2 error codes (RFC 6749, 5.2).
const (
	oauthInvalidRequest = "invalid_request"
	oauthInvalidGrant   = "invalid_grant"
	oauthUnsupported    = "unsupported_grant_type"
	oauthInvalidScope   = "invalid_scope"
	oauthServerError    = "server_error"
)

// scope is one parsed scope of a token request, its actions known and
// in order.
type scope struct {
	typ, name string
	actions   []string
}

// TokenHandler returns the token service; cmd mounts it at TokenPath.
func (a *AccessAuth) TokenHandler() http.Handler { return http.HandlerFunc(a.serveToken) }

func (a *AccessAuth) serveToken(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	switch r.Method {
	case http.MethodGet:
		a.tokenGet(w, r)
	case http.MethodPost:
		a.tokenPost(w, r)
	default:
		h.Set("Allow", "GET, POST")
		a.tokenError(w, http.StatusMethodNotAllowed, oauthInvalidRequest, "use GET or POST")
	}
}

// tokenGet answers GET ?service=&scope=…&offline_token=, with basic auth
// or without credentials.
func (a *AccessAuth) tokenGet(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.RawQuery) > maxTokenQuery {
		a.tokenError(w, http.StatusBadRequest, oauthInvalidRequest, "query too long")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		a.tokenError(w, http.StatusBadRequest, oauthInvalidRequest, "malformed query")
		return
	}
	scopes, ok := a.tokenParams(w, r, q)
	if !ok {
		return
	}
	var acct *policy.Account
	if user, password, ok := r.BasicAuth(); ok && (user != "" || password != "") {
		got, err := a.basic(r, user, password, viaRegistry)
		if err != nil {
			a.loginError(w, r, err, "invalid username or password")
			return
		}
		acct = &got
	}
	a.answerToken(w, r, acct, scopes, q.Get("offline_token") == "true", "")
}

// tokenPost answers the OAuth2 form: grant_type password (username,
// password, access_type=offline for a refresh token) or refresh_token.
func (a *AccessAuth) tokenPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
	if err := r.ParseForm(); err != nil {
		status := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		a.tokenError(w, status, oauthInvalidRequest, "malformed or too large form")
		return
	}
	f := r.PostForm
	scopes, ok := a.tokenParams(w, r, f)
	if !ok {
		return
	}
	var acct policy.Account
	refresh := ""
	switch f.Get("grant_type") {
	case "password":
		user, password := f.Get("username"), f.Get("password")
		if user == "" {
			a.tokenError(w, http.StatusBadRequest, oauthInvalidRequest, "the password grant needs a username")
			return
		}
		var err error
		if acct, err = a.basic(r, user, password, viaRegistry); err != nil {
			a.loginError(w, r, err, "invalid username or password")
			return
		}
	case "refresh_token":
		var err error
		refresh = f.Get("refresh_token")
		if acct, err = a.refresh(r, refresh); err != nil {
			a.loginError(w, r, err, "invalid or expired refresh token; log in again")
			return
		}
	default:
		a.tokenError(w, http.StatusBadRequest, oauthUnsupported, "grant_type must be password or refresh_token")
		return
	}
	a.answerToken(w, r, &acct, scopes, f.Get("access_type") == "offline", refresh)
}

// tokenParams checks the parameters both methods share — service,
// client_id and the scopes — and answers a bad request itself.
func (a *AccessAuth) tokenParams(w http.ResponseWriter, r *http.Request, v url.Values) ([]scope, bool) {
	if s := v.Get("service"); s != "" && s != a.cfg.Service {
		a.tokenError(w, http.StatusBadRequest, oauthInvalidRequest, fmt.Sprintf("this token service issues tokens for service %q", a.cfg.Service))
		return nil, false
	}
	if len(v.Get("client_id")) > maxClientID {
		a.tokenError(w, http.StatusBadRequest, oauthInvalidRequest, "client_id too long")
		return nil, false
	}
	scopes, err := parseScopes(v["scope"])
	if err != nil {
		a.tokenError(w, http.StatusBadRequest, oauthInvalidScope, err.Error())
		return nil, false
	}
	return scopes, true
}

// refresh checks a refresh token: its signature and claims, and that its
// subject is still the account it was issued for, with the same
// credentials.
func (a *AccessAuth) refresh(r *http.Request, raw string) (policy.Account, error) {
	c, err := a.tokens.verifyRefresh(raw)
	if err != nil {
		a.loginFailed(r, "", viaRegistry)
		return policy.Account{}, err
	}
	acct, err := a.account(r.Context(), c.Subject, viaRegistry)
	if err != nil {
		if errors.Is(err, ErrUnauthorized) {
			a.loginFailed(r, c.Subject, viaRegistry)
		}
		return policy.Account{}, err
	}
	if !issuedFor(acct, c.UID, c.Gen) {
		a.loginFailed(r, c.Subject, viaRegistry)
		return policy.Account{}, fmt.Errorf("%w: account %s was re-created, or its credentials changed, after the refresh token was issued", ErrUnauthorized, c.Subject)
	}
	return acct, nil
}

// answerToken grants what acct (nil: anonymous) may have of scopes and
// answers the token, with a refresh token when offline (refresh when
// the client holds one already).
func (a *AccessAuth) answerToken(w http.ResponseWriter, r *http.Request, acct *policy.Account, scopes []scope, offline bool, refresh string) {
	ctx := r.Context()
	p := policy.Anonymous
	if acct != nil {
		p = acct.Principal
	}
	access, err := a.grant(ctx, p, scopes)
	if err != nil {
		a.tokenServerError(w, r, err)
		return
	}
	tok, issued, err := a.tokens.issueAccess(ctx, acct, access)
	if err != nil {
		a.tokenServerError(w, r, err)
		return
	}
	resp := tokenResponse{
		Token:       tok,
		AccessToken: tok,
		ExpiresIn:   int(a.cfg.TokenTTL / time.Second),
		IssuedAt:    issued.UTC().Format(time.RFC3339),
	}
	if offline && acct != nil {
		if refresh == "" {
			if refresh, err = a.tokens.issueRefresh(ctx, *acct); err != nil {
				a.tokenServerError(w, r, err)
				return
			}
		}
		resp.RefreshToken = refresh
	}
	writeJSON(w, http.StatusOK, resp)
}

// grant returns what p may have of scopes. When it would trim an action of
// an authenticated caller in a project that exists, it catches up with the
// leader once and decides again: a membership just made through another
// node counts at once. (Anonymous callers are not worth a round trip to
// the leader; ProjectAccess catches up on a missing project by itself.)
func (a *AccessAuth) grant(ctx context.Context, p policy.Principal, scopes []scope) ([]tokenAccess, error) {
	ps := a.projectsFor(p)
	access, trimmed, err := a.grantOnce(ctx, ps, p, scopes)
	if err != nil || !trimmed || p.IsAnonymous() {
		return access, err
	}
	if err := a.state.Sync(ctx); err != nil {
		a.logger.Debug("grant without catching up", keyError, err)
		return access, nil
	}
	ps.forget()
	access, _, err = a.grantOnce(ctx, ps, p, scopes)
	return access, err
}

func (a *AccessAuth) grantOnce(ctx context.Context, ps *projects, p policy.Principal, scopes []scope) (access []tokenAccess, trimmed bool, err error) {
	access = []tokenAccess{}
	for _, s := range scopes {
		switch s.typ {
		case scopeRegistry:
			// Only the catalog, only for someone; what it lists is
			// filtered per caller.
			if !p.IsAnonymous() {
				access = append(access, tokenAccess{Type: scopeRegistry, Name: catalogName, Actions: []string{actionAll}})
			}
		case scopeRepository:
			var got []string
			for _, act := range s.actions {
				v, err := a.verdict(ctx, ps, p, s.name, Action(act))
				if err != nil {
					return nil, false, err
				}
				switch v {
				case granted:
					got = append(got, act)
				case denied, hidden:
					trimmed = true
				}
			}
			if len(got) > 0 {
				access = append(access, tokenAccess{Type: scopeRepository, Name: s.name, Actions: got})
			}
		}
	}
	return access, trimmed, nil
}

// repositoryActions are the actions a repository scope may ask for, in
// the order tokens list them; "*" is all of them.
var repositoryActions = []string{string(ActionPull), string(ActionPush), string(ActionDelete)}

// parseScopes parses the scope parameters — each may hold several scopes
// separated by spaces — into at most maxScopes scopes, one per resource.
// Repository scopes keep the actions berth knows ("*" expands to pull,
// push and delete); the registry scope only registry:catalog:*. Other
// types and actions are dropped (never granted). A malformed scope or an
// invalid repository name is an error.
func parseScopes(values []string) ([]scope, error) {
	var out []scope
	index := map[[2]string]int{}
	n := 0
	for _, v := range values {
		for _, raw := range strings.Fields(v) {
			if n++; n > maxScopes {
				return nil, fmt.Errorf("at most %d scopes in one request", maxScopes)
			}
			if len(raw) > maxScopeLength {
				return nil, fmt.Errorf("a scope may be at most %d bytes", maxScopeLength)
			}
			typ, rest, ok1 := strings.Cut(raw, ":")
			i := strings.LastIndexByte(rest, ':')
			if !ok1 || i < 0 {
				return nil, fmt.Errorf("scope %q: want type:name:actions", raw)
			}
			name, actions := rest[:i], strings.Split(rest[i+1:], ",")
			if c := strings.IndexByte(typ, '('); c >= 0 && strings.HasSuffix(typ, ")") {
				typ = typ[:c] // a resource class, as in repository(plugin)
			}
			var known []string
			switch typ {
			case scopeRepository:
				if err := oci.ValidateName(name); err != nil {
					return nil, fmt.Errorf("scope %q: invalid repository name", raw)
				}
				for _, act := range repositoryActions {
					if slices.Contains(actions, act) || slices.Contains(actions, actionAll) {
						known = append(known, act)
					}
				}
			case scopeRegistry:
				if name == catalogName && slices.Contains(actions, actionAll) {
					known = []string{actionAll}
				}
			}
			if len(known) == 0 {
				continue
			}
			k := [2]string{typ, name}
			if j, ok := index[k]; ok {
				merged := out[j].actions
				for _, act := range known {
					if !slices.Contains(merged, act) {
						merged = append(merged, act)
					}
				}
				// Keep the canonical order.
				slices.SortFunc(merged, func(x, y string) int {
					return slices.Index(repositoryActions, x) - slices.Index(repositoryActions, y)
				})
				out[j].actions = merged
				continue
			}
			index[k] = len(out)
			out = append(out, scope{typ: typ, name: name, actions: known})
		}
	}
	return out, nil
}

// loginError answers a failed authentication: 401 with msg for wrong
// credentials, the state's error otherwise.
func (a *AccessAuth) loginError(w http.ResponseWriter, r *http.Request, err error, msg string) {
	if !errors.Is(err, ErrUnauthorized) {
		a.tokenServerError(w, r, err)
		return
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Basic realm="%s"`, a.cfg.Service))
	a.tokenError(w, http.StatusUnauthorized, oauthInvalidGrant, msg)
}

// tokenServerError answers an error of the state or the signer: 503 when a
// retry may cure it, else 500; the client never sees its text.
func (a *AccessAuth) tokenServerError(w http.ResponseWriter, r *http.Request, err error) {
	code, status := classify(err)
	log := a.logger
	if id := RequestID(r.Context()); id != "" {
		log = log.With(keyRequestID, id)
	}
	if code == codeUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		log.Warn("token service: state unavailable", keyError, err)
		a.tokenError(w, status, oauthServerError, errorTable[codeUnavailable].message)
		return
	}
	log.Error("token service", keyError, err)
	a.tokenError(w, http.StatusInternalServerError, oauthServerError, errorTable[codeUnknown].message)
}

// tokenError writes an error of the token service.
func (a *AccessAuth) tokenError(w http.ResponseWriter, status int, oauth, msg string) {
	code := codeUnsupported
	switch status {
	case http.StatusUnauthorized:
		code = codeUnauthorized
	case http.StatusRequestEntityTooLarge:
		code = codeSizeInvalid
	case http.StatusServiceUnavailable:
		code = codeUnavailable
	case http.StatusInternalServerError:
		code = codeUnknown
	}
	body, _ := json.Marshal(tokenErrorBody{
		Errors:      []errorEntry{{Code: code, Message: msg}},
		Error:       oauth,
		Description: msg,
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
