package cluster

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The access state in apply: projects (with their quota, usage,
// immutability rules and retention policy), members, users, robots, token
// signing keys, the audit log and pull counts. Like every op, each reads
// and validates first and writes only once nothing can refuse.

// user is a stored account. Hash is bcrypt; Gen counts password changes,
// so that refresh tokens issued before one stop working.
type user struct {
	Hash     []byte `json:"hash"`
	Admin    bool   `json:"admin,omitempty"`
	ID       uint64 `json:"id,omitempty"`
	Email    string `json:"email,omitempty"`
	RealName string `json:"realname,omitempty"`
	Comment  string `json:"comment,omitempty"`
	Created  int64  `json:"created,omitempty"`
	Updated  int64  `json:"updated,omitempty"`
	Gen      uint64 `json:"gen,omitempty"`
}

func (u user) public(name string) policy.User {
	return policy.User{
		ID: u.ID, Name: name, Email: u.Email, RealName: u.RealName, Comment: u.Comment,
		Admin: u.Admin, Created: u.Created, Updated: u.Updated,
	}
}

// account is u as an authenticated account.
func (u user) account(name string) policy.Account {
	return policy.Account{Principal: policy.Principal{Kind: policy.PrincipalUser, Name: name, Admin: u.Admin}, ID: u.ID, Gen: u.Gen}
}

// robotRecord is a stored robot: its public fields and the SHA-256 of its
// secret (a 256-bit random value, so a fast hash suffices). Gen counts
// secret changes.
type robotRecord struct {
	policy.Robot
	Hash []byte `json:"hash"`
	Gen  uint64 `json:"gen,omitempty"`
}

// account is r as an authenticated account.
func (r robotRecord) account() policy.Account {
	rb := r.Robot
	return policy.Account{Principal: policy.Principal{Kind: policy.PrincipalRobot, Name: rb.Name, Robot: &rb}, ID: rb.ID, Gen: r.Gen}
}

// TokenKey is a signing key of the token service: an Ed25519 key pair
// whose private half is sealed with a key derived from the cluster secret.
type TokenKey struct {
	Kid     string `json:"kid"`
	Public  []byte `json:"public"`
	Sealed  []byte `json:"sealed"`
	Created int64  `json:"created"`
}

// PullCount is a batch of pulls of one manifest.
type PullCount struct {
	Repo   string     `json:"repo"`
	Digest oci.Digest `json:"digest"`
	Count  int64      `json:"count"`
	Last   int64      `json:"last"` // unix nanoseconds
}

// Bounds of the access ops.
const (
	// maxTokenKeys is how many signing keys are kept: the current one and
	// those before it, whose tokens may still be in use.
	maxTokenKeys = 3
	// maxRunsKept is how many retention runs a project keeps.
	maxRunsKept = 50
	// maxAuditBatch bounds the events of one append_audit.
	maxAuditBatch = 5000
	// pruneAuditChunk bounds the events one prune_audit deletes.
	pruneAuditChunk = 10000
)

// Fields of a project that update_project may change.
const (
	FieldPublic    = "public"
	FieldOwner     = "owner"
	FieldQuota     = "quota"
	FieldImmutable = "immutable"
	FieldRetention = "retention"
)

// projectsOn reports whether the state has projects. A state that never
// had one (the state machine's own tests) accepts any repository; once
// there is one, every repository must be in an existing project.
func (w *writer) projectsOn() bool {
	k, _ := w.tx.Bucket(bucketProjects).Cursor().First()
	return k != nil
}

func (w *writer) project(name string) (policy.Project, bool, error) {
	var p policy.Project
	found, err := w.getJSON(bucketProjects, []byte(name), &p)
	return p, found, err
}

// repoProject returns the project of repo; found is false when projects
// are off (see projectsOn). A repository outside any existing project is
// refused with policy.ErrNoProject.
func (w *writer) repoProject(repo string) (p policy.Project, found bool, err error) {
	if !w.projectsOn() {
		return policy.Project{}, false, nil
	}
	name, ok := policy.ProjectOf(repo)
	if !ok {
		return policy.Project{}, false, fmt.Errorf("repository %s names no project (want <project>/<name>): %w", repo, policy.ErrNoProject)
	}
	p, found, err = w.project(name)
	if err != nil {
		return p, false, err
	}
	if !found {
		return p, false, fmt.Errorf("project %s of repository %s: %w", name, repo, policy.ErrNoProject)
	}
	return p, true, nil
}

func (w *writer) usage(project string) (policy.Usage, error) {
	var u policy.Usage
	_, err := w.getJSON(bucketProjectUsage, []byte(project), &u)
	return u, err
}

func (w *writer) blobSize(d oci.Digest) int64 {
	return int64(decodeUint(w.get(bucketBlobSizes, []byte(d))))
}

// usageDelta is what storing r (not stored yet) adds to its project: the
// blobs the project does not reference yet, the manifest, one artifact.
func (w *writer) usageDelta(project string, r oci.Record) policy.Usage {
	d := policy.Usage{Storage: r.Size, Count: 1}
	for _, b := range uniq(r.Blobs) {
		if w.get(bucketProjectBlobs, key(project, string(b))) == nil {
			d.Storage += w.blobSize(b)
		}
	}
	return d
}

// account changes the usage of r's project as index (delta +1) or
// unindex (-1) of r does. Nothing happens without projects.
func (w *writer) account(r oci.Record, delta int) error {
	if !w.projectsOn() {
		return nil
	}
	project, ok := policy.ProjectOf(r.Repo)
	if !ok {
		return nil
	}
	u, err := w.usage(project)
	if err != nil {
		return err
	}
	sign := int64(delta)
	u.Count += sign
	u.Storage += sign*r.Size + w.countBlobs(project, r.Blobs, delta)
	u.Count, u.Storage = max(u.Count, 0), max(u.Storage, 0)
	w.putJSON(bucketProjectUsage, []byte(project), u)
	return nil
}

// countBlobs changes by delta (+1 index, -1 unindex) the count of
// project's manifests that reference each of blobs, and returns the
// storage that changes with it: the size of each blob the project starts
// or stops referencing.
func (w *writer) countBlobs(project string, blobs []oci.Digest, delta int) int64 {
	var storage int64
	for _, b := range uniq(blobs) {
		k := key(project, string(b))
		before := decodeUint(w.get(bucketProjectBlobs, k))
		w.add(bucketProjectBlobs, k, delta)
		if (delta > 0 && before == 0) || (delta < 0 && before == 1) {
			storage += int64(delta) * w.blobSize(b)
		}
	}
	return storage
}

// checkPush refuses storing r (with tag, "" for none) when it would move
// an immutable tag or take its project over quota, and returns the
// project's usage before and after it, for the warning event.
func (w *writer) checkPush(r oci.Record, tag string, found bool) (quotaCheck, error) {
	p, ok, err := w.repoProject(r.Repo)
	if err != nil || !ok {
		return quotaCheck{}, err
	}
	if tag != "" {
		if cur := oci.Digest(w.get(bucketTags, key(r.Repo, tag))); cur != "" && cur != r.Digest {
			if rule, imm := policy.Immutable(p.Immutable, r.Repo, tag); imm {
				return quotaCheck{}, fmt.Errorf("%s:%s points to %s and matches immutability rule %d (repos %q, tags %q): %w",
					r.Repo, tag, cur, rule.ID, rule.Repos, rule.Tags, policy.ErrImmutable)
			}
		}
	}
	if found {
		return quotaCheck{}, nil
	}
	u, err := w.usage(p.Name)
	if err != nil {
		return quotaCheck{}, err
	}
	delta := w.usageDelta(p.Name, r)
	if what, over := p.Quota.Exceeds(u, delta); over {
		limit := p.Quota.Storage
		used, add := u.Storage, delta.Storage
		if what == "count" {
			limit, used, add = p.Quota.Count, u.Count, delta.Count
		}
		return quotaCheck{}, fmt.Errorf("project %s: adding %d to the %s used (%d) would exceed the limit of %d: %w",
			p.Name, add, what, used, limit, policy.ErrQuotaExceeded)
	}
	after := policy.Usage{Storage: u.Storage + delta.Storage, Count: u.Count + delta.Count}
	return quotaCheck{project: p, before: u, after: after}, nil
}

// quotaCheck is what checkPush learnt, for warnQuota.
type quotaCheck struct {
	project       policy.Project
	before, after policy.Usage
}

// warnQuota records a quota event when a push crossed the warning
// threshold of its project's quota.
func (w *writer) warnQuota(q quotaCheck, actor policy.AuditEvent) {
	if q.project.Name == "" || !q.project.Quota.CrossesWarning(q.before, q.after) {
		return
	}
	w.appendEvent(policy.AuditEvent{
		Actor: actor.Actor, Addr: actor.Addr, Op: policy.AuditQuota, Resource: policy.AuditQuotaRes,
		Target: q.project.Name, Project: q.project.Name,
		Detail: fmt.Sprintf("warning: usage reached %d%% of a limit (storage %d of %d bytes, %d of %d artifacts)",
			policy.QuotaWarnPercent, q.after.Storage, q.project.Quota.Storage, q.after.Count, q.project.Quota.Count),
	})
}

// checkImmutableDelete refuses removing tags of repo that an immutability
// rule of its project protects.
func (w *writer) checkImmutableDelete(repo string, tags []string) error {
	p, ok, err := w.repoProject(repo)
	if errors.Is(err, policy.ErrNoProject) {
		return nil // deleting outside any project is always allowed
	}
	if err != nil || !ok {
		return err
	}
	for _, t := range tags {
		if rule, imm := policy.Immutable(p.Immutable, repo, t); imm {
			return fmt.Errorf("%s:%s matches immutability rule %d (repos %q, tags %q): %w",
				repo, t, rule.ID, rule.Repos, rule.Tags, policy.ErrImmutable)
		}
	}
	return nil
}

// appendEvent writes one audit event with the next id, at the command's
// time unless it has one, and indexes it by project.
func (w *writer) appendEvent(e policy.AuditEvent) {
	e = e.Clip()
	e.ID = w.nextID(metaAuditSeq)
	if e.Time == 0 {
		e.Time = w.now
	}
	if e.Count == 0 {
		e.Count = 1
	}
	k := idKey(e.ID)
	w.putJSON(bucketAudit, k, e)
	if e.Project != "" {
		w.put(bucketAuditProject, append(prefix(e.Project), k...), []byte{})
	}
}

// audit writes the command's own event, if it carries one.
func (w *writer) audit(c command) {
	if c.Audit != nil {
		w.appendEvent(*c.Audit)
	}
}

// checkText refuses strings that could break composite keys.
func checkText(what, s string) error {
	if hasSep(s) {
		return badf("%s holds a NUL byte", what)
	}
	return nil
}

func (w *writer) putProject(c command) error {
	in := c.Project
	if in == nil {
		return badf("put_project without a project")
	}
	if err := policy.ValidateProjectName(in.Name); err != nil {
		return err
	}
	cur, found, err := w.project(in.Name)
	if err != nil {
		return err
	}
	var p policy.Project
	switch {
	case c.Create && found:
		return fmt.Errorf("project %s: %w", in.Name, policy.ErrExists)
	case c.Create:
		p = *in
		p.Created, p.Updated = c.Time, c.Time
		p.NextRuleID = 0
		p.Immutable = nil
		if p.Quota == (policy.Quota{}) {
			p.Quota = policy.NoQuota
		}
		if err := numberRules(&p, in.Immutable); err != nil {
			return err
		}
	case !found:
		return fmt.Errorf("project %s: %w", in.Name, policy.ErrNoProject)
	case c.IfUpdated != 0 && cur.Updated != c.IfUpdated:
		return fmt.Errorf("project %s changed since it was read; read it again: %w", in.Name, oci.ErrPreconditionFailed)
	default:
		p = cur
		p.Updated = c.Time
		for _, f := range c.Fields {
			switch f {
			case FieldPublic:
				p.Public = in.Public
			case FieldOwner:
				p.Owner = in.Owner
			case FieldQuota:
				p.Quota = in.Quota
			case FieldImmutable:
				p.Immutable = nil
				if err := numberRules(&p, in.Immutable); err != nil {
					return err
				}
			case FieldRetention:
				p.Retention = in.Retention
			default:
				return badf("unknown project field %q", f)
			}
		}
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if err := checkText("owner", p.Owner); err != nil {
		return err
	}
	if !found {
		p.ID = w.nextID(metaProjectSeq)
		w.put(bucketProjectIDs, idKey(p.ID), []byte(p.Name))
		if err := w.recount(p.Name); err != nil {
			return err
		}
	}
	w.putJSON(bucketProjects, []byte(p.Name), p)
	w.audit(c)
	return nil
}

// numberRules gives p the immutability rules in, numbering those without
// an id (ids stay stable across updates, so a rule can be deleted by id).
func numberRules(p *policy.Project, in []policy.ImmutableRule) error {
	seen := map[uint64]bool{}
	for _, r := range in {
		if r.ID != 0 {
			if seen[r.ID] {
				return policy.ErrInvalid
			}
			seen[r.ID] = true
			p.NextRuleID = max(p.NextRuleID, r.ID)
		}
	}
	for _, r := range in {
		if r.ID == 0 {
			p.NextRuleID++
			r.ID = p.NextRuleID
		}
		p.Immutable = append(p.Immutable, r)
	}
	return nil
}

// recount computes a new project's usage from the repositories it already
// holds (a project created over existing content, as library is on an
// upgraded cluster). Blob sizes come from blob_sizes; blobs linked before
// it existed count as 0 bytes.
func (w *writer) recount(project string) error {
	var u policy.Usage
	p := []byte(project + "/")
	c := w.tx.Bucket(bucketManifests).Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		var r oci.Record
		if err := json.Unmarshal(v, &r); err != nil {
			return &storageError{err: fmt.Errorf("decode manifest %q: %w", k, err)}
		}
		u.Count++
		u.Storage += r.Size + w.countBlobs(project, r.Blobs, +1)
	}
	w.putJSON(bucketProjectUsage, []byte(project), u)
	return nil
}

func (w *writer) deleteProject(c command) error {
	name := c.Name
	if err := policy.ValidateProjectName(name); err != nil {
		return err
	}
	p, found, err := w.project(name)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("project %s: %w", name, oci.ErrNotFound)
	}
	rp := []byte(name + "/")
	if k, _ := w.tx.Bucket(bucketRepos).Cursor().Seek(rp); k != nil && bytes.HasPrefix(k, rp) {
		return fmt.Errorf("project %s still holds repositories (%s); delete them first: %w", name, k, oci.ErrDenied)
	}
	mp := prefix(name)
	for _, k := range w.keysWithPrefix(bucketMembers, mp) {
		w.del(bucketMembers, k)
		w.del(bucketMembersByUser, key(string(k[len(mp):]), name))
	}
	rb := []byte(policy.RobotName(name, ""))
	for _, k := range w.keysWithPrefix(bucketRobots, rb) {
		var r robotRecord
		if _, err := w.getJSON(bucketRobots, k, &r); err != nil {
			return err
		}
		w.del(bucketRobotIDs, idKey(r.ID))
		w.del(bucketRobots, k)
	}
	for _, k := range w.keysWithPrefix(bucketProjectBlobs, mp) {
		w.del(bucketProjectBlobs, k)
	}
	for _, k := range w.keysWithPrefix(bucketRetention, mp) {
		w.del(bucketRetention, k)
	}
	w.del(bucketProjectUsage, []byte(name))
	w.del(bucketProjectIDs, idKey(p.ID))
	w.del(bucketProjects, []byte(name))
	w.audit(c)
	return nil
}

