package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// forge signs claims with method and key under kid ("" for no kid).
func forge(t *testing.T, method jwt.SigningMethod, key any, kid any, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("forge %s token: %v", method.Alg(), err)
	}
	return s
}

// validClaims are the claims of a good token of dev (account id uid)
// that may pull own/img, issued at now.
func validClaims(now time.Time, uid uint64) *accessClaims {
	return &accessClaims{
		UID: uid,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    "berth",
			Subject:   "dev",
			Audience:  jwt.ClaimStrings{"berth"},
			ExpiresAt: jwt.NewNumericDate(now.Add(2 * time.Minute)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        "forged",
		},
		Access: []tokenAccess{{Type: scopeRepository, Name: "own/img", Actions: []string{"pull"}}},
	}
}

// testTokenAttacks: every forged, tampered, misdirected or stale token is
// refused with 401 and error="invalid_token", while a token built the same
// way with the cluster's key and good claims is accepted (so each refusal
// is for the reason its case names).
func testTokenAttacks(t *testing.T, tr *testRegistry, _ fixture) {
	ctx := t.Context()
	kid, priv, _, err := tr.node.SigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	dev, err := tr.node.LookupAccount(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	now := tr.clock.now()
	validClaims := func(now time.Time) *accessClaims { return validClaims(now, dev.ID) }
	edit := func(fn func(c *accessClaims)) *accessClaims {
		c := validClaims(now)
		fn(c)
		return c
	}
	const path = "/v2/own/img/manifests/v1"
	get := func(tok string) *response { return tr.do(t, http.MethodGet, path, nil, bearer(tok)) }

	good := forge(t, jwt.SigningMethodEdDSA, priv, kid, validClaims(now))
	wantStatus(t, get(good), http.StatusOK)
	// Clock skew within the leeway is tolerated.
	wantStatus(t, get(forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(-10 * time.Second))
		c.IssuedAt = jwt.NewNumericDate(now.Add(-time.Minute))
		c.NotBefore = c.IssuedAt
	}))), http.StatusOK)
	wantStatus(t, get(forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) {
		c.NotBefore = jwt.NewNumericDate(now.Add(10 * time.Second))
		c.IssuedAt = c.NotBefore
	}))), http.StatusOK)

	refresh := func() string {
		_, tok := tr.postToken(t, url.Values{"grant_type": {"password"}, "username": {"dev"}, "password": {passwordOf("dev")},
			"access_type": {"offline"}, "client_id": {"test"}, "service": {"berth"}})
		if tok.RefreshToken == "" {
			t.Fatal("no refresh token")
		}
		return tok.RefreshToken
	}()
	parts := strings.Split(good, ".")
	tamperedSig := []byte(parts[2])
	// Still base64url, another signature.
	if tamperedSig[10] == 'A' {
		tamperedSig[10] = 'B'
	} else {
		tamperedSig[10] = 'A'
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	payload = bytes.Replace(payload, []byte(`"sub":"dev"`), []byte(`"sub":"root"`), 1)

	attacks := []struct {
		name  string
		token string
	}{
		{"alg none", forge(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, validClaims(now))},
		{"HS256 keyed with the public key", forge(t, jwt.SigningMethodHS256, []byte(pub), kid, validClaims(now))},
		{"HS256 keyed with the public key's PEM", forge(t, jwt.SigningMethodHS256, pubPEM, kid, validClaims(now))},
		{"unknown kid", forge(t, jwt.SigningMethodEdDSA, other, "0123456789abcdef", validClaims(now))},
		{"known kid, other key", forge(t, jwt.SigningMethodEdDSA, other, kid, validClaims(now))},
		{"no kid", forge(t, jwt.SigningMethodEdDSA, priv, "", validClaims(now))},
		{"kid not a string", forge(t, jwt.SigningMethodEdDSA, priv, 7, validClaims(now))},
		{"wrong iss", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.Issuer = "evil" }))},
		{"no iss", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.Issuer = "" }))},
		{"wrong aud", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.Audience = jwt.ClaimStrings{"other"} }))},
		{"no aud", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.Audience = nil }))},
		{"refresh audience", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.Audience = jwt.ClaimStrings{refreshAudience("berth")} }))},
		{"refresh token as access token", refresh},
		{"expired beyond the leeway", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) {
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-MaxTokenLeeway - 5*time.Second))
			c.IssuedAt = jwt.NewNumericDate(now.Add(-time.Minute))
			c.NotBefore = c.IssuedAt
		}))},
		{"no exp", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.ExpiresAt = nil }))},
		{"nbf beyond the leeway", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) {
			c.NotBefore = jwt.NewNumericDate(now.Add(MaxTokenLeeway + 5*time.Second))
		}))},
		{"no nbf", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.NotBefore = nil }))},
		{"iat in the future", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(MaxTokenLeeway + 5*time.Second))
		}))},
		{"lives longer than an access token may", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) {
			c.ExpiresAt = jwt.NewNumericDate(now.Add(time.Hour))
		}))},
		{"tampered signature", parts[0] + "." + parts[1] + "." + string(tamperedSig)},
		{"tampered claims", parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]},
		{"unknown subject", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.Subject = "ghost" }))},
		{"older credentials", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.Gen = 7 }))},
		{"another account of the same name", forge(t, jwt.SigningMethodEdDSA, priv, kid, edit(func(c *accessClaims) { c.UID += 1000 }))},
		{"not a JWT", "not-a-token"},
		{"too long", strings.Repeat("a", maxTokenLength+1)},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			resp := get(a.token)
			wantError(t, resp, http.StatusUnauthorized, codeUnauthorized)
			if h := resp.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer ") || !strings.Contains(h, `error="invalid_token"`) {
				t.Fatalf("WWW-Authenticate = %q", h)
			}
		})
	}
}

