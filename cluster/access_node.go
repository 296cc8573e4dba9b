package cluster

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The access state as the registry, the token service and the management
// API use it: projects, members, users, robots, token keys, the audit
// log. Writes take the actor from ctx (policy.WithActor) for their audit
// event, written by the same command.

// event is the audit event of a change made by ctx's actor.
func event(ctx context.Context, op, resource, target, project, detail string) *policy.AuditEvent {
	a := policy.ActorFrom(ctx)
	return &policy.AuditEvent{
		Actor: a.Name, Addr: a.Addr, Op: op, Resource: resource, Target: target, Project: project, Detail: detail,
	}
}

func now() int64 { return time.Now().UnixNano() }

// Sync catches up with the leader's commit index (see catchUp): a decision
// that would refuse (an unknown account, a missing membership) is made
// again after it, so that what was just written through another node
// counts at once.
func (n *Node) Sync(ctx context.Context) error {
	err := n.catchUp(ctx)
	if err != nil && !errors.Is(err, errBehind) {
		// No leader: decide from the local state.
		return nil
	}
	return err
}

// --- projects

// Project returns project name (oci.ErrNotFound when absent).
func (n *Node) Project(ctx context.Context, name string) (policy.Project, error) {
	return readFound(ctx, n, func() (policy.Project, error) { return n.fsm.project(name) })
}

// ProjectByID returns the project with id.
func (n *Node) ProjectByID(ctx context.Context, id uint64) (policy.Project, error) {
	return readFound(ctx, n, func() (policy.Project, error) {
		name, err := n.fsm.byID(bucketProjectIDs, id, "project")
		if err != nil {
			return policy.Project{}, err
		}
		return n.fsm.project(name)
	})
}

// Projects pages through projects by name, strictly after last.
func (n *Node) Projects(ctx context.Context, last string, count int) ([]policy.Project, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.projects(last, count)
}

// ProjectUsage returns what project holds.
func (n *Node) ProjectUsage(ctx context.Context, project string) (policy.Usage, error) {
	if err := ctx.Err(); err != nil {
		return policy.Usage{}, err
	}
	return n.fsm.usage(project)
}

// ProjectAccess returns what an access decision about project needs: if
// it exists, if it is public, and the role of user ("" for none) there. A
// project that does not exist is looked up again after catching up.
func (n *Node) ProjectAccess(ctx context.Context, userName, project string) (policy.ProjectAccess, error) {
	if err := ctx.Err(); err != nil {
		return policy.ProjectAccess{}, err
	}
	pa, err := n.fsm.projectAccess(userName, project)
	if err == nil && !pa.Exists && n.caughtUpNow(ctx, &err) {
		pa, err = n.fsm.projectAccess(userName, project)
	}
	return pa, err
}

// CheckQuota refuses (policy.ErrQuotaExceeded) a new upload into repo
// when its project is already at one of its limits: a push would be
// refused at its manifest anyway, and the client learns it before it has
// sent its layers. The exact check is the state machine's, at the
// manifest.
func (n *Node) CheckQuota(ctx context.Context, repo string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name, ok := policy.ProjectOf(repo)
	if !ok {
		return nil
	}
	p, u, found, err := n.fsm.projectUsage(name)
	if err != nil || !found {
		return err // no project: the push is refused for that, with its own error
	}
	// At a limit, one more byte or artifact would go over it.
	switch what, over := p.Quota.Exceeds(u, policy.Usage{Storage: 1, Count: 1}); {
	case !over:
		return nil
	case what == "storage":
		return fmt.Errorf("project %s uses %d of its %d bytes: %w", name, u.Storage, p.Quota.Storage, policy.ErrQuotaExceeded)
	default:
		return fmt.Errorf("project %s holds %d of its %d artifacts: %w", name, u.Count, p.Quota.Count, policy.ErrQuotaExceeded)
	}
}

// ProjectRepositories pages through the repositories of project.
func (n *Node) ProjectRepositories(ctx context.Context, project, last string, count int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.projectRepos(project, last, count)
}

// Artifacts lists the manifests of repo with their tags, push and pull
// times (oci.ErrNotFound for a repository without manifests).
func (n *Node) Artifacts(ctx context.Context, repo string) ([]policy.Artifact, error) {
	return readFound(ctx, n, func() ([]policy.Artifact, error) {
		arts, err := n.fsm.artifacts(repo)
		if err == nil && len(arts) == 0 {
			err = fmt.Errorf("repository %s: %w", repo, oci.ErrNotFound)
		}
		return arts, err
	})
}

