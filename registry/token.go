package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Tokens as the distribution token specification describes them: JWTs
// signed with the cluster's current Ed25519 key, named by the header's
// kid. Access tokens carry what they grant in the "access" claim; refresh
// tokens (docker login's identity token) carry the account's credential
// generation instead, and a distinct audience, so that neither is ever
// accepted as the other.

// TokenKeys are the cluster's token signing keys, kept in the state
// machine so that every node signs and verifies with the same ones.
// cmd passes a *cluster.Node.
type TokenKeys interface {
	// SigningKey returns the current key (oci.ErrNotFound when the
	// cluster has none yet).
	SigningKey(ctx context.Context) (kid string, key ed25519.PrivateKey, created time.Time, err error)
	// VerifyKey returns the public half of key kid (oci.ErrNotFound for
	// a key the cluster does not have, or no longer keeps).
	VerifyKey(kid string) (ed25519.PublicKey, error)
	// EnsureTokenKey creates the first key when the cluster has none.
	EnsureTokenKey(ctx context.Context) error
}

// Token bounds.
const (
	// tokenAlg is the one signing algorithm issued and accepted.
	tokenAlg = "EdDSA"
	// MaxTokenTTL bounds an access token's lifetime, MaxTokenLeeway the
	// clock skew tolerated when checking exp, nbf and iat.
	MaxTokenTTL    = 5 * time.Minute
	MaxTokenLeeway = 30 * time.Second
	// maxTokenLength bounds a token we parse; an access token with the
	// most scopes a request may ask for is well below it.
	maxTokenLength = 16 << 10
	maxKidLength   = 64
	// verifiedTokens bounds the cache of verified access tokens.
	verifiedTokens = 4096
)

// Token types of the "access" claim.
const (
	scopeRepository = "repository"
	scopeRegistry   = "registry"
	catalogName     = "catalog"
	actionAll       = "*"
)

// tokenAccess is one entry of a token's "access" claim.
type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// accessClaims are an access token's claims. UID and Gen are the
// subject's account id and credential generation when it was issued: a
// password or secret change ends the token too, not only its refresh
// token, and a deleted account re-created under the same name is not its
// subject.
type accessClaims struct {
	jwt.RegisteredClaims
	Access []tokenAccess `json:"access"`
	UID    uint64        `json:"uid,omitempty"`
	Gen    uint64        `json:"gen,omitempty"`
}

// allows reports whether the token grants need. The zero Access (the API
// root) needs only a valid token.
func (c *accessClaims) allows(need Access) bool {
	if need == (Access{}) {
		return true
	}
	typ, name, action := scopeRepository, need.Repo, string(need.Action)
	if need.Action == ActionCatalog {
		typ, name, action = scopeRegistry, catalogName, actionAll
	}
	for _, a := range c.Access {
		if a.Type == typ && a.Name == name && slices.Contains(a.Actions, action) {
			return true
		}
	}
	return false
}

// refreshClaims are a refresh token's claims.
type refreshClaims struct {
	jwt.RegisteredClaims
	UID uint64 `json:"uid"`
	Gen uint64 `json:"gen"`
}

// issuedFor reports whether a token issued for account id uid at
// credential generation gen belongs to acct as it is now.
func issuedFor(acct policy.Account, uid, gen uint64) bool {
	return acct.ID == uid && acct.Gen == gen
}

// tokens issues and verifies tokens.
type tokens struct {
	issuer     string
	audience   string // of access tokens: the service
	refreshAud string // of refresh tokens
	ttl        time.Duration
	refreshTTL time.Duration
	leeway     time.Duration
	keys       TokenKeys
	now        func() time.Time

	accessParser  *jwt.Parser
	refreshParser *jwt.Parser
	verified      *ttlCache[[sha256.Size]byte, *accessClaims]
}

func newTokens(cfg AuthConfig, keys TokenKeys, now func() time.Time) *tokens {
	t := &tokens{
		issuer:     cfg.Issuer,
		audience:   cfg.Service,
		refreshAud: refreshAudience(cfg.Service),
		ttl:        cfg.TokenTTL,
		refreshTTL: cfg.RefreshTTL,
		leeway:     cfg.Leeway,
		keys:       keys,
		now:        now,
		verified:   newTTLCache[[sha256.Size]byte, *accessClaims](verifiedTokens),
	}
	opts := func(aud string) []jwt.ParserOption {
		return []jwt.ParserOption{
			jwt.WithValidMethods([]string{tokenAlg}),
			jwt.WithIssuer(t.issuer),
			jwt.WithAudience(aud),
			jwt.WithExpirationRequired(),
			jwt.WithNotBeforeRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(t.leeway),
			jwt.WithTimeFunc(t.now),
			jwt.WithStrictDecoding(),
		}
	}
	t.accessParser = jwt.NewParser(opts(t.audience)...)
	t.refreshParser = jwt.NewParser(opts(t.refreshAud)...)
	return t
}