// testTokenScopes: a valid token is checked against every request's
// repository and action — a token for another repository or action is a
// new challenge (error="insufficient_scope") when its subject may have
// that access, 403 when it may not — and a mount's source needs pull.
func testTokenScopes(t *testing.T, tr *testRegistry, f fixture) {
	devTok := tr.mustToken(t, f.asAccount("dev"), "repository:own/img:pull").Token
	guestTok := tr.mustToken(t, f.asAccount("guest"), "repository:own/img:pull").Token
	content := []byte("scoped blob")
	upload := "/v2/own/img/blobs/uploads/?digest=" + oci.DigestOf(content).String()

	insufficient := func(resp *response, scope string) {
		t.Helper()
		wantChallenge(t, tr, resp, scope)
		if h := resp.header.Get("WWW-Authenticate"); !strings.HasSuffix(h, `,error="insufficient_scope"`) {
			t.Fatalf("WWW-Authenticate = %q", h)
		}
	}
	// Another repository in the same project, which dev may pull.
	insufficient(tr.do(t, http.MethodGet, "/v2/own/other/manifests/v1", nil, bearer(devTok)), "repository:own/other:pull")
	// Another action that dev may do.
	insufficient(tr.do(t, http.MethodPost, upload, content, bearer(devTok)), "repository:own/img:pull,push")
	// What its subject may not do: 401 too (as distribution answers), with
	// DENIED in the body; docker retries neither.
	for _, resp := range []*response{
		tr.do(t, http.MethodGet, "/v2/foreign/img/manifests/v1", nil, bearer(devTok)),
		tr.do(t, http.MethodHead, "/v2/foreign/img/manifests/v1", nil, bearer(devTok)),
		tr.do(t, http.MethodPost, upload, content, bearer(guestTok)),
		tr.do(t, http.MethodDelete, "/v2/own/img/manifests/v1", nil, bearer(devTok)),
	} {
		if resp.status != http.StatusUnauthorized || !strings.HasSuffix(resp.header.Get("WWW-Authenticate"), `,error="insufficient_scope"`) {
			t.Fatalf("refused with a valid token: %d %q", resp.status, resp.header.Get("WWW-Authenticate"))
		}
	}
	wantError(t, tr.do(t, http.MethodGet, "/v2/foreign/img/manifests/v1", nil, bearer(devTok)), http.StatusUnauthorized, codeDenied)
	// A token with the catalog scope grants no repository.
	catTok := tr.mustToken(t, f.asAccount("dev"), "registry:catalog:*").Token
	insufficient(tr.do(t, http.MethodGet, "/v2/own/img/manifests/v1", nil, bearer(catTok)), "repository:own/img:pull")
	// The right token works, and the root accepts any valid token.
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/own/img/manifests/v1", nil, bearer(devTok)), http.StatusOK)
	wantStatus(t, tr.do(t, http.MethodGet, "/v2/", nil, bearer(catTok)), http.StatusOK)

	// A mount: dev may pull pub/img but not foreign/img. The token service
	// grants the sources it may pull; the mount from foreign becomes an
	// upload session.
	layerOf := func(repo string) string {
		var m manifestJSON
		resp := tr.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v1", nil)
		wantStatus(t, resp, http.StatusOK)
		if err := json.Unmarshal(resp.body, &m); err != nil || len(m.Layers) == 0 {
			t.Fatalf("manifest of %s: %s", repo, resp.body)
		}
		return m.Layers[0].Digest.String()
	}
	pubLayer, foreignLayer := layerOf("pub/img"), layerOf("foreign/img")
	tok := tr.mustToken(t, f.asAccount("dev"), "repository:own/mounted:pull,push", "repository:pub/img:pull", "repository:foreign/img:pull")
	if got := grantedActions(t, tok.Token, "foreign/img"); got != nil {
		t.Fatalf("dev's token grants %v in foreign/img", got)
	}
	resp := tr.do(t, http.MethodPost, "/v2/own/mounted/blobs/uploads/?mount="+pubLayer+"&from=pub/img", nil, bearer(tok.Token))
	wantStatus(t, resp, http.StatusCreated)
	resp = tr.do(t, http.MethodPost, "/v2/own/mounted/blobs/uploads/?mount="+foreignLayer+"&from=foreign/img", nil, bearer(tok.Token))
	wantStatus(t, resp, http.StatusAccepted)
	wantStatus(t, tr.do(t, http.MethodHead, "/v2/own/mounted/blobs/"+foreignLayer, nil), http.StatusNotFound)
}