func (w *writer) user(name string) (user, bool, error) {
	var u user
	found, err := w.getJSON(bucketUsers, []byte(name), &u)
	return u, found, err
}

func (w *writer) putMember(c command) error {
	m := c.Member
	if m == nil {
		return badf("put_member without a member")
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if _, found, err := w.project(m.Project); err != nil || !found {
		if err != nil {
			return err
		}
		return fmt.Errorf("project %s: %w", m.Project, oci.ErrNotFound)
	}
	if _, found, err := w.user(m.User); err != nil || !found {
		if err != nil {
			return err
		}
		return fmt.Errorf("user %s: %w", m.User, oci.ErrNotFound)
	}
	k := key(m.Project, m.User)
	if c.Create && w.get(bucketMembers, k) != nil {
		return fmt.Errorf("%s is a member of %s: %w", m.User, m.Project, policy.ErrExists)
	}
	if !c.Create && w.get(bucketMembers, k) == nil {
		return fmt.Errorf("%s is not a member of %s: %w", m.User, m.Project, oci.ErrNotFound)
	}
	w.put(bucketMembers, k, []byte(m.Role))
	w.put(bucketMembersByUser, key(m.User, m.Project), []byte{})
	w.audit(c)
	return nil
}

func (w *writer) deleteMember(c command) error {
	if err := checkText("project", c.Repo); err != nil {
		return err
	}
	if err := checkText("user", c.Name); err != nil {
		return err
	}
	k := key(c.Repo, c.Name)
	if w.get(bucketMembers, k) == nil {
		return fmt.Errorf("%s is not a member of %s: %w", c.Name, c.Repo, oci.ErrNotFound)
	}
	w.del(bucketMembers, k)
	w.del(bucketMembersByUser, key(c.Name, c.Repo))
	w.audit(c)
	return nil
}

// admins counts the system administrators.
func (w *writer) admins() (int, error) {
	n := 0
	err := w.tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
		var u user
		if err := json.Unmarshal(v, &u); err != nil {
			return &storageError{err: fmt.Errorf("decode user %q: %w", k, err)}
		}
		if u.Admin {
			n++
		}
		return nil
	})
	return n, err
}