// CreateProject creates p (its name, public flag, owner and quota; rules
// and retention too when given).
func (n *Node) CreateProject(ctx context.Context, p policy.Project) (policy.Project, error) {
	if err := p.Validate(); err != nil {
		return policy.Project{}, err
	}
	detail := fmt.Sprintf("public=%t", p.Public)
	err := n.propose(ctx, command{Op: opPutProject, Project: &p, Create: true, Time: now(),
		Audit: event(ctx, policy.AuditCreate, policy.AuditProject, p.Name, p.Name, detail)})
	if err != nil {
		return policy.Project{}, err
	}
	return n.fsm.project(p.Name)
}

// UpdateProject changes fields (FieldPublic, FieldQuota, ...) of project
// p.Name to p's.
func (n *Node) UpdateProject(ctx context.Context, p policy.Project, fields ...string) (policy.Project, error) {
	return n.UpdateProjectIf(ctx, p, 0, fields...)
}

// UpdateProjectIf is UpdateProject on condition that the project's Updated
// is still ifUpdated (0: no condition): a caller that read the project,
// changed a list in it and writes it back fails with
// oci.ErrPreconditionFailed, and reads again, when another change came
// between.
func (n *Node) UpdateProjectIf(ctx context.Context, p policy.Project, ifUpdated int64, fields ...string) (policy.Project, error) {
	if len(fields) == 0 {
		return n.Project(ctx, p.Name)
	}
	resource := policy.AuditProject
	switch fields[0] {
	case FieldQuota:
		resource = policy.AuditQuotaRes
	case FieldImmutable:
		resource = policy.AuditImmutable
	case FieldRetention:
		resource = policy.AuditRetPolicy
	}
	err := n.propose(ctx, command{Op: opPutProject, Project: &p, Fields: fields, Time: now(), IfUpdated: ifUpdated,
		Audit: event(ctx, policy.AuditUpdate, resource, p.Name, p.Name, fmt.Sprintf("fields %v", fields))})
	if err != nil {
		return policy.Project{}, err
	}
	return n.fsm.project(p.Name)
}

// DeleteProject deletes an empty project with its members and robots.
func (n *Node) DeleteProject(ctx context.Context, name string) error {
	return n.propose(ctx, command{Op: opDeleteProject, Name: name, Time: now(),
		Audit: event(ctx, policy.AuditDelete, policy.AuditProject, name, name, "")})
}