// testDockerLogin: docker's OAuth2 flow — a password grant with
// access_type=offline gives a refresh token (docker login's identity
// token); refresh grants give access tokens; go-containerregistry pushes
// with the identity token; a password change ends both.
func testDockerLogin(t *testing.T, tr *testRegistry, _ fixture) {
	ctx := t.Context()
	const user = "docker1"
	if _, err := tr.node.CreateUser(ctx, policy.User{Name: user}, passwordOf(user), false); err != nil {
		t.Fatal(err)
	}
	if err := tr.node.PutMember(ctx, policy.Member{Project: ownProject, User: user, Role: policy.RoleDeveloper}, true); err != nil {
		t.Fatal(err)
	}
	resp, login := tr.postToken(t, url.Values{
		"grant_type": {"password"}, "username": {user}, "password": {passwordOf(user)},
		"client_id": {"docker"}, "access_type": {"offline"}, "service": {"berth"},
		"scope": {"repository:own/docker:pull,push"},
	})
	wantStatus(t, resp, http.StatusOK)
	wantHeader(t, resp, "Cache-Control", "no-store")
	if login.RefreshToken == "" || login.ExpiresIn != 300 {
		t.Fatalf("login = %s", resp.body)
	}
	if got := grantedActions(t, login.AccessToken, "own/docker"); !slices.Equal(got, []string{"pull", "push"}) {
		t.Fatalf("login token grants %v", got)
	}
	content := []byte("docker blob")
	wantStatus(t, tr.do(t, http.MethodPost, "/v2/own/docker/blobs/uploads/?digest="+oci.DigestOf(content).String(), content, bearer(login.AccessToken)), http.StatusCreated)

	refreshForm := func(scope string) url.Values {
		return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {login.RefreshToken},
			"client_id": {"docker"}, "service": {"berth"}, "scope": {scope}}
	}
	resp, again := tr.postToken(t, refreshForm("repository:own/docker:pull repository:foreign/img:pull"))
	wantStatus(t, resp, http.StatusOK)
	if again.RefreshToken != "" {
		t.Fatal("a refresh grant without access_type=offline answered a refresh token")
	}
	if got := grantedActions(t, again.AccessToken, "own/docker"); !slices.Equal(got, []string{"pull"}) {
		t.Fatalf("refreshed token grants %v", got)
	}
	if got := grantedActions(t, again.AccessToken, "foreign/img"); got != nil {
		t.Fatalf("refreshed token grants %v in foreign/img", got)
	}
	// An access token is not a refresh token.
	form := refreshForm("repository:own/docker:pull")
	form.Set("refresh_token", login.AccessToken)
	resp, _ = tr.postToken(t, form)
	wantStatus(t, resp, http.StatusUnauthorized)
	// GET with offline_token=true answers one too.
	q := url.Values{"service": {"berth"}, "offline_token": {"true"}, "client_id": {"docker"}}
	resp = tr.do(t, http.MethodGet, TokenPath+"?"+q.Encode(), nil, asUser(user, passwordOf(user)))
	wantStatus(t, resp, http.StatusOK)
	var got tokenResponse
	if err := json.Unmarshal(resp.body, &got); err != nil || got.RefreshToken == "" {
		t.Fatalf("GET offline_token: %s", resp.body)
	}

	// go-containerregistry with the identity token uses the POST flow.
	host := strings.TrimPrefix(tr.srv.URL, "http://")
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/own/docker:v1", name.Insecure)
	opts := []remote.Option{remote.WithAuth(authn.FromConfig(authn.AuthConfig{IdentityToken: login.RefreshToken})),
		remote.WithContext(ctx), remote.WithJobs(1)}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("push with the identity token: %v", err)
	}

	// A wrong password: 401 with an error docker prints.
	resp, _ = tr.postToken(t, url.Values{"grant_type": {"password"}, "username": {user}, "password": {"Wrong-pass-1"}, "client_id": {"docker"}})
	wantStatus(t, resp, http.StatusUnauthorized)
	var body tokenErrorBody
	if err := json.Unmarshal(resp.body, &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Code != codeUnauthorized ||
		body.Errors[0].Message != "invalid username or password" || body.Error != "invalid_grant" {
		t.Fatalf("wrong password answer = %s", resp.body)
	}
	waitAudit(t, tr, policy.AuditFilter{Op: policy.AuditLoginFailed, Target: user})

	// A password change ends the refresh token and the access tokens
	// (once the account cache has forgotten the old credentials).
	if err := tr.node.SetPassword(ctx, user, "Changed-pass-2"); err != nil {
		t.Fatal(err)
	}
	tr.clock.advance(accountCacheTTL + time.Second)
	resp, _ = tr.postToken(t, refreshForm("repository:own/docker:pull"))
	wantStatus(t, resp, http.StatusUnauthorized)
	wantChallenge(t, tr, tr.do(t, http.MethodGet, "/v2/own/docker/manifests/v1", nil, bearer(again.AccessToken)), "repository:own/docker:pull")
	// The old password is refused even though it was cached.
	resp, _ = tr.tokenFor(t, asUser(user, passwordOf(user)))
	wantStatus(t, resp, http.StatusUnauthorized)
	// The new one works.
	tr.mustToken(t, asUser(user, "Changed-pass-2"), "repository:own/docker:pull")
}