// putUser creates or updates an account's password and admin flag, keeping
// its profile (the admin account set up at start).
func (w *writer) putUser(c command) error {
	name := c.Name
	if name == "" || len(name) > maxUserName || hasSep(name) {
		return badf("user name must be 1 to %d bytes", maxUserName)
	}
	if len(c.Hash) == 0 {
		return badf("user %s without a password hash", name)
	}
	u, found, err := w.user(name)
	if err != nil {
		return err
	}
	if found && !bytes.Equal(u.Hash, c.Hash) {
		u.Gen++
	}
	u.Hash, u.Admin = c.Hash, c.Admin
	if !found || u.ID == 0 {
		u.ID = w.nextID(metaUserSeq)
		w.put(bucketUserIDs, idKey(u.ID), []byte(name))
	}
	if u.Created == 0 {
		u.Created = c.Time
	}
	u.Updated = c.Time
	w.putJSON(bucketUsers, []byte(name), u)
	w.audit(c)
	return nil
}

func (w *writer) createUser(c command) error {
	in := c.User
	if in == nil {
		return badf("create_user without a user")
	}
	if err := in.Validate(); err != nil {
		return err
	}
	if len(c.Hash) == 0 {
		return badf("user %s without a password hash", in.Name)
	}
	if _, found, err := w.user(in.Name); err != nil || found {
		if err != nil {
			return err
		}
		return fmt.Errorf("user %s: %w", in.Name, policy.ErrExists)
	}
	u := user{
		Hash: c.Hash, Admin: c.Admin, Email: in.Email, RealName: in.RealName, Comment: in.Comment,
		Created: c.Time, Updated: c.Time,
	}
	u.ID = w.nextID(metaUserSeq)
	w.put(bucketUserIDs, idKey(u.ID), []byte(in.Name))
	w.putJSON(bucketUsers, []byte(in.Name), u)
	w.audit(c)
	return nil
}