// EnsureProject creates project p unless it exists: the bootstrap of
// library. Its answer is confirmed with the leader.
func (n *Node) EnsureProject(ctx context.Context, p policy.Project) (created bool, err error) {
	if _, err := n.Project(ctx, p.Name); err == nil {
		return false, nil
	} else if !errors.Is(err, oci.ErrNotFound) {
		return false, err
	}
	if _, err := n.CreateProject(ctx, p); err != nil {
		if errors.Is(err, policy.ErrExists) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// --- members

// ProjectMembers lists project's members.
func (n *Node) ProjectMembers(ctx context.Context, project string) ([]policy.Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.members(project)
}

// Memberships lists the projects user is a member of.
func (n *Node) Memberships(ctx context.Context, userName string) ([]policy.Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.memberships(userName)
}

// PutMember adds a member (create) or changes its role.
func (n *Node) PutMember(ctx context.Context, m policy.Member, create bool) error {
	if err := m.Validate(); err != nil {
		return err
	}
	op := policy.AuditUpdate
	if create {
		op = policy.AuditCreate
	}
	return n.propose(ctx, command{Op: opPutMember, Member: &m, Create: create, Time: now(),
		Audit: event(ctx, op, policy.AuditMember, m.User, m.Project, "role="+string(m.Role))})
}

// DeleteMember removes user from project.
func (n *Node) DeleteMember(ctx context.Context, project, userName string) error {
	return n.propose(ctx, command{Op: opDeleteMember, Repo: project, Name: userName, Time: now(),
		Audit: event(ctx, policy.AuditDelete, policy.AuditMember, userName, project, "")})
}

// --- users

// User returns user name.
func (n *Node) User(ctx context.Context, name string) (policy.User, error) {
	return readFound(ctx, n, func() (policy.User, error) {
		u, found, err := n.fsm.user(name)
		if err == nil && !found {
			err = fmt.Errorf("user %s: %w", name, oci.ErrNotFound)
		}
		return u.public(name), err
	})
}

// UserByID returns the user with id.
func (n *Node) UserByID(ctx context.Context, id uint64) (policy.User, error) {
	name, err := readFound(ctx, n, func() (string, error) { return n.fsm.byID(bucketUserIDs, id, "user") })
	if err != nil {
		return policy.User{}, err
	}
	return n.User(ctx, name)
}

// Users pages through users by name, strictly after last.
func (n *Node) Users(ctx context.Context, last string, count int) ([]policy.User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.users(last, count)
}

// hashPassword hashes a password for the state; the proposer does it,
// never apply.
func hashPassword(name, password string) ([]byte, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return nil, fmt.Errorf("hash password of %s: %w", name, err)
	}
	return h, nil
}

// CreateUser creates a local user. The password must be strong enough
// (policy.ValidatePassword); admin is the caller's decision.
func (n *Node) CreateUser(ctx context.Context, u policy.User, password string, admin bool) (policy.User, error) {
	if err := u.Validate(); err != nil {
		return policy.User{}, err
	}
	if err := policy.ValidatePassword(u.Name, password); err != nil {
		return policy.User{}, err
	}
	hash, err := hashPassword(u.Name, password)
	if err != nil {
		return policy.User{}, err
	}
	err = n.propose(ctx, command{Op: opCreateUser, User: &u, Hash: hash, Admin: admin, Time: now(),
		Audit: event(ctx, policy.AuditCreate, policy.AuditUser, u.Name, "", fmt.Sprintf("admin=%t", admin))})
	if err != nil {
		return policy.User{}, err
	}
	return n.User(ctx, u.Name)
}

// UpdateUser changes u's profile (email, real name, comment) and nothing
// else.
func (n *Node) UpdateUser(ctx context.Context, u policy.User) (policy.User, error) {
	if err := u.Validate(); err != nil {
		return policy.User{}, err
	}
	err := n.propose(ctx, command{Op: opUpdateUser, User: &u, Time: now(),
		Audit: event(ctx, policy.AuditUpdate, policy.AuditUser, u.Name, "", "profile")})
	if err != nil {
		return policy.User{}, err
	}
	return n.User(ctx, u.Name)
}

// SetPassword sets user name's password (strength checked); refresh
// tokens issued before stop working.
func (n *Node) SetPassword(ctx context.Context, name, password string) error {
	if err := policy.ValidatePassword(name, password); err != nil {
		return err
	}
	hash, err := hashPassword(name, password)
	if err != nil {
		return err
	}
	return n.propose(ctx, command{Op: opSetPassword, Name: name, Hash: hash, Time: now(),
		Audit: event(ctx, policy.AuditUpdate, policy.AuditUser, name, "", "password")})
}

// SetAdmin grants or revokes the system administrator flag; revoking the
// last administrator's is refused.
func (n *Node) SetAdmin(ctx context.Context, name string, admin bool) error {
	return n.propose(ctx, command{Op: opSetAdmin, Name: name, Admin: admin, Time: now(),
		Audit: event(ctx, policy.AuditUpdate, policy.AuditUser, name, "", fmt.Sprintf("admin=%t", admin))})
}

// DeleteUser deletes a user and its memberships; deleting the last
// administrator is refused.
func (n *Node) DeleteUser(ctx context.Context, name string) error {
	return n.propose(ctx, command{Op: opDeleteUser, Name: name, Time: now(),
		Audit: event(ctx, policy.AuditDelete, policy.AuditUser, name, "", "")})
}

// --- robots

// robotSecretBytes is the entropy of a generated robot secret.
const robotSecretBytes = 32

// Bounds of a robot secret a caller chooses. Only its SHA-256 is stored,
// so unlike a password it is not held to bcrypt's 72 bytes.
const (
	minRobotSecret = 16
	maxRobotSecret = 128
)

// robotSecret returns secret when a caller may choose it, or a random one
// (robotSecretBytes) when it is empty.
func robotSecret(secret string) (string, error) {
	if secret == "" {
		b := make([]byte, robotSecretBytes)
		_, _ = rand.Read(b) // never fails (Go ≥ 1.24)
		return base64.RawURLEncoding.EncodeToString(b), nil
	}
	if len(secret) < minRobotSecret || len(secret) > maxRobotSecret {
		return "", fmt.Errorf("%w: a robot secret needs %d to %d characters", policy.ErrInvalid, minRobotSecret, maxRobotSecret)
	}
	return secret, nil
}

func robotHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Robot returns robot name.
func (n *Node) Robot(ctx context.Context, name string) (policy.Robot, error) {
	r, err := readFound(ctx, n, func() (robotRecord, error) { return n.fsm.robot(name) })
	return r.Robot, err
}

// RobotByID returns the robot with id.
func (n *Node) RobotByID(ctx context.Context, id uint64) (policy.Robot, error) {
	name, err := readFound(ctx, n, func() (string, error) { return n.fsm.byID(bucketRobotIDs, id, "robot") })
	if err != nil {
		return policy.Robot{}, err
	}
	return n.Robot(ctx, name)
}

// Robots pages through the robots of project ("" for system robots).
func (n *Node) Robots(ctx context.Context, project, last string, count int) ([]policy.Robot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.robots(project, last, count)
}

// CreateRobot creates r with secret (generated when empty) and returns
// the secret: it is shown once, only its hash is kept.
func (n *Node) CreateRobot(ctx context.Context, r policy.Robot, secret string) (policy.Robot, string, error) {
	if err := r.Validate(); err != nil {
		return policy.Robot{}, "", err
	}
	secret, err := robotSecret(secret)
	if err != nil {
		return policy.Robot{}, "", err
	}
	err = n.propose(ctx, command{Op: opPutRobot, Robot: &r, Hash: robotHash(secret), Create: true, Time: now(),
		Audit: event(ctx, policy.AuditCreate, policy.AuditRobot, r.Name, r.Project, robotDetail(r))})
	if err != nil {
		return policy.Robot{}, "", err
	}
	got, err := n.Robot(ctx, r.Name)
	return got, secret, err
}

func robotDetail(r policy.Robot) string {
	s := fmt.Sprintf("level=%s disabled=%t expires=%d permissions=", r.Level, r.Disabled, r.Expires)
	for _, p := range r.Permissions {
		s += p.Namespace + "["
		for i, a := range p.Access {
			if i > 0 {
				s += ","
			}
			s += a.String()
		}
		s += "]"
	}
	return s
}

// UpdateRobot changes r's description, permissions, expiry and disabled
// flag (its name, level and project stay).
func (n *Node) UpdateRobot(ctx context.Context, r policy.Robot) (policy.Robot, error) {
	if err := r.Validate(); err != nil {
		return policy.Robot{}, err
	}
	err := n.propose(ctx, command{Op: opPutRobot, Robot: &r, Time: now(),
		Audit: event(ctx, policy.AuditUpdate, policy.AuditRobot, r.Name, r.Project, robotDetail(r))})
	if err != nil {
		return policy.Robot{}, err
	}
	return n.Robot(ctx, r.Name)
}

// RefreshRobotSecret gives robot name a new secret (generated when empty)
// and returns it.
func (n *Node) RefreshRobotSecret(ctx context.Context, name, secret string) (string, error) {
	cur, err := n.Robot(ctx, name)
	if err != nil {
		return "", err
	}
	if secret, err = robotSecret(secret); err != nil {
		return "", err
	}
	err = n.propose(ctx, command{Op: opPutRobot, Robot: &cur, Hash: robotHash(secret), Time: now(),
		Audit: event(ctx, policy.AuditUpdate, policy.AuditRobot, name, cur.Project, "secret")})
	return secret, err
}

// DeleteRobot deletes robot name.
func (n *Node) DeleteRobot(ctx context.Context, name string) error {
	project := ""
	if r, err := n.fsm.robot(name); err == nil {
		project = r.Project
	}
	return n.propose(ctx, command{Op: opDeleteRobot, Name: name, Time: now(),
		Audit: event(ctx, policy.AuditDelete, policy.AuditRobot, name, project, "")})
}

// --- authentication

// Authenticate checks a user's password or a robot's secret. A wrong one
// is ok == false; it is checked again after catching up with the leader,
// so that an account created or changed through another node works at
// once, but only when the catch-up applied something: a second bcrypt
// comparison against the same state would answer the same. A disabled or
// expired robot never authenticates.
func (n *Node) Authenticate(ctx context.Context, name, secret string) (policy.Account, bool, error) {
	if err := ctx.Err(); err != nil {
		return policy.Account{}, false, err
	}
	applied := n.AppliedIndex()
	acct, ok, err := n.authenticate(name, secret)
	if err == nil && !ok {
		if err := n.Sync(ctx); err != nil {
			return policy.Account{}, false, err
		}
		if n.AppliedIndex() != applied {
			acct, ok, err = n.authenticate(name, secret)
		}
	}
	return acct, ok, err
}

func (n *Node) authenticate(name, secret string) (policy.Account, bool, error) {
	if name == "" || len(name) > maxUserName || len(secret) > maxRobotSecret+512 {
		return policy.Account{}, false, nil
	}
	if policy.IsRobotName(name) {
		r, err := n.fsm.robot(name)
		if errors.Is(err, oci.ErrNotFound) {
			_ = subtle.ConstantTimeCompare(robotHash(secret), robotHash(""))
			return policy.Account{}, false, nil
		}
		if err != nil {
			return policy.Account{}, false, err
		}
		if subtle.ConstantTimeCompare(robotHash(secret), r.Hash) != 1 || r.Disabled || r.Expired(now()) {
			return policy.Account{}, false, nil
		}
		return r.account(), true, nil
	}
	u, found, err := n.fsm.user(name)
	if err != nil || !passwordOK(u, found, secret) {
		return policy.Account{}, false, err
	}
	return u.account(name), true, nil
}

// LookupAccount returns the current state of account name without its
// credentials: for a refresh token, or a token whose subject may have
// been deleted or disabled since. oci.ErrNotFound when it is gone,
// disabled or expired.
func (n *Node) LookupAccount(ctx context.Context, name string) (policy.Account, error) {
	return readFound(ctx, n, func() (policy.Account, error) {
		if policy.IsRobotName(name) {
			r, err := n.fsm.robot(name)
			if err != nil {
				return policy.Account{}, err
			}
			if r.Disabled || r.Expired(now()) {
				return policy.Account{}, fmt.Errorf("robot %s is disabled or expired: %w", name, oci.ErrNotFound)
			}
			return r.account(), nil
		}
		u, found, err := n.fsm.user(name)
		if err != nil {
			return policy.Account{}, err
		}
		if !found {
			return policy.Account{}, fmt.Errorf("user %s: %w", name, oci.ErrNotFound)
		}
		return u.account(name), nil
	})
}

// --- token signing keys

// tokenSealer seals the private halves of token keys under a key derived
// from the cluster secret, bound to their kid.
type tokenSealer struct {
	aead cipher.AEAD

	mu   sync.Mutex
	open map[string]ed25519.PrivateKey // unsealed keys by kid
}

func newTokenSealer(secret []byte) (*tokenSealer, error) {
	var k []byte
	var err error
	if len(secret) == 0 {
		// A node without a secret (tests of this package) seals with a
		// fixed key; every real node has a secret.
		k, err = hkdf.Key(sha256.New, []byte("berth without a cluster secret"), nil, "token keys v1", 32)
	} else {
		k, err = DeriveKey(secret, "token keys v1")
	}
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &tokenSealer{aead: aead, open: map[string]ed25519.PrivateKey{}}, nil
}

func (s *tokenSealer) seal(kid string, priv ed25519.PrivateKey) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, priv.Seed(), []byte(kid))
}

