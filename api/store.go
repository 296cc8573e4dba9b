package api

import (
	"context"
	"net/http"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
)

// The state the access endpoints read and change, declared here as the
// API uses it; *cluster.Node implements every method (cmd passes it). The
// writes take the actor from ctx (policy.WithActor) and audit the change
// in the same command.

// AccountStore checks a password again (a user changing their own) and
// audits a wrong one.
type AccountStore interface {
	// Authenticate checks a user's password or a robot's secret; a wrong
	// one is ok == false, not an error.
	Authenticate(ctx context.Context, name, secret string) (acct policy.Account, ok bool, err error)
	// RecordEvent counts an audit event that is no change (a failed
	// login); it never blocks.
	RecordEvent(e policy.AuditEvent)
}

// ProjectStore holds projects and their members.
type ProjectStore interface {
	// Sync catches up with the leader, so that a refusal is decided on
	// what was just written through another node too.
	Sync(ctx context.Context) error
	ProjectAccess(ctx context.Context, user, project string) (policy.ProjectAccess, error)
	Project(ctx context.Context, name string) (policy.Project, error)
	Projects(ctx context.Context, last string, count int) ([]policy.Project, error)
	ProjectUsage(ctx context.Context, project string) (policy.Usage, error)
	CreateProject(ctx context.Context, p policy.Project) (policy.Project, error)
	// UpdateProject changes the named fields ("public", "quota",
	// "immutable", "retention") of project p.Name to p's.
	UpdateProject(ctx context.Context, p policy.Project, fields ...string) (policy.Project, error)
	// UpdateProjectIf updates only while the project's Updated is still
	// ifUpdated (oci.ErrPreconditionFailed otherwise).
	UpdateProjectIf(ctx context.Context, p policy.Project, ifUpdated int64, fields ...string) (policy.Project, error)
	DeleteProject(ctx context.Context, name string) error
	ProjectMembers(ctx context.Context, project string) ([]policy.Member, error)
	Memberships(ctx context.Context, user string) ([]policy.Member, error)
	PutMember(ctx context.Context, m policy.Member, create bool) error
	DeleteMember(ctx context.Context, project, user string) error
}

// UserStore holds local users. Only SetAdmin changes the admin flag, and
// only CreateUser sets it.
type UserStore interface {
	User(ctx context.Context, name string) (policy.User, error)
	Users(ctx context.Context, last string, count int) ([]policy.User, error)
	CreateUser(ctx context.Context, u policy.User, password string, admin bool) (policy.User, error)
	UpdateUser(ctx context.Context, u policy.User) (policy.User, error)
	SetPassword(ctx context.Context, name, password string) error
	SetAdmin(ctx context.Context, name string, admin bool) error
	DeleteUser(ctx context.Context, name string) error
}

// RobotStore holds robot accounts; their secrets only as hashes.
type RobotStore interface {
	Robot(ctx context.Context, name string) (policy.Robot, error)
	// Robots pages through the robots of project ("": system robots);
	// last is the name without its project prefix.
	Robots(ctx context.Context, project, last string, count int) ([]policy.Robot, error)
	CreateRobot(ctx context.Context, r policy.Robot, secret string) (policy.Robot, string, error)
	UpdateRobot(ctx context.Context, r policy.Robot) (policy.Robot, error)
	RefreshRobotSecret(ctx context.Context, name, secret string) (string, error)
	DeleteRobot(ctx context.Context, name string) error
}

// HistoryStore holds the audit log and the retention runs.
type HistoryStore interface {
	Audit(ctx context.Context, f policy.AuditFilter) ([]policy.AuditEvent, error)
	RetentionRuns(ctx context.Context, project string, count int) ([]policy.RetentionRun, error)
	RetentionRun(ctx context.Context, project string, id uint64) (policy.RetentionRun, error)
}