// existingUser reads user name, refusing a missing one.
func (w *writer) existingUser(name string) (user, error) {
	if err := checkText("user", name); err != nil {
		return user{}, err
	}
	u, found, err := w.user(name)
	if err != nil {
		return user{}, err
	}
	if !found {
		return user{}, fmt.Errorf("user %s: %w", name, oci.ErrNotFound)
	}
	return u, nil
}

// updateUser changes a user's profile: email, real name, comment. Never
// the admin flag or the password, whatever the command carries.
func (w *writer) updateUser(c command) error {
	in := c.User
	if in == nil {
		return badf("update_user without a user")
	}
	if err := in.Validate(); err != nil {
		return err
	}
	u, err := w.existingUser(in.Name)
	if err != nil {
		return err
	}
	u.Email, u.RealName, u.Comment, u.Updated = in.Email, in.RealName, in.Comment, c.Time
	w.putJSON(bucketUsers, []byte(in.Name), u)
	w.audit(c)
	return nil
}

func (w *writer) setPassword(c command) error {
	u, err := w.existingUser(c.Name)
	if err != nil {
		return err
	}
	if len(c.Hash) == 0 {
		return badf("set_password without a hash")
	}
	u.Hash, u.Updated = c.Hash, c.Time
	u.Gen++
	w.putJSON(bucketUsers, []byte(c.Name), u)
	w.audit(c)
	return nil
}