func (s *tokenSealer) unseal(k TokenKey) (ed25519.PrivateKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.open[k.Kid]; ok {
		return p, nil
	}
	ns := s.aead.NonceSize()
	if len(k.Sealed) < ns {
		return nil, fmt.Errorf("token key %s: sealed key too short", k.Kid)
	}
	seed, err := s.aead.Open(nil, k.Sealed[:ns], k.Sealed[ns:], []byte(k.Kid))
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w (was the cluster secret changed?)", k.Kid, err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("token key %s: bad seed", k.Kid)
	}
	p := ed25519.NewKeyFromSeed(seed)
	s.open[k.Kid] = p
	return p, nil
}

// newTokenKey generates a key pair and seals it.
func (n *Node) newTokenKey() (*TokenKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub)
	kid := hex.EncodeToString(sum[:8])
	return &TokenKey{Kid: kid, Public: pub, Sealed: n.tokens.seal(kid, priv), Created: now()}, nil
}

// EnsureTokenKey makes sure the cluster has a token signing key; the first
// node to find none creates it.
func (n *Node) EnsureTokenKey(ctx context.Context) error {
	if _, err := n.fsm.currentTokenKey(); err == nil {
		return nil
	}
	k, err := n.newTokenKey()
	if err != nil {
		return err
	}
	return n.propose(ctx, command{Op: opPutTokenKey, TokenKey: k, Create: true, Time: k.Created})
}