// testRevokedAccounts: the access and refresh tokens and the basic
// credentials of a robot that is deleted, disabled or deleted and created
// again under its name, or of a user who is deleted, stop working as soon
// as the account cache forgets them — at most accountCacheTTL.
func testRevokedAccounts(t *testing.T, tr *testRegistry, _ fixture) {
	ctx := t.Context()
	newRobot := func(short string) (policy.Robot, string) {
		t.Helper()
		r := policy.Robot{
			Name: policy.RobotName(ownProject, short), Level: policy.RobotProject, Project: ownProject,
			Permissions: []policy.RobotPermission{{Kind: "project", Namespace: ownProject, Access: []policy.Access{
				{Resource: policy.ResRepository, Action: policy.ActPull},
			}}},
		}
		r, secret, err := tr.node.CreateRobot(ctx, r, "")
		if err != nil {
			t.Fatal(err)
		}
		return r, secret
	}
	const path = "/v2/own/img/manifests/v1"
	tests := []struct {
		name   string
		create func() (user, pass string)
		revoke func(user string) error
	}{
		{"deleted robot", func() (string, string) { r, s := newRobot("deleted"); return r.Name, s },
			func(user string) error { return tr.node.DeleteRobot(ctx, user) }},
		{"disabled robot", func() (string, string) { r, s := newRobot("disabled"); return r.Name, s },
			func(user string) error {
				r, err := tr.node.Robot(ctx, user)
				if err != nil {
					return err
				}
				r.Disabled = true
				_, err = tr.node.UpdateRobot(ctx, r)
				return err
			}},
		{"re-created robot", func() (string, string) { r, s := newRobot("again"); return r.Name, s },
			func(user string) error {
				if err := tr.node.DeleteRobot(ctx, user); err != nil {
					return err
				}
				_, _, err := tr.node.CreateRobot(ctx, policy.Robot{
					Name: user, Level: policy.RobotProject, Project: ownProject,
					Permissions: []policy.RobotPermission{{Kind: "project", Namespace: ownProject, Access: []policy.Access{
						{Resource: policy.ResRepository, Action: policy.ActPull},
					}}},
				}, "")
				return err
			}},
		{"deleted user", func() (string, string) {
			if _, err := tr.node.CreateUser(ctx, policy.User{Name: "leaver"}, passwordOf("leaver"), false); err != nil {
				t.Fatal(err)
			}
			if err := tr.node.PutMember(ctx, policy.Member{Project: ownProject, User: "leaver", Role: policy.RoleGuest}, true); err != nil {
				t.Fatal(err)
			}
			return "leaver", passwordOf("leaver")
		}, func(user string) error { return tr.node.DeleteUser(ctx, user) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, pass := tt.create()
			q := url.Values{"service": {"berth"}, "offline_token": {"true"}, "scope": {"repository:own/img:pull"}}
			resp := tr.do(t, http.MethodGet, TokenPath+"?"+q.Encode(), nil, asUser(user, pass))
			wantStatus(t, resp, http.StatusOK)
			var login tokenResponse
			if err := json.Unmarshal(resp.body, &login); err != nil || login.RefreshToken == "" {
				t.Fatalf("login: %s", resp.body)
			}
			tok := login.Token
			wantStatus(t, tr.do(t, http.MethodGet, path, nil, bearer(tok)), http.StatusOK)
			wantStatus(t, tr.do(t, http.MethodGet, path, nil, asUser(user, pass)), http.StatusOK)
			if err := tt.revoke(user); err != nil {
				t.Fatal(err)
			}
			tr.clock.advance(accountCacheTTL + time.Second)
			wantChallenge(t, tr, tr.do(t, http.MethodGet, path, nil, bearer(tok)), "repository:own/img:pull")
			wantChallenge(t, tr, tr.do(t, http.MethodGet, path, nil, asUser(user, pass)), "repository:own/img:pull")
			resp, _ = tr.tokenFor(t, asUser(user, pass), "repository:own/img:pull")
			wantStatus(t, resp, http.StatusUnauthorized)
			resp, _ = tr.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {login.RefreshToken}, "client_id": {"test"}})
			wantStatus(t, resp, http.StatusUnauthorized)
		})
	}
}