func (w *writer) setAdmin(c command) error {
	u, err := w.existingUser(c.Name)
	if err != nil {
		return err
	}
	if u.Admin && !c.Admin {
		n, err := w.admins()
		if err != nil {
			return err
		}
		if n <= 1 {
			return fmt.Errorf("%s is the last system administrator: %w", c.Name, oci.ErrDenied)
		}
	}
	u.Admin, u.Updated = c.Admin, c.Time
	w.putJSON(bucketUsers, []byte(c.Name), u)
	w.audit(c)
	return nil
}

func (w *writer) deleteUser(c command) error {
	u, err := w.existingUser(c.Name)
	if err != nil {
		return err
	}
	if u.Admin {
		n, err := w.admins()
		if err != nil {
			return err
		}
		if n <= 1 {
			return fmt.Errorf("%s is the last system administrator: %w", c.Name, oci.ErrDenied)
		}
	}
	p := prefix(c.Name)
	for _, k := range w.keysWithPrefix(bucketMembersByUser, p) {
		w.del(bucketMembers, key(string(k[len(p):]), c.Name))
		w.del(bucketMembersByUser, k)
	}
	w.del(bucketUserIDs, idKey(u.ID))
	w.del(bucketUsers, []byte(c.Name))
	w.audit(c)
	return nil
}