// RotateTokenKey makes a new signing key current. Tokens signed with the
// previous keys stay valid until they expire (the last few keys are kept).
func (n *Node) RotateTokenKey(ctx context.Context) (string, error) {
	k, err := n.newTokenKey()
	if err != nil {
		return "", err
	}
	err = n.propose(ctx, command{Op: opPutTokenKey, TokenKey: k, Time: k.Created,
		Audit: event(ctx, policy.AuditCreate, policy.AuditTokenKey, k.Kid, "", "rotation")})
	return k.Kid, err
}

// TokenKeys lists the token signing keys the cluster keeps (never the
// keys themselves), newest first.
func (n *Node) TokenKeys(ctx context.Context) ([]policy.SigningKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.tokenKeys()
}

// rotateTokenKeys makes a new signing key current when the current one is
// older than TokenKeyRotation: the leader checks every tokenRotationCheck.
func (n *Node) rotateTokenKeys(ctx context.Context) {
	if n.cfg.TokenKeyRotation <= 0 {
		return
	}
	t := time.NewTicker(tokenRotationCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.IsLeader() {
			continue
		}
		k, err := n.fsm.currentTokenKey()
		if err != nil || time.Since(time.Unix(0, k.Created)) < n.cfg.TokenKeyRotation {
			continue
		}
		actx := policy.WithActor(ctx, policy.Actor{Name: "system"})
		if kid, err := n.RotateTokenKey(actx); err != nil {
			n.logger.Warn("rotate the token signing key", "error", err)
		} else {
			n.logger.Info("rotated the token signing key", "kid", kid, "previous", k.Kid)
		}
	}
}