// testTokenRequests: the token service's answers and claims, and its
// refusals of malformed, oversized and unsupported requests.
func testTokenRequests(t *testing.T, tr *testRegistry, f fixture) {
	ctx := t.Context()
	resp, tok := tr.tokenFor(t, f.asAccount(rootUser), "repository:own/img:*", "repository:pub/img:pull repository:own/img:pull", "plugin:x:pull", "registry:catalog:*")
	wantStatus(t, resp, http.StatusOK)
	wantHeader(t, resp, "Cache-Control", "no-store")
	if tok.ExpiresIn != 300 || tok.RefreshToken != "" {
		t.Fatalf("token response %s", resp.body)
	}
	issued, err := time.Parse(time.RFC3339, tok.IssuedAt)
	if err != nil || issued.Sub(tr.clock.now()).Abs() > time.Minute {
		t.Fatalf("issued_at %q: %v", tok.IssuedAt, err)
	}
	c := claimsOf(t, tok.Token)
	want := []tokenAccess{
		{Type: scopeRepository, Name: "own/img", Actions: []string{"pull", "push", "delete"}},
		{Type: scopeRepository, Name: "pub/img", Actions: []string{"pull"}},
		{Type: scopeRegistry, Name: catalogName, Actions: []string{"*"}},
	}
	if fmt.Sprint(c.Access) != fmt.Sprint(want) {
		t.Fatalf("access = %+v, want %+v", c.Access, want)
	}
	kid, _, _, err := tr.node.SigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok.Token, &accessClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header["alg"] != "EdDSA" || parsed.Header["kid"] != kid {
		t.Fatalf("header = %v", parsed.Header)
	}
	if c.Issuer != "berth" || !slices.Equal(c.Audience, jwt.ClaimStrings{"berth"}) || c.Subject != rootUser || c.ID == "" ||
		c.ExpiresAt.Sub(c.IssuedAt.Time) != 5*time.Minute || !c.NotBefore.Equal(c.IssuedAt.Time) {
		t.Fatalf("claims = %+v", c.RegisteredClaims)
	}
	if other := tr.mustToken(t, f.asAccount(rootUser)); claimsOf(t, other.Token).ID == c.ID {
		t.Fatal("two tokens share a jti")
	}
	// An anonymous token names no subject and has no catalog.
	if c := claimsOf(t, tr.mustToken(t, anonymous(), "registry:catalog:*").Token); c.Subject != "" || len(c.Access) != 0 {
		t.Fatalf("anonymous claims = %+v", c)
	}

	many := make([]string, maxScopes+1)
	for i := range many {
		many[i] = fmt.Sprintf("repository:own/r%d:pull", i)
	}
	bad := []struct {
		name   string
		scopes []string
		query  string
		status int
	}{
		{"too many scopes", many, "", http.StatusBadRequest},
		{"scope too long", []string{"repository:own/" + strings.Repeat("a", maxScopeLength) + ":pull"}, "", http.StatusBadRequest},
		{"malformed scope", []string{"repository"}, "", http.StatusBadRequest},
		{"no actions", []string{"repository:own/img"}, "", http.StatusBadRequest},
		{"invalid repository", []string{"repository:Own/Img:pull"}, "", http.StatusBadRequest},
		{"other service", nil, "&service=elsewhere", http.StatusBadRequest},
		{"client id too long", nil, "&client_id=" + strings.Repeat("c", maxClientID+1), http.StatusBadRequest},
		{"query too long", nil, "&x=" + strings.Repeat("q", maxTokenQuery), http.StatusBadRequest},
	}
	for _, b := range bad {
		q := url.Values{"scope": b.scopes}
		resp := tr.do(t, http.MethodGet, TokenPath+"?"+q.Encode()+b.query, nil, f.asAccount("dev"))
		wantStatus(t, resp, b.status)
		var body tokenErrorBody
		if err := json.Unmarshal(resp.body, &body); err != nil || body.Error == "" || len(body.Errors) != 1 {
			t.Fatalf("%s: body %s", b.name, resp.body)
		}
	}
	wantStatus(t, tr.do(t, http.MethodPut, TokenPath, nil), http.StatusMethodNotAllowed)
	resp, _ = tr.postToken(t, url.Values{"grant_type": {"client_credentials"}})
	wantStatus(t, resp, http.StatusBadRequest)
	resp, _ = tr.postToken(t, url.Values{"grant_type": {"password"}, "password": {"x"}})
	wantStatus(t, resp, http.StatusBadRequest)
	resp, _ = tr.postToken(t, url.Values{"grant_type": {"password"}, "username": {"dev"}, "password": {strings.Repeat("p", maxTokenForm)}})
	wantStatus(t, resp, http.StatusRequestEntityTooLarge)
	resp, _ = tr.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"garbage"}})
	wantStatus(t, resp, http.StatusUnauthorized)
}

// fakeAccess is an AccessState and AuditSink of function fields that
// counts its calls.
type fakeAccess struct {
	authenticate func(name, secret string) (policy.Account, bool, error)
	lookup       func(name string) (policy.Account, error)
	project      func(user, project string) (policy.ProjectAccess, error)

	authentications, lookups, syncs atomic.Int64
	events                          atomic.Int64
}

func (f *fakeAccess) Authenticate(_ context.Context, name, secret string) (policy.Account, bool, error) {
	f.authentications.Add(1)
	return f.authenticate(name, secret)
}

func (f *fakeAccess) LookupAccount(_ context.Context, name string) (policy.Account, error) {
	f.lookups.Add(1)
	return f.lookup(name)
}

// ProjectAccess catches up (counted as a Sync) on a project it does not
// find, as the state does.
func (f *fakeAccess) ProjectAccess(_ context.Context, user, project string) (policy.ProjectAccess, error) {
	pa, err := f.project(user, project)
	if err == nil && !pa.Exists {
		f.syncs.Add(1)
	}
	return pa, err
}