// refreshAudience is the audience of refresh tokens: never the service,
// so that no refresh token passes as an access token.
func refreshAudience(service string) string { return service + "/refresh" }

// registered returns the registered claims of a token for subject that
// lives for ttl from now.
func (t *tokens) registered(subject, audience string, now time.Time, ttl time.Duration) jwt.RegisteredClaims {
	jti := make([]byte, 16)
	_, _ = rand.Read(jti) // never fails (Go ≥ 1.24)
	return jwt.RegisteredClaims{
		Issuer:    t.issuer,
		Subject:   subject,
		Audience:  jwt.ClaimStrings{audience},
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        hex.EncodeToString(jti),
	}
}

// issueAccess signs an access token for acct (nil: anonymous) granting
// access, and returns it with its issue time.
func (t *tokens) issueAccess(ctx context.Context, acct *policy.Account, access []tokenAccess) (string, time.Time, error) {
	now := t.now()
	c := &accessClaims{Access: access}
	subject := ""
	if acct != nil {
		subject, c.UID, c.Gen = acct.Principal.Name, acct.ID, acct.Gen
	}
	if c.Access == nil {
		c.Access = []tokenAccess{}
	}
	c.RegisteredClaims = t.registered(subject, t.audience, now, t.ttl)
	s, err := t.sign(ctx, c)
	return s, now, err
}

// issueRefresh signs a refresh token for acct.
func (t *tokens) issueRefresh(ctx context.Context, acct policy.Account) (string, error) {
	c := &refreshClaims{UID: acct.ID, Gen: acct.Gen}
	c.RegisteredClaims = t.registered(acct.Principal.Name, t.refreshAud, t.now(), t.refreshTTL)
	return t.sign(ctx, c)
}

// sign signs claims with the cluster's current key, creating the first
// key if the cluster has none yet.
func (t *tokens) sign(ctx context.Context, claims jwt.Claims) (string, error) {
	kid, key, _, err := t.keys.SigningKey(ctx)
	if errors.Is(err, oci.ErrNotFound) {
		if err = t.keys.EnsureTokenKey(ctx); err != nil {
			return "", fmt.Errorf("create the token signing key: %w", err)
		}
		kid, key, _, err = t.keys.SigningKey(ctx)
	}
	if err != nil {
		return "", fmt.Errorf("token signing key: %w", err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// keyFunc returns the public key the token's kid names. The algorithm was
// checked before (WithValidMethods): only EdDSA reaches here, and an
// Ed25519 key verifies nothing else.
func (t *tokens) keyFunc(tok *jwt.Token) (any, error) {
	kid, _ := tok.Header["kid"].(string)
	if kid == "" || len(kid) > maxKidLength {
		return nil, errors.New("no usable kid")
	}
	pub, err := t.keys.VerifyKey(kid)
	if err != nil {
		return nil, fmt.Errorf("kid %q: %w", kid, err)
	}
	return pub, nil
}

// verifyAccess checks an access token: its algorithm, the key its kid
// names, the signature, iss, aud, exp, nbf and iat (within the leeway),
// and that it lives no longer than an access token may. A verified token
// is remembered until it expires, under its SHA-256, so a pull of many
// layers pays for one signature check. Errors wrap ErrUnauthorized.
//
// Whether its subject may still use it is the caller's check.
func (t *tokens) verifyAccess(raw string) (*accessClaims, error) {
	if len(raw) > maxTokenLength {
		return nil, fmt.Errorf("%w: token longer than %d bytes", ErrUnauthorized, maxTokenLength)
	}
	key := sha256.Sum256([]byte(raw))
	now := t.now()
	if c, ok := t.verified.get(key, now); ok {
		return c, nil
	}
	c := &accessClaims{}
	if _, err := t.accessParser.ParseWithClaims(raw, c, t.keyFunc); err != nil {
		return nil, fmt.Errorf("%w: access token: %w", ErrUnauthorized, err)
	}
	exp := c.ExpiresAt.Time
	if exp.Sub(now) > MaxTokenTTL+t.leeway {
		return nil, fmt.Errorf("%w: access token lives longer than %s", ErrUnauthorized, MaxTokenTTL)
	}
	t.verified.put(key, c, now, exp.Add(t.leeway))
	return c, nil
}

// verifyRefresh checks a refresh token as verifyAccess checks an access
// token, against the refresh audience; it needs a subject.
func (t *tokens) verifyRefresh(raw string) (*refreshClaims, error) {
	if len(raw) > maxTokenLength {
		return nil, fmt.Errorf("%w: token longer than %d bytes", ErrUnauthorized, maxTokenLength)
	}
	c := &refreshClaims{}
	if _, err := t.refreshParser.ParseWithClaims(raw, c, t.keyFunc); err != nil {
		return nil, fmt.Errorf("%w: refresh token: %w", ErrUnauthorized, err)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: refresh token without a subject", ErrUnauthorized)
	}
	return c, nil
}
