package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The token service client. `berth login` trades a password for a refresh
// token at <server>/service/token with the OAuth2 password grant docker
// uses; every later command trades the saved refresh token for a
// short-lived access token (the refresh_token grant), keeps it in memory
// for its run, and sends it as Bearer. The password is never saved.

const (
	tokenPath     = "/service/token"
	tokenService  = "berth"
	tokenClientID = "berth-cli"
	// tokenMargin: an access token is renewed this long before it
	// expires, so that it does not expire on its way to the server.
	tokenMargin = 10 * time.Second
	// defaultTokenLifetime is the lifetime of an access token whose answer
	// has no expires_in (the token specification's default).
	defaultTokenLifetime = 60 * time.Second
)

// errLoginExpired: the token service refused the saved refresh token.
var errLoginExpired = errors.New("the saved login has expired or was revoked")

// tokenResponse is the token service's answer, as the distribution token
// specification and its OAuth2 form define it.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	Token        string `json:"token"` // the same, for docker's older clients
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token"`
}

// access returns the access token of r.
func (r tokenResponse) access() string {
	if r.AccessToken != "" {
		return r.AccessToken
	}
	return r.Token
}

// tokenError is a refusal of the token service.
type tokenError struct {
	Status int // HTTP status
	Msg    string
}

func (e *tokenError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
}

// refused reports whether the service refused the credentials (rather than
// failing): 401, or the OAuth2 400 invalid_grant.
func (e *tokenError) refused() bool {
	return e.Status == http.StatusUnauthorized ||
		(e.Status == http.StatusBadRequest && strings.Contains(e.Msg, "invalid_grant"))
}

// requestToken posts form to server's token service.
func requestToken(ctx context.Context, server string, form url.Values) (tokenResponse, error) {
	base, err := serverURL(server)
	if err != nil {
		return tokenResponse{}, err
	}
	u := base.JoinPath(tokenPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return tokenResponse{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, b, err := exchange(req)
	if err != nil {
		return tokenResponse{}, err
	}
	if resp.StatusCode/100 != 2 {
		return tokenResponse{}, &tokenError{Status: resp.StatusCode, Msg: errorMessage(b)}
	}
	var tr tokenResponse
	if err := json.Unmarshal(b, &tr); err != nil {
		return tokenResponse{}, fmt.Errorf("POST %s: decode answer: %w", u.Redacted(), err)
	}
	if tr.access() == "" {
		return tokenResponse{}, fmt.Errorf("POST %s: the answer holds no access token", u.Redacted())
	}
	return tr, nil
}

// passwordGrant logs user in at server and returns the answer, which
// carries a refresh token (access_type=offline).
func passwordGrant(ctx context.Context, server, user, password string) (tokenResponse, error) {
	tr, err := requestToken(ctx, server, url.Values{
		"grant_type":  {"password"},
		"username":    {user},
		"password":    {password},
		"service":     {tokenService},
		"client_id":   {tokenClientID},
		"access_type": {"offline"},
	})
	var te *tokenError
	switch {
	case errors.As(err, &te) && te.refused():
		return tr, fmt.Errorf("user %s or its password refused: %s", user, te.Msg)
	case errors.As(err, &te) && te.Status == http.StatusNotFound:
		return tr, fmt.Errorf("%s has no token service at %s (a berth from before token auth?)", server, tokenPath)
	case err != nil:
		return tr, err
	case tr.RefreshToken == "":
		return tr, fmt.Errorf("the token service of %s gave no refresh token", server)
	}
	return tr, nil
}

// tokenSource hands out access tokens for one refresh token, asking the
// token service only when the one it holds is about to expire. It is safe
// for concurrent use.
type tokenSource struct {
	server, user string
	now          func() time.Time
	// keep, when set, saves a refresh token the service rotated.
	keep func(refresh string) error

	mu      sync.Mutex
	refresh string
	access  string
	expires time.Time
}

func newTokenSource(server, user, refresh string) *tokenSource {
	return &tokenSource{server: server, user: user, refresh: refresh, now: time.Now}
}

// token returns an access token valid for at least tokenMargin.
func (s *tokenSource) token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.access != "" && s.now().Before(s.expires.Add(-tokenMargin)) {
		return s.access, nil
	}
	start := s.now()
	tr, err := requestToken(ctx, s.server, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {s.refresh},
		"service":       {tokenService},
		"client_id":     {tokenClientID},
	})
	var te *tokenError
	if errors.As(err, &te) && te.refused() {
		return "", s.expired(te.Msg)
	}
	if err != nil {
		return "", fmt.Errorf("get an access token: %w", err)
	}
	// The lifetime counts from when it was asked for, on this clock: the
	// server's issued_at may be on a clock that is off.
	life := time.Duration(tr.ExpiresIn) * time.Second
	if life <= 0 {
		life = defaultTokenLifetime
	}
	s.access, s.expires = tr.access(), start.Add(life)
	if tr.RefreshToken != "" && tr.RefreshToken != s.refresh {
		s.refresh = tr.RefreshToken
		if s.keep != nil {
			// Best effort: the old refresh token may still work, and a
			// login that cannot be saved says so at the next run.
			_ = s.keep(tr.RefreshToken)
		}
	}
	return s.access, nil
}

// forget drops access if it is the token held, so that the next call asks
// for a new one (the server refused it before its time).
func (s *tokenSource) forget(access string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.access == access {
		s.access = ""
	}
}

// expired is the error of a refused login, telling how to log in again.
func (s *tokenSource) expired(why string) error {
	msg := fmt.Sprintf("%s at %s", s.user, s.server)
	if why != "" {
		msg += " (" + why + ")"
	}
	return fmt.Errorf("%s: %w: log in again with `berth login %s -u %s`", msg, errLoginExpired, s.server, s.user)
}

// errorMessage is the message of an error answer: the API's
// {"error": "..."}, OAuth2's {"error", "error_description"}, the
// registry's {"errors": [{"message"}]}, or the body's text.
func errorMessage(b []byte) string {
	var e struct {
		Error       any    `json:"error"`
		Description string `json:"error_description"`
		Errors      []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &e) == nil {
		var parts []string
		if s, ok := e.Error.(string); ok && s != "" {
			parts = append(parts, s)
		}
		if e.Description != "" {
			parts = append(parts, e.Description)
		}
		for _, x := range e.Errors {
			switch {
			case x.Message != "":
				parts = append(parts, x.Message)
			case x.Code != "":
				parts = append(parts, x.Code)
			}
		}
		if len(parts) > 0 {
			return strings.Join(parts, ": ")
		}
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 512 {
		msg = msg[:512] + "…"
	}
	return msg
}