func (f *fakeAccess) Sync(context.Context) error { f.syncs.Add(1); return nil }

func (f *fakeAccess) RecordEvent(policy.AuditEvent) { f.events.Add(1) }

// fakeKeys is one Ed25519 key, counting verification key lookups.
type fakeKeys struct {
	kid     string
	key     ed25519.PrivateKey
	lookups atomic.Int64
}

func newFakeKeys(t *testing.T) *fakeKeys {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeKeys{kid: "k1", key: k}
}

func (k *fakeKeys) SigningKey(context.Context) (string, ed25519.PrivateKey, time.Time, error) {
	return k.kid, k.key, time.Time{}, nil
}

func (k *fakeKeys) VerifyKey(kid string) (ed25519.PublicKey, error) {
	k.lookups.Add(1)
	if kid != k.kid {
		return nil, fmt.Errorf("kid %s: %w", kid, oci.ErrNotFound)
	}
	return k.key.Public().(ed25519.PublicKey), nil
}

func (k *fakeKeys) EnsureTokenKey(context.Context) error { return nil }

// newFakeAccess is one user alice (password "alice-pw", generation gen)
// who develops in project p.
func newFakeAccess(gen *atomic.Uint64) *fakeAccess {
	alice := func() policy.Account {
		return policy.Account{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: "alice"}, Gen: gen.Load()}
	}
	return &fakeAccess{
		authenticate: func(name, secret string) (policy.Account, bool, error) {
			if name == "alice" && secret == fmt.Sprintf("alice-pw%d", gen.Load()) {
				return alice(), true, nil
			}
			return policy.Account{}, false, nil
		},
		lookup: func(name string) (policy.Account, error) {
			if name == "alice" {
				return alice(), nil
			}
			return policy.Account{}, oci.ErrNotFound
		},
		project: func(user, project string) (policy.ProjectAccess, error) {
			pa := policy.ProjectAccess{Name: project, Exists: project == "p"}
			if pa.Exists && user == "alice" {
				pa.Role = policy.RoleDeveloper
			}
			return pa, nil
		},
	}
}

// newFakeAuth is the access Authorizer over newFakeAccess(gen) and
// newFakeKeys, on a fakeClock.
func newFakeAuth(t *testing.T, gen *atomic.Uint64) (*AccessAuth, *fakeAccess, *fakeKeys, *fakeClock) {
	t.Helper()
	state, keys := newFakeAccess(gen), newFakeKeys(t)
	a, err := NewAccessAuth(DefaultAuthConfig(), state, keys, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	a.now = clock.now
	return a, state, keys, clock
}

// TestTokenVerificationCache: a token is verified once (one key lookup,
// one signature check) however many requests carry it, until it expires;
// its subject is looked up at most once per accountCacheTTL.
func TestTokenVerificationCache(t *testing.T) {
	var gen atomic.Uint64
	a, state, keys, clock := newFakeAuth(t, &gen)
	acct := policy.Account{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: "alice"}}
	tok, _, err := a.tokens.issueAccess(t.Context(), &acct, []tokenAccess{{Type: scopeRepository, Name: "p/app", Actions: []string{"pull"}}})
	if err != nil {
		t.Fatal(err)
	}
	need := Access{Repo: "p/app", Action: ActionPull}
	authorize := func() error {
		r := httptest.NewRequest(http.MethodGet, "/v2/p/app/blobs/sha256:x", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := a.Authorize(r, need)
		return err
	}
	for range 100 {
		if err := authorize(); err != nil {
			t.Fatal(err)
		}
	}
	if n := keys.lookups.Load(); n != 1 {
		t.Fatalf("100 requests looked the key up %d times, want 1", n)
	}
	if n := state.lookups.Load(); n != 1 {
		t.Fatalf("100 requests looked the account up %d times, want 1", n)
	}
	clock.advance(accountCacheTTL + time.Second)
	if err := authorize(); err != nil || state.lookups.Load() != 2 {
		t.Fatalf("after the account cache expired: %v, %d lookups", err, state.lookups.Load())
	}
	// A new credential generation ends the token.
	gen.Add(1)
	clock.advance(accountCacheTTL + time.Second)
	if err := authorize(); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("token of older credentials: %v", err)
	}
	gen.Store(0)
	// Past its expiry (and the leeway) the cached verification is gone.
	clock.advance(DefaultAuthConfig().TokenTTL + MaxTokenLeeway)
	if err := authorize(); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("expired token: %v", err)
	}
}