func (w *writer) robot(name string) (robotRecord, bool, error) {
	var r robotRecord
	found, err := w.getJSON(bucketRobots, []byte(name), &r)
	return r, found, err
}

// putRobot creates a robot (Create, with Hash) or updates one: its
// description, permissions, expiry and disabled flag, and its secret when
// the command carries a new Hash.
func (w *writer) putRobot(c command) error {
	in := c.Robot
	if in == nil {
		return badf("put_robot without a robot")
	}
	if err := in.Validate(); err != nil {
		return err
	}
	if err := checkText("robot description", in.Description+in.Creator); err != nil {
		return err
	}
	for _, p := range in.Permissions {
		if p.Namespace == policy.AllProjects {
			continue
		}
		if _, found, err := w.project(p.Namespace); err != nil || !found {
			if err != nil {
				return err
			}
			return fmt.Errorf("project %s: %w", p.Namespace, policy.ErrNoProject)
		}
	}
	cur, found, err := w.robot(in.Name)
	if err != nil {
		return err
	}
	var r robotRecord
	switch {
	case c.Create && found:
		return fmt.Errorf("robot %s: %w", in.Name, policy.ErrExists)
	case c.Create:
		if len(c.Hash) == 0 {
			return badf("robot %s without a secret hash", in.Name)
		}
		r = robotRecord{Robot: *in, Hash: c.Hash}
		r.Created, r.Updated = c.Time, c.Time
		r.ID = w.nextID(metaRobotSeq)
		w.put(bucketRobotIDs, idKey(r.ID), []byte(in.Name))
	case !found:
		return fmt.Errorf("robot %s: %w", in.Name, oci.ErrNotFound)
	default:
		if cur.Level != in.Level || cur.Project != in.Project {
			return fmt.Errorf("robot %s: its level and project cannot change: %w", in.Name, policy.ErrInvalid)
		}
		r = cur
		r.Description, r.Permissions, r.Expires, r.Disabled = in.Description, in.Permissions, in.Expires, in.Disabled
		r.Updated = c.Time
		if len(c.Hash) > 0 {
			r.Hash = c.Hash
			r.Gen++
		}
	}
	w.putJSON(bucketRobots, []byte(in.Name), r)
	w.audit(c)
	return nil
}