// tokenRotationCheck is how often the leader looks at the signing key's
// age.
const tokenRotationCheck = 10 * time.Minute

// SigningKey returns the current token signing key.
func (n *Node) SigningKey(ctx context.Context) (kid string, key ed25519.PrivateKey, created time.Time, err error) {
	if err := ctx.Err(); err != nil {
		return "", nil, time.Time{}, err
	}
	k, err := n.fsm.currentTokenKey()
	if err != nil {
		return "", nil, time.Time{}, err
	}
	p, err := n.tokens.unseal(k)
	return k.Kid, p, time.Unix(0, k.Created), err
}

// VerifyKey returns the public token key kid (oci.ErrNotFound for a key
// the cluster does not have, or no longer keeps).
func (n *Node) VerifyKey(kid string) (ed25519.PublicKey, error) {
	k, err := n.fsm.tokenKey(kid)
	if err != nil {
		return nil, err
	}
	if len(k.Public) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("token key %s: bad public key", kid)
	}
	return ed25519.PublicKey(k.Public), nil
}

// --- audit

// Audit returns the newest events that f selects, newest first.
func (n *Node) Audit(ctx context.Context, f policy.AuditFilter) ([]policy.AuditEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.audit(f)
}

// --- retention runs

// PutRetentionRun records a retention run or its progress.
func (n *Node) PutRetentionRun(ctx context.Context, run policy.RetentionRun) error {
	var audit *policy.AuditEvent
	if run.Status != policy.RunRunning {
		audit = event(ctx, policy.AuditRetention, policy.AuditRetPolicy, run.Project, run.Project,
			fmt.Sprintf("%s run %d (dry_run=%t): %d retained, %d deleted %s", run.Trigger, run.ID, run.DryRun, run.Retained, run.Deleted, run.Error))
	}
	return n.propose(ctx, command{Op: opPutRetentionRun, Run: &run, Time: now(), Audit: audit})
}

// RetentionRuns returns the newest runs of project, newest first.
func (n *Node) RetentionRuns(ctx context.Context, project string, count int) ([]policy.RetentionRun, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.retentionRuns(project, count)
}

// RetentionRun returns one run of project.
func (n *Node) RetentionRun(ctx context.Context, project string, id uint64) (policy.RetentionRun, error) {
	return readFound(ctx, n, func() (policy.RetentionRun, error) { return n.fsm.retentionRun(project, id) })
}