// TestBasicCredentialCache: a successful password check is cached (one
// Authenticate for many requests) but a cached one still follows the
// account: a new credential generation sends it to Authenticate again,
// where the old password fails. Failures are not cached, and audited.
func TestBasicCredentialCache(t *testing.T) {
	var gen atomic.Uint64
	a, state, _, clock := newFakeAuth(t, &gen)
	authorize := func(pass string) error {
		r := httptest.NewRequest(http.MethodPost, "/v2/p/app/blobs/uploads/", nil)
		r.SetBasicAuth("alice", pass)
		_, err := a.Authorize(r, Access{Repo: "p/app", Action: ActionPush})
		return err
	}
	for range 20 {
		if err := authorize("alice-pw0"); err != nil {
			t.Fatal(err)
		}
	}
	if n := state.authentications.Load(); n != 1 {
		t.Fatalf("20 requests authenticated %d times, want 1", n)
	}
	for range 3 {
		if err := authorize("wrong"); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("wrong password: %v", err)
		}
	}
	if n := state.authentications.Load(); n != 4 {
		t.Fatalf("authentications = %d, want 4 (failures are not cached)", n)
	}
	if n := state.events.Load(); n != 3 {
		t.Fatalf("login_failed events = %d, want 3", n)
	}
	gen.Add(1) // the password changed to alice-pw1
	clock.advance(accountCacheTTL + time.Second)
	if err := authorize("alice-pw0"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("old password after a change: %v", err)
	}
	if err := authorize("alice-pw1"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	// A refused delete outside the role is decided again after a Sync; a
	// missing project once, after the state's own catch-up.
	r := httptest.NewRequest(http.MethodDelete, "/v2/p/app/manifests/v1", nil)
	r.SetBasicAuth("alice", "alice-pw1")
	syncs := state.syncs.Load()
	if _, err := a.Authorize(r, Access{Repo: "p/app", Action: ActionDelete}); !errors.Is(err, ErrDenied) {
		t.Fatalf("developer delete: %v", err)
	}
	// A missing project answers a non-administrator as a private one
	// it may not see would.
	if _, err := a.Authorize(r, Access{Repo: "q/app", Action: ActionPush}); !errors.Is(err, ErrDenied) || errors.Is(err, policy.ErrNoProject) {
		t.Fatalf("push into a missing project: %v", err)
	}
	if n := state.syncs.Load() - syncs; n != 2 {
		t.Fatalf("syncs = %d, want 2", n)
	}
}

// TestAuthenticateReadsAccountsNow: Authenticate, the management API's
// way in, trusts no cached account: a new credential generation ends a
// cached password and a token at the next request, with no wait for
// accountCacheTTL. Its failed logins name the account tried.
func TestAuthenticateReadsAccountsNow(t *testing.T) {
	var gen atomic.Uint64
	state, keys := newFakeAccess(&gen), newFakeKeys(t)
	var events []policy.AuditEvent
	audit := &recordingAudit{record: func(e policy.AuditEvent) { events = append(events, e) }}
	a, err := NewAccessAuth(DefaultAuthConfig(), state, keys, audit, nil)
	if err != nil {
		t.Fatal(err)
	}
	acct := policy.Account{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: "alice"}}
	tok, _, err := a.tokens.issueAccess(t.Context(), &acct, nil)
	if err != nil {
		t.Fatal(err)
	}
	basic := func(pass string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth("alice", pass) }
	}
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	authenticate := func(auth func(*http.Request)) error {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/users/current", nil)
		auth(r)
		id, err := a.Authenticate(r)
		if err == nil && id.Principal.Name != "alice" {
			t.Fatalf("authenticated as %+v", id)
		}
		return err
	}
	for _, auth := range []func(*http.Request){basic("alice-pw0"), bearer} {
		if err := authenticate(auth); err != nil {
			t.Fatal(err)
		}
	}
	gen.Add(1) // the password changed to alice-pw1: no clock advance
	if err := authenticate(basic("alice-pw0")); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("old password after a change: %v", err)
	}
	if err := authenticate(bearer); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("token of older credentials: %v", err)
	}
	if err := authenticate(basic("alice-pw1")); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if len(events) != 1 || events[0].Actor != "alice" || events[0].Target != "alice" || events[0].Detail != "management API" {
		t.Fatalf("failed logins recorded as %+v, want one of alice's", events)
	}
}

// recordingAudit is an AuditSink that hands events to record.
type recordingAudit struct{ record func(policy.AuditEvent) }

func (s *recordingAudit) RecordEvent(e policy.AuditEvent) { s.record(e) }

func TestAuthConfigValidate(t *testing.T) {
	ok := DefaultAuthConfig()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*AuthConfig)
	}{
		{"token lifetime over 5 minutes", func(c *AuthConfig) { c.TokenTTL = 6 * time.Minute }},
		{"zero token lifetime", func(c *AuthConfig) { c.TokenTTL = 0 }},
		{"zero refresh lifetime", func(c *AuthConfig) { c.RefreshTTL = 0 }},
		{"leeway over 30 seconds", func(c *AuthConfig) { c.Leeway = time.Minute }},
		{"negative leeway", func(c *AuthConfig) { c.Leeway = -time.Second }},
		{"no issuer", func(c *AuthConfig) { c.Issuer = "" }},
		{"quote in service", func(c *AuthConfig) { c.Service = `a"b` }},
		{"external URL without scheme", func(c *AuthConfig) { c.ExternalURL = "registry.example.com" }},
		{"external URL with a query", func(c *AuthConfig) { c.ExternalURL = "https://r.example.com/?x=1" }},
		{"external URL with a quote", func(c *AuthConfig) { c.ExternalURL = `https://r.example.com/"` }},
	}
	for _, tt := range tests {
		c := DefaultAuthConfig()
		tt.edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", tt.name)
		}
	}
}