// TokenKeyStore holds the token service's signing keys. The API shows
// their ids and ages; it never sees a key.
type TokenKeyStore interface {
	TokenKeys(ctx context.Context) ([]policy.SigningKey, error)
	RotateTokenKey(ctx context.Context) (kid string, err error)
}

// IDStore finds projects, users and robots by the numbers Harbor's API
// names them with (oci.ErrNotFound for an id nobody has).
type IDStore interface {
	ProjectByID(ctx context.Context, id uint64) (policy.Project, error)
	UserByID(ctx context.Context, id uint64) (policy.User, error)
	RobotByID(ctx context.Context, id uint64) (policy.Robot, error)
}

// ContentStore reads and changes repositories, artifacts and tags for the
// Harbor-compatible endpoints. They are the methods the registry writes
// through, so a tag created or an artifact deleted here obeys the same
// rules in the state (immutability, quotas, indexes that list a manifest)
// and makes the same replication events and audit entries as a push or a
// delete through /v2/.
type ContentStore interface {
	// ProjectRepositories pages through project's repositories (full
	// names), strictly after last.
	ProjectRepositories(ctx context.Context, project, last string, count int) ([]string, error)
	// Artifacts lists repo's manifests with their tags (oci.ErrNotFound for
	// a repository without any).
	Artifacts(ctx context.Context, repo string) ([]policy.Artifact, error)
	Manifest(ctx context.Context, repo string, dgst oci.Digest) (oci.Record, []byte, error)
	Tag(ctx context.Context, repo, tag string) (oci.Digest, error)
	// TagVersion returns the version of repo:tag, whose HLC is the time it
	// was last pointed (found is false for a deleted tag).
	TagVersion(ctx context.Context, repo, tag string) (v oci.TagVersion, found bool, err error)
	// PutManifest with a tag and a zero version points the tag at the
	// stored manifest as a local push does.
	PutManifest(ctx context.Context, rec oci.Record, payload []byte, tag string, v oci.TagVersion) error
	DeleteManifest(ctx context.Context, repo string, dgst oci.Digest) error
	DeleteTag(ctx context.Context, repo, tag string, v oci.TagVersion, ifDigest oci.Digest) error
}

// Store is the state of the access model as the management API uses it,
// and the content the Harbor-compatible endpoints show.
type Store interface {
	AccountStore
	ProjectStore
	UserStore
	RobotStore
	HistoryStore
	TokenKeyStore
	IDStore
	ContentStore
}

// Authenticator tells who made a request, from its basic credentials (a
// user's password, a robot's secret) or bearer token, or that nobody did
// (policy.Anonymous): the registry's *registry.AccessAuth, so that the
// registry and this API check credentials in one place. It reads accounts
// as they are now: a password changed, an account deleted or disabled, an
// admin flag revoked count at the next request. It audits failed logins
// itself. Credentials that are wrong or no longer valid are an error
// wrapping registry.ErrUnauthorized (401); one wrapping oci.ErrUnavailable
// is answered 503; anything else 500.
type Authenticator interface {
	Authenticate(r *http.Request) (registry.Identity, error)
}

var _ Authenticator = (*registry.AccessAuth)(nil)

// RetentionRunner runs a project's retention policy now (or dry) and
// returns the run as recorded when it was started.
type RetentionRunner interface {
	RunRetention(ctx context.Context, project string, dryRun bool) (policy.RetentionRun, error)
}

// WithAuthenticator makes the API authenticate every request with a (without
// one it refuses all credentials), and returns h.
func (h *Handler) WithAuthenticator(a Authenticator) *Handler {
	h.auth = a
	return h
}

// WithRetention adds the runs of POST /api/v1/projects/{p}/retention/run
// (without it the endpoint answers 501) and returns h.
func (h *Handler) WithRetention(r RetentionRunner) *Handler {
	h.retention = r
	return h
}

// WithConfig sets the access settings (DefaultConfig until then) and
// returns h. cmd validates cfg first (Config.Validate).
func (h *Handler) WithConfig(cfg Config) *Handler {
	h.cfg = cfg
	return h
}