func (w *writer) deleteRobot(c command) error {
	if err := checkText("robot", c.Name); err != nil {
		return err
	}
	r, found, err := w.robot(c.Name)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("robot %s: %w", c.Name, oci.ErrNotFound)
	}
	w.del(bucketRobotIDs, idKey(r.ID))
	w.del(bucketRobots, []byte(c.Name))
	w.audit(c)
	return nil
}

// putTokenKey adds a signing key and makes it current, keeping the newest
// maxTokenKeys. With Create it does nothing when a current key exists (two
// nodes that both found none at start).
func (w *writer) putTokenKey(c command) error {
	k := c.TokenKey
	if k == nil || k.Kid == "" || len(k.Kid) > 128 || hasSep(k.Kid) || len(k.Public) == 0 || len(k.Sealed) == 0 {
		return badf("put_token_key needs a kid, a public key and a sealed private key")
	}
	if c.Create && w.get(bucketMeta, metaTokenKey) != nil {
		return nil
	}
	if w.get(bucketTokenKeys, []byte(k.Kid)) != nil {
		return fmt.Errorf("token key %s: %w", k.Kid, policy.ErrExists)
	}
	var keys []TokenKey
	err := w.tx.Bucket(bucketTokenKeys).ForEach(func(kk, v []byte) error {
		var t TokenKey
		if err := json.Unmarshal(v, &t); err != nil {
			return &storageError{err: fmt.Errorf("decode token key %q: %w", kk, err)}
		}
		keys = append(keys, t)
		return nil
	})
	if err != nil {
		return err
	}
	// Newest first; the oldest beyond the bound go.
	slices.SortFunc(keys, func(a, b TokenKey) int {
		return cmp.Or(cmp.Compare(b.Created, a.Created), cmp.Compare(b.Kid, a.Kid))
	})
	for i, old := range keys {
		if i >= maxTokenKeys-1 {
			w.del(bucketTokenKeys, []byte(old.Kid))
		}
	}
	w.putJSON(bucketTokenKeys, []byte(k.Kid), k)
	w.put(bucketMeta, metaTokenKey, []byte(k.Kid))
	w.audit(c)
	return nil
}