// TestChallengeRealm: the realm is under ExternalURL when it is set, else
// under the request's scheme and Host — unless the Host could break out of
// the header's quotes.
func TestChallengeRealm(t *testing.T) {
	var gen atomic.Uint64
	state, keys := newFakeAccess(&gen), newFakeKeys(t)
	cfg := DefaultAuthConfig()
	plain, err := NewAccessAuth(cfg, state, keys, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ExternalURL = "https://registry.example.com/"
	external, err := NewAccessAuth(cfg, state, keys, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	need := Access{Repo: "p/app", Action: ActionPush}
	tests := []struct {
		a    *AccessAuth
		host string
		want string
	}{
		{plain, "reg.local:5000", `Bearer realm="http://reg.local:5000/service/token",service="berth",scope="repository:p/app:pull,push"`},
		{plain, `evil",x="`, `Bearer realm="http://localhost/service/token",service="berth",scope="repository:p/app:pull,push"`},
		{external, "reg.local:5000", `Bearer realm="https://registry.example.com/service/token",service="berth",scope="repository:p/app:pull,push"`},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "/v2/p/app/blobs/uploads/", nil)
		r.Host = tt.host
		if got := tt.a.Challenge(r, need, ErrUnauthorized); got != tt.want {
			t.Errorf("Host %q: challenge %q, want %q", tt.host, got, tt.want)
		}
	}
}

// TestChallengeAnswersAuthorize: the challenge after a refused token
// says what Authorize found — insufficient_scope for a valid token without
// the scope, invalid_token for a bad one — without verifying the token or
// looking its subject up again.
func TestChallengeAnswersAuthorize(t *testing.T) {
	var gen atomic.Uint64
	a, state, keys, clock := newFakeAuth(t, &gen)
	issue := func(subject string) string {
		t.Helper()
		acct := policy.Account{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: subject}}
		tok, _, err := a.tokens.issueAccess(t.Context(), &acct, []tokenAccess{{Type: scopeRepository, Name: "p/app", Actions: []string{"pull"}}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired := issue("alice")
	clock.advance(DefaultAuthConfig().TokenTTL + MaxTokenLeeway + time.Second)
	valid, ghost := issue("alice"), issue("ghost")
	push := Access{Repo: "p/app", Action: ActionPush}
	tests := []struct {
		name, token, want string
		keyLookups        int64 // at most one verification
		accountLookups    int64 // at most one lookup
	}{
		{"valid, without the scope", valid, `,error="insufficient_scope"`, 1, 1},
		{"expired", expired, `,error="invalid_token"`, 1, 0},
		{"subject gone", ghost, `,error="invalid_token"`, 1, 1},
		{"not a JWT", "garbage", `,error="invalid_token"`, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.tokens.verified = newTTLCache[[32]byte, *accessClaims](verifiedTokens)
			a.accounts = newTTLCache[string, policy.Account](accountCacheSize)
			keys0, accounts0 := keys.lookups.Load(), state.lookups.Load()
			r := httptest.NewRequest(http.MethodPost, "/v2/p/app/blobs/uploads/", nil)
			r.Header.Set("Authorization", "Bearer "+tt.token)
			_, err := a.Authorize(r, push)
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Authorize = %v, want ErrUnauthorized", err)
			}
			if got := a.Challenge(r, push, err); !strings.HasSuffix(got, tt.want) {
				t.Fatalf("challenge %q, want it to end in %s", got, tt.want)
			}
			if n := keys.lookups.Load() - keys0; n != tt.keyLookups {
				t.Errorf("%d key lookups, want %d", n, tt.keyLookups)
			}
			if n := state.lookups.Load() - accounts0; n != tt.accountLookups {
				t.Errorf("%d account lookups, want %d", n, tt.accountLookups)
			}
		})
	}
}

func TestParseScopes(t *testing.T) {
	got, err := parseScopes([]string{
		"repository:a/b:push repository:a/b:pull",
		"repository:c/d:*",
		"repository(plugin):e/f:pull",
		"repository:g/h:frobnicate",
		"registry:catalog:*",
		"registry:other:*",
		"widget:x:pull",
		"repository:host:5000/i:pull", // the name is between the first and last colon
	})
	if err == nil {
		t.Fatalf("a name with a colon parsed: %+v", got)
	}
	got, err = parseScopes([]string{
		"repository:a/b:push repository:a/b:pull",
		"repository:c/d:*",
		"repository(plugin):e/f:pull",
		"repository:g/h:frobnicate",
		"registry:catalog:*",
		"registry:other:*",
		"widget:x:pull",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []scope{
		{scopeRepository, "a/b", []string{"pull", "push"}},
		{scopeRepository, "c/d", []string{"pull", "push", "delete"}},
		{scopeRepository, "e/f", []string{"pull"}},
		{scopeRegistry, catalogName, []string{"*"}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scopes = %+v, want %+v", got, want)
	}
}
