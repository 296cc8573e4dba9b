package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"time"

	"github.com/berth-registry/berth/policy"
)

// adminAuth is the single-admin Authorizer of the first release: anonymous
// pulls when allowed, HTTP basic auth of an existing user for everything
// else. Pushes and deletes need an admin.
type adminAuth struct {
	users         PasswordChecker
	anonymousPull bool
	challenge     string
	now           func() time.Time

	key   []byte // HMAC key of the cache, random per process
	cache *ttlCache[[sha256.Size]byte, Identity]
}

var _ Authorizer = (*adminAuth)(nil)

// NewAdminAuth returns the Authorizer of the single-admin setup.
//
// Pulls (and the catalog) are anonymous when anonymousPull is true;
// otherwise they need the credentials of any existing user. Pushes and
// deletes need an admin. Credentials that are sent are always checked, even
// for an anonymous pull: a wrong password is answered 401.
//
// The API root (GET /v2/, the zero Access) always asks for credentials,
// even with anonymous pulls: the docker CLI sends its credentials only to a
// registry whose /v2/ answered a challenge, so without it `docker login`
// would accept any password and `docker push` would never authenticate.
// Clients that go on anonymously after a Basic challenge (go-containerregistry,
// containers/image, oras, regclient) still pull anonymously; the docker CLI
// cannot pull from a Basic-auth registry without logging in (that needs the
// token service of NewAccessAuth).
//
// Empty basic credentials (containers/image sends "Basic Og==" when it has
// none) count as none. The challenge is `Basic realm="<realm>"`. A
// successful check is cached for about a minute under an HMAC-SHA-256 of
// the user and password (never the password itself); failures are not
// cached.
func NewAdminAuth(users PasswordChecker, anonymousPull bool, realm string) Authorizer {
	if realm == "" {
		realm = "berth"
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go ≥ 1.24)
	return &adminAuth{
		users:         users,
		anonymousPull: anonymousPull,
		challenge:     fmt.Sprintf("Basic realm=%q", realm),
		now:           time.Now,
		key:           key,
		cache:         newTTLCache[[sha256.Size]byte, Identity](credentialCacheSize),
	}
}

// Challenge implements Authorizer.
func (a *adminAuth) Challenge(*http.Request, Access, error) string { return a.challenge }

// Authorize implements Authorizer. The zero Access (no repository, no
// action) is the API root, GET /v2/: it asks only for good credentials.
func (a *adminAuth) Authorize(r *http.Request, need Access) (Identity, error) {
	root := need == Access{}
	readOnly := root || need.Action == ActionPull || need.Action == ActionCatalog
	// Another scheme (a bearer token meant for someone else) and empty
	// basic credentials are no credentials.
	user, password, hasCreds := r.BasicAuth()
	if hasCreds && user == "" && password == "" {
		hasCreds = false
	}
	if !hasCreds {
		if readOnly && !root && a.anonymousPull {
			return Identity{Principal: policy.Anonymous}, nil
		}
		return Identity{Principal: policy.Anonymous}, ErrUnauthorized
	}
	id, err := a.check(r, user, password)
	if err != nil {
		return Identity{}, err
	}
	if !readOnly && !id.Principal.Admin {
		return id, ErrDenied
	}
	return id, nil
}

// check verifies a user's password, through the cache.
func (a *adminAuth) check(r *http.Request, user, password string) (Identity, error) {
	if user == "" || len(user) > maxCredentialLength || len(password) > maxCredentialLength {
		return Identity{}, ErrUnauthorized
	}
	key := credentialKey(a.key, user, password)
	now := a.now()
	if id, ok := a.cache.get(key, now); ok {
		return id, nil
	}
	ok, admin, err := a.users.CheckPassword(r.Context(), user, password)
	if err != nil {
		return Identity{}, fmt.Errorf("check password of %q: %w", user, err)
	}
	if !ok {
		return Identity{}, ErrUnauthorized
	}
	id := Identity{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: user, Admin: admin}}
	a.cache.put(key, id, now, now.Add(credentialCacheTTL))
	return id, nil
}