// appendAudit writes a batch of events and pull counts.
func (w *writer) appendAudit(c command) error {
	if len(c.Events) > maxAuditBatch || len(c.Pulls) > maxAuditBatch {
		return badf("append_audit of more than %d events or pulls", maxAuditBatch)
	}
	for _, p := range c.Pulls {
		if err := checkRepo(p.Repo); err != nil {
			return err
		}
		if err := checkDigest(p.Digest); err != nil {
			return err
		}
	}
	for _, p := range c.Pulls {
		k := key(p.Repo, string(p.Digest))
		if w.get(bucketManifests, k) == nil {
			continue // deleted since
		}
		n, last := decodePair(w.get(bucketPulls, k))
		n += uint64(max(p.Count, 0))
		last = max(last, uint64(max(p.Last, 0)))
		w.put(bucketPulls, k, encodePair(n, last))
	}
	for _, e := range c.Events {
		w.appendEvent(e)
	}
	return nil
}

// auditExpired reports whether a prune that keeps the newest keep events
// (0: no bound) and none older than before (0: no bound) drops e, when
// the newest id is seq. The log holds every id from its oldest to seq
// (ids are a sequence, and pruning takes the oldest first), so the newest
// keep are those above seq-keep: no count of the log is needed.
func auditExpired(e policy.AuditEvent, seq uint64, keep int, before int64) bool {
	if keep > 0 && seq > uint64(keep) && e.ID <= seq-uint64(keep) {
		return true
	}
	return before != 0 && e.Time < before
}

// pruneAudit deletes the oldest events while auditExpired, at most
// pruneAuditChunk per command: those before c.Time and those beyond the
// newest c.Keep.
func (w *writer) pruneAudit(c command) error {
	seq := decodeUint(w.get(bucketMeta, metaAuditSeq))
	var drop []policy.AuditEvent
	cur := w.tx.Bucket(bucketAudit).Cursor()
	for k, v := cur.First(); k != nil && len(drop) < pruneAuditChunk; k, v = cur.Next() {
		var e policy.AuditEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return &storageError{err: fmt.Errorf("decode audit event %x: %w", k, err)}
		}
		if !auditExpired(e, seq, c.Keep, c.Time) {
			break
		}
		drop = append(drop, e)
	}
	for _, e := range drop {
		k := idKey(e.ID)
		w.del(bucketAudit, k)
		if e.Project != "" {
			w.del(bucketAuditProject, append(prefix(e.Project), k...))
		}
	}
	return nil
}

// retentionKey orders a project's runs by id.
func retentionKey(project string, id uint64) []byte {
	return append(prefix(project), idKey(id)...)
}

// putRetentionRun records a retention run, or its progress (same id),
// keeping the newest maxRunsKept of the project. The proposer chooses the
// id (its start time), so that it knows it.
func (w *writer) putRetentionRun(c command) error {
	r := c.Run
	if r == nil {
		return badf("put_retention_run without a run")
	}
	if err := policy.ValidateProjectName(r.Project); err != nil {
		return err
	}
	if _, found, err := w.project(r.Project); err != nil || !found {
		if err != nil {
			return err
		}
		return fmt.Errorf("project %s: %w", r.Project, oci.ErrNotFound)
	}
	if len(r.Decisions) > policy.MaxRunDecisions {
		return badf("a retention run keeps at most %d decisions", policy.MaxRunDecisions)
	}
	if r.ID == 0 {
		return badf("put_retention_run without an id")
	}
	run := *r
	w.putJSON(bucketRetention, retentionKey(run.Project, run.ID), run)
	keys := w.keysWithPrefix(bucketRetention, prefix(run.Project))
	for i := 0; i < len(keys)-maxRunsKept; i++ {
		w.del(bucketRetention, keys[i])
	}
	w.audit(c)
	return nil
}
