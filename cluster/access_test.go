package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

const t0 = int64(1700000000000000000)

func projectCmd(name string, public bool, q policy.Quota) command {
	return command{Op: opPutProject, Create: true, Time: t0,
		Project: &policy.Project{Name: name, Public: public, Quota: q}}
}

// linkSized links blob d of size into repo.
func (h *harness) linkSized(repo string, d oci.Digest, size int64) {
	h.t.Helper()
	if err := h.applyRaw(encode(h.t, command{Op: opLinkBlob, Repo: repo, Digest: d, Size: size, Time: t0})); err != nil {
		h.t.Fatalf("link %s: %v", d, err)
	}
}

// push stores a manifest with blobs of the given sizes (linked first)
// under tag.
func (h *harness) push(repo, seed, tag string, blobs map[oci.Digest]int64) (oci.Record, error) {
	h.t.Helper()
	var ds []oci.Digest
	for d, size := range blobs {
		h.linkSized(repo, d, size)
		ds = append(ds, d)
	}
	rec, payload := manifest(repo, seed, ds, nil, "")
	return rec, h.applyRaw(encode(h.t, putCmd(rec, payload, tag)))
}

// mustRaw applies c as it is (apply links a manifest's blobs first, with
// size 1).
func (h *harness) mustRaw(c command) {
	h.t.Helper()
	if err := h.applyRaw(encode(h.t, c)); err != nil {
		h.t.Fatalf("apply %s: %v", c.Op, err)
	}
}

func (h *harness) usage(project string) policy.Usage {
	h.t.Helper()
	u, err := h.f.usage(project)
	if err != nil {
		h.t.Fatal(err)
	}
	return u
}

// checkUsage recomputes every project's usage from its manifests: each
// blob once per project, plus manifest sizes, and one per manifest.
func checkUsage(t testing.TB, f *fsm) {
	t.Helper()
	err := f.view(func(tx *bbolt.Tx) error {
		want := map[string]policy.Usage{}
		seen := map[string]bool{}
		err := tx.Bucket(bucketProjects).ForEach(func(k, _ []byte) error {
			want[string(k)] = policy.Usage{}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketManifests).ForEach(func(k, v []byte) error {
			var r oci.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			p, ok := policy.ProjectOf(r.Repo)
			if _, exists := want[p]; !ok || !exists {
				return nil
			}
			u := want[p]
			u.Count++
			u.Storage += r.Size
			for _, b := range uniq(r.Blobs) {
				if !seen[p+sep+string(b)] {
					seen[p+sep+string(b)] = true
					u.Storage += int64(decodeUint(tx.Bucket(bucketBlobSizes).Get([]byte(b))))
				}
			}
			want[p] = u
			return nil
		})
		if err != nil {
			return err
		}
		for p, w := range want {
			var got policy.Usage
			if _, err := decodeAt(tx, bucketProjectUsage, []byte(p), &got); err != nil {
				return err
			}
			if got != w {
				return fmt.Errorf("project %s usage %+v, recomputed %+v", p, got, w)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("usage invariant: %v", err)
	}
}

// checkAudit checks what prune_audit relies on: the log holds every id
// from its oldest to the sequence's last, and the project index lists
// exactly the events that name a project.
func checkAudit(t testing.TB, f *fsm) {
	t.Helper()
	err := f.view(func(tx *bbolt.Tx) error {
		seq := decodeUint(tx.Bucket(bucketMeta).Get(metaAuditSeq))
		var ids []uint64
		byProject := map[string]bool{}
		err := tx.Bucket(bucketAudit).ForEach(func(k, v []byte) error {
			var e policy.AuditEvent
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if !bytes.Equal(k, idKey(e.ID)) {
				return fmt.Errorf("audit key %x holds event %d", k, e.ID)
			}
			ids = append(ids, e.ID)
			if e.Project != "" {
				byProject[string(append(prefix(e.Project), k...))] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, id := range ids {
			if id != seq-uint64(len(ids)-1-i) {
				return fmt.Errorf("audit ids %v are not the run up to %d", ids, seq)
			}
		}
		n := 0
		err = tx.Bucket(bucketAuditProject).ForEach(func(k, _ []byte) error {
			n++
			if !byProject[string(k)] {
				return fmt.Errorf("audit_project %q names no event of its project", k)
			}
			return nil
		})
		if err == nil && n != len(byProject) {
			err = fmt.Errorf("audit_project holds %d entries, want %d", n, len(byProject))
		}
		return err
	})
	if err != nil {
		t.Fatalf("audit invariant: %v", err)
	}
}

func TestProjectsRequiredOnceThereIsOne(t *testing.T) {
	h := newHarness(t)
	// Without projects any repository is accepted (the state machine's
	// own tests, and clusters from before projects).
	if _, err := h.push("free/app", "a", "v1", map[oci.Digest]int64{blobDigest(1): 10}); err != nil {
		t.Fatal(err)
	}
	h.mustApply(projectCmd("library", true, policy.NoQuota))
	_, err := h.push("other/app", "b", "v1", nil)
	if !errors.Is(err, policy.ErrNoProject) || !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("push outside a project = %v, want ErrNoProject", err)
	}
	err = h.applyRaw(encode(t, command{Op: opLinkBlob, Repo: "other/app", Digest: blobDigest(2), Size: 1, Time: t0}))
	if !errors.Is(err, policy.ErrNoProject) {
		t.Fatalf("link outside a project = %v, want ErrNoProject", err)
	}
	if _, err := h.push("library/app", "c", "v1", map[oci.Digest]int64{blobDigest(3): 5}); err != nil {
		t.Fatalf("push into library: %v", err)
	}
	// A project created over existing content counts it.
	h.mustApply(projectCmd("free", false, policy.NoQuota))
	rec, _ := manifest("free/app", "a", []oci.Digest{blobDigest(1)}, nil, "")
	if u := h.usage("free"); u != (policy.Usage{Storage: 10 + rec.Size, Count: 1}) {
		t.Fatalf("free usage %+v", u)
	}
	checkUsage(t, h.f)
	checkInvariants(t, h.f)
}

func TestProjectLifecycle(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("team", false, policy.Quota{}))
	err := h.apply(projectCmd("team", true, policy.NoQuota))
	if !errors.Is(err, policy.ErrExists) {
		t.Fatalf("second create = %v, want ErrExists", err)
	}
	p, err := h.f.project("team")
	if err != nil || p.ID != 1 || p.Public || p.Quota != policy.NoQuota || p.Created != t0 {
		t.Fatalf("project = %+v, %v (a zero quota becomes unlimited)", p, err)
	}
	// An update changes only the fields it names.
	h.mustApply(command{Op: opPutProject, Fields: []string{FieldPublic}, Time: t0 + 1,
		Project: &policy.Project{Name: "team", Public: true, Quota: policy.Quota{Storage: 1}}})
	if p, _ := h.f.project("team"); !p.Public || p.Quota != policy.NoQuota || p.Updated != t0+1 {
		t.Fatalf("after public update: %+v", p)
	}
	err = h.apply(command{Op: opPutProject, Fields: []string{"owner_id"}, Project: &policy.Project{Name: "team"}})
	if !errors.Is(err, ErrBadCommand) {
		t.Fatalf("unknown field = %v", err)
	}
	// Members and robots go with the project; a project with
	// repositories cannot be deleted.
	h.mustApply(command{Op: opPutUser, Name: "alice", Hash: []byte("h")})
	h.mustApply(command{Op: opPutMember, Create: true, Member: &policy.Member{Project: "team", User: "alice", Role: policy.RoleDeveloper}})
	h.mustApply(command{Op: opPutRobot, Create: true, Hash: []byte("s"), Robot: &policy.Robot{
		Name: "robot$team+ci", Level: policy.RobotProject, Project: "team",
		Permissions: []policy.RobotPermission{{Namespace: "team", Access: []policy.Access{{Resource: policy.ResRepository, Action: policy.ActPull}}}},
	}})
	rec, err := h.push("team/app", "x", "v1", map[oci.Digest]int64{blobDigest(1): 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.apply(command{Op: opDeleteProject, Name: "team"}); !errors.Is(err, oci.ErrDenied) {
		t.Fatalf("delete a project with repositories = %v, want ErrDenied", err)
	}
	h.mustApply(command{Op: opDeleteManifest, Repo: "team/app", Digest: rec.Digest})
	if u := h.usage("team"); u != (policy.Usage{}) {
		t.Fatalf("usage after the delete = %+v", u)
	}
	h.mustApply(command{Op: opDeleteProject, Name: "team"})
	if _, err := h.f.project("team"); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("project after delete: %v", err)
	}
	if ms, _ := h.f.memberships("alice"); len(ms) != 0 {
		t.Fatalf("memberships left: %+v", ms)
	}
	if _, err := h.f.robot("robot$team+ci"); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("robot left: %v", err)
	}
	if err := h.apply(command{Op: opDeleteProject, Name: "team"}); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
}

func TestUsageCountsSharedBlobsOnce(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("p", false, policy.NoQuota))
	h.mustApply(projectCmd("q", false, policy.NoQuota))
	shared, own := blobDigest(1), blobDigest(2)
	a, err := h.push("p/a", "a", "v1", map[oci.Digest]int64{shared: 100, own: 7})
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.push("p/b", "b", "v1", map[oci.Digest]int64{shared: 100})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.push("q/c", "c", "", map[oci.Digest]int64{shared: 100}); err != nil {
		t.Fatal(err)
	}
	if u := h.usage("p"); u != (policy.Usage{Storage: 107 + a.Size + b.Size, Count: 2}) {
		t.Fatalf("p usage %+v", u)
	}
	checkUsage(t, h.f)
	h.mustApply(command{Op: opDeleteManifest, Repo: "p/a", Digest: a.Digest})
	if u := h.usage("p"); u != (policy.Usage{Storage: 100 + b.Size, Count: 1}) {
		t.Fatalf("p usage after delete %+v", u)
	}
	checkUsage(t, h.f)
	checkInvariants(t, h.f)
}

func TestQuotaRefusesAndWarns(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("p", false, policy.Quota{Storage: policy.Unlimited, Count: 2}))
	audit := &policy.AuditEvent{Actor: "alice", Op: policy.AuditPush}
	for i := range 2 {
		h.linkSized("p/a", blobDigest(i), 1)
		rec, payload := manifest("p/a", fmt.Sprint(i), []oci.Digest{blobDigest(i)}, nil, "")
		c := putCmd(rec, payload, fmt.Sprint("v", i))
		c.Audit = audit
		h.mustRaw(c)
	}
	before := h.hash()
	_, err := h.push("p/a", "third", "v3", nil)
	if !errors.Is(err, policy.ErrQuotaExceeded) || !errors.Is(err, oci.ErrDenied) {
		t.Fatalf("third artifact = %v, want ErrQuotaExceeded", err)
	}
	if h.hash() != before {
		t.Fatal("a refused push changed the state")
	}
	// Re-tagging an existing artifact adds nothing and is allowed.
	rec, payload := manifest("p/a", "0", []oci.Digest{blobDigest(0)}, nil, "")
	h.mustRaw(putCmd(rec, payload, "again"))

	// Storage: 85% of 1000 crossed by a push records a warning.
	h.mustApply(projectCmd("s", false, policy.Quota{Storage: 1000, Count: policy.Unlimited}))
	h.linkSized("s/a", blobDigest(10), 500)
	r1, p1 := manifest("s/a", "one", []oci.Digest{blobDigest(10)}, nil, "")
	c := putCmd(r1, p1, "v1")
	c.Audit = audit
	h.mustRaw(c)
	h.linkSized("s/a", blobDigest(11), 400)
	r2, p2 := manifest("s/a", "two", []oci.Digest{blobDigest(11)}, nil, "")
	c = putCmd(r2, p2, "v2")
	c.Audit = audit
	h.mustRaw(c)
	events, err := h.f.audit(policy.AuditFilter{Project: "s", Op: policy.AuditQuota, Limit: 10})
	if err != nil || len(events) != 1 || events[0].Actor != "alice" {
		t.Fatalf("quota warnings = %+v, %v", events, err)
	}
	h.linkSized("s/a", blobDigest(12), 200)
	if _, err := h.push("s/a", "three", "v3", map[oci.Digest]int64{blobDigest(12): 200}); !errors.Is(err, policy.ErrQuotaExceeded) {
		t.Fatalf("over storage = %v", err)
	}
	checkUsage(t, h.f)
}

func TestImmutableTags(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("p", false, policy.NoQuota))
	h.mustApply(command{Op: opPutProject, Fields: []string{FieldImmutable}, Project: &policy.Project{Name: "p",
		Immutable: []policy.ImmutableRule{{Repos: "**", Tags: "v*"}, {Repos: "x", Tags: "**", Disabled: true}}}})
	p, _ := h.f.project("p")
	if len(p.Immutable) != 2 || p.Immutable[0].ID != 1 || p.Immutable[1].ID != 2 {
		t.Fatalf("rules not numbered: %+v", p.Immutable)
	}
	v1, err := h.push("p/app", "one", "v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Same digest again: fine. Another digest under v1: refused.
	r, payload := manifest("p/app", "one", nil, nil, "")
	h.mustRaw(putCmd(r, payload, "v1"))
	if _, err := h.push("p/app", "two", "v1", nil); !errors.Is(err, policy.ErrImmutable) {
		t.Fatalf("moving v1 = %v, want ErrImmutable", err)
	}
	if _, err := h.push("p/app", "two", "latest", nil); err != nil {
		t.Fatalf("a mutable tag: %v", err)
	}
	if err := h.apply(command{Op: opDeleteTag, Repo: "p/app", Tag: "v1"}); !errors.Is(err, policy.ErrImmutable) {
		t.Fatalf("deleting v1 = %v", err)
	}
	if err := h.apply(command{Op: opDeleteManifest, Repo: "p/app", Digest: v1.Digest}); !errors.Is(err, policy.ErrImmutable) {
		t.Fatalf("deleting v1's manifest = %v", err)
	}
	// A cosign signature tag is never immutable (its glob would match).
	h.mustApply(command{Op: opPutProject, Fields: []string{FieldImmutable}, Project: &policy.Project{Name: "p",
		Immutable: []policy.ImmutableRule{{Repos: "**", Tags: "v*"}, {Repos: "**", Tags: "sha256-*"}}}})
	sig := policy.AccessoryTag(v1.Digest, ".sig")
	if _, err := h.push("p/app", "sig1", sig, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.push("p/app", "sig2", sig, nil); err != nil {
		t.Fatalf("re-signing moves an accessory tag: %v", err)
	}
	// Removing the rule lifts it.
	h.mustApply(command{Op: opPutProject, Fields: []string{FieldImmutable}, Project: &policy.Project{Name: "p"}})
	h.mustApply(command{Op: opDeleteTag, Repo: "p/app", Tag: "v1"})
	checkInvariants(t, h.f)
}

func TestUsersAndAdmins(t *testing.T) {
	h := newHarness(t)
	h.mustApply(command{Op: opPutUser, Name: "admin", Hash: []byte("h1"), Admin: true, Time: t0})
	h.mustApply(command{Op: opCreateUser, Hash: []byte("h"), Time: t0, User: &policy.User{Name: "bob", Email: "bob@example.com"}})
	if err := h.apply(command{Op: opCreateUser, Hash: []byte("h"), User: &policy.User{Name: "bob"}}); !errors.Is(err, policy.ErrExists) {
		t.Fatalf("duplicate user = %v", err)
	}
	// A profile update carries no admin flag, whatever the command says.
	h.mustApply(command{Op: opUpdateUser, Admin: true, User: &policy.User{Name: "bob", Admin: true, RealName: "Bob"}})
	u, _, _ := h.f.user("bob")
	if u.Admin || u.RealName != "Bob" || u.Email != "" {
		t.Fatalf("after profile update: %+v", u)
	}
	// The last administrator can neither lose the flag nor be deleted.
	if err := h.apply(command{Op: opSetAdmin, Name: "admin", Admin: false}); !errors.Is(err, oci.ErrDenied) {
		t.Fatalf("revoke the last admin = %v", err)
	}
	if err := h.apply(command{Op: opDeleteUser, Name: "admin"}); !errors.Is(err, oci.ErrDenied) {
		t.Fatalf("delete the last admin = %v", err)
	}
	h.mustApply(command{Op: opSetAdmin, Name: "bob", Admin: true})
	h.mustApply(command{Op: opSetAdmin, Name: "admin", Admin: false})
	// Password changes raise the generation; put_user keeps the profile.
	h.mustApply(command{Op: opSetPassword, Name: "bob", Hash: []byte("h2")})
	h.mustApply(command{Op: opPutUser, Name: "bob", Hash: []byte("h3"), Admin: true})
	u, _, _ = h.f.user("bob")
	if u.Gen != 2 || u.RealName != "Bob" || u.ID != 2 {
		t.Fatalf("after password changes: %+v", u)
	}
	// Deleting a user removes its memberships.
	h.mustApply(projectCmd("p", false, policy.NoQuota))
	h.mustApply(command{Op: opPutMember, Create: true, Member: &policy.Member{Project: "p", User: "admin", Role: policy.RoleGuest}})
	if err := h.apply(command{Op: opPutMember, Create: true, Member: &policy.Member{Project: "p", User: "nobody", Role: policy.RoleGuest}}); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("member of a missing user = %v", err)
	}
	h.mustApply(command{Op: opDeleteUser, Name: "admin"})
	if ms, _ := h.f.members("p"); len(ms) != 0 {
		t.Fatalf("members left: %+v", ms)
	}
}

func TestRobots(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("a", false, policy.NoQuota))
	pull := []policy.Access{{Resource: policy.ResRepository, Action: policy.ActPull}}
	robot := policy.Robot{Name: "robot$a+ci", Level: policy.RobotProject, Project: "a",
		Permissions: []policy.RobotPermission{{Namespace: "a", Access: pull}}}
	h.mustApply(command{Op: opPutRobot, Create: true, Hash: []byte("s1"), Time: t0, Robot: &robot})
	if err := h.apply(command{Op: opPutRobot, Create: true, Hash: []byte("s1"), Robot: &robot}); !errors.Is(err, policy.ErrExists) {
		t.Fatalf("duplicate robot = %v", err)
	}
	escape := robot
	escape.Permissions = []policy.RobotPermission{{Namespace: "b", Access: pull}}
	if err := h.apply(command{Op: opPutRobot, Robot: &escape}); !errors.Is(err, policy.ErrInvalid) {
		t.Fatalf("a project robot with another project's permission = %v", err)
	}
	sys := policy.Robot{Name: "robot$sync", Level: policy.RobotSystem,
		Permissions: []policy.RobotPermission{{Namespace: "missing", Access: pull}}}
	if err := h.apply(command{Op: opPutRobot, Create: true, Hash: []byte("s"), Robot: &sys}); !errors.Is(err, policy.ErrNoProject) {
		t.Fatalf("a system robot in a missing project = %v", err)
	}
	// An update keeps the secret unless it brings one.
	upd := robot
	upd.Disabled = true
	h.mustApply(command{Op: opPutRobot, Robot: &upd})
	r, _ := h.f.robot("robot$a+ci")
	if string(r.Hash) != "s1" || !r.Disabled || r.Gen != 0 || r.ID != 1 {
		t.Fatalf("after update: %+v", r)
	}
	h.mustApply(command{Op: opPutRobot, Robot: &upd, Hash: []byte("s2")})
	if r, _ := h.f.robot("robot$a+ci"); string(r.Hash) != "s2" || r.Gen != 1 {
		t.Fatalf("after a new secret: %+v", r)
	}
	list, err := h.f.robots("a", "", 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("robots of a = %+v, %v", list, err)
	}
	h.mustApply(command{Op: opDeleteRobot, Name: "robot$a+ci"})
	if err := h.apply(command{Op: opDeleteRobot, Name: "robot$a+ci"}); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
}

func TestTokenKeys(t *testing.T) {
	h := newHarness(t)
	mk := func(kid string, created int64) *TokenKey {
		return &TokenKey{Kid: kid, Public: []byte("pub-" + kid), Sealed: []byte("sealed"), Created: created}
	}
	if _, err := h.f.currentTokenKey(); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("current key of a new state: %v", err)
	}
	h.mustApply(command{Op: opPutTokenKey, Create: true, TokenKey: mk("k1", 1)})
	// A second "ensure" finds a key and does nothing.
	h.mustApply(command{Op: opPutTokenKey, Create: true, TokenKey: mk("k2", 2)})
	if k, err := h.f.currentTokenKey(); err != nil || k.Kid != "k1" {
		t.Fatalf("current = %+v, %v", k, err)
	}
	for i := 2; i <= 5; i++ {
		h.mustApply(command{Op: opPutTokenKey, TokenKey: mk(fmt.Sprint("k", i), int64(i))})
	}
	if k, _ := h.f.currentTokenKey(); k.Kid != "k5" {
		t.Fatalf("current = %s, want k5", k.Kid)
	}
	listed, err := h.f.tokenKeys()
	if err != nil || len(listed) != 3 || listed[0].Kid != "k5" || !listed[0].Current || listed[2].Kid != "k3" || listed[2].Current {
		t.Fatalf("listed keys = %+v, %v; want k5 (current), k4, k3", listed, err)
	}
	for kid, want := range map[string]bool{"k1": false, "k2": false, "k3": true, "k4": true, "k5": true} {
		if _, err := h.f.tokenKey(kid); (err == nil) != want {
			t.Errorf("key %s kept = %v, want %v", kid, err == nil, want)
		}
	}
}

func TestAuditLog(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("p", false, policy.NoQuota))
	var events []policy.AuditEvent
	for i := range 10 {
		project := "p"
		if i%2 == 1 {
			project = ""
		}
		events = append(events, policy.AuditEvent{Time: t0 + int64(i), Actor: fmt.Sprint("u", i%3), Op: policy.AuditLoginFailed, Project: project})
	}
	h.mustApply(command{Op: opAppendAudit, Events: events, Time: t0})
	all, err := h.f.audit(policy.AuditFilter{Limit: 100})
	if err != nil || len(all) != 10 || all[0].ID != 10 || all[9].ID != 1 || all[0].Count != 1 {
		t.Fatalf("all events: %d %v (newest first, ids 10..1)", len(all), err)
	}
	page, _ := h.f.audit(policy.AuditFilter{Limit: 3, Before: 8})
	if len(page) != 3 || page[0].ID != 7 || page[2].ID != 5 {
		t.Fatalf("page before 8 = %+v", page)
	}
	proj, _ := h.f.audit(policy.AuditFilter{Project: "p", Limit: 100})
	if len(proj) != 5 || proj[0].ID != 9 {
		t.Fatalf("project events = %+v", proj)
	}
	projPage, _ := h.f.audit(policy.AuditFilter{Project: "p", Limit: 2, Before: 5})
	if len(projPage) != 2 || projPage[0].ID != 3 || projPage[1].ID != 1 {
		t.Fatalf("project page before 5 = %+v", projPage)
	}
	mine, _ := h.f.audit(policy.AuditFilter{Actor: "u1", Limit: 100})
	if len(mine) != 3 {
		t.Fatalf("u1's events = %+v", mine)
	}
	// Prune by count, then by age.
	h.mustApply(command{Op: opPruneAudit, Keep: 6})
	if all, _ := h.f.audit(policy.AuditFilter{Limit: 100}); len(all) != 6 || all[5].ID != 5 {
		t.Fatalf("after keep 6: %d events", len(all))
	}
	h.mustApply(command{Op: opPruneAudit, Time: t0 + 8})
	if all, _ := h.f.audit(policy.AuditFilter{Limit: 100}); len(all) != 2 {
		t.Fatalf("after the age cut: %+v", all)
	}
	if proj, _ := h.f.audit(policy.AuditFilter{Project: "p", Limit: 100}); len(proj) != 1 || proj[0].ID != 9 {
		t.Fatalf("project index after pruning: %+v", proj)
	}
}

// TestNodePrunesAudit: the leader's pruning keeps the newest
// AuditMaxEvents and none older than AuditRetention, and proposes nothing
// when the log is within its bounds.
func TestNodePrunesAudit(t *testing.T) {
	n := internalNode(t, t.TempDir(), freeLocalAddr(t), func(c *Config) { c.AuditMaxEvents = 10 })
	ctx := t.Context()
	recent := time.Now().UnixNano()
	old := time.Now().Add(-2 * n.cfg.AuditRetention).UnixNano()
	var events []policy.AuditEvent
	for i := range 12 {
		at := recent
		if i < 3 {
			at = old // ids 1 and 2 go by count, 3 by age
		}
		events = append(events, policy.AuditEvent{Time: at, Actor: "u", Op: policy.AuditLoginFailed, Project: "p"})
	}
	if err := n.propose(ctx, command{Op: opAppendAudit, Events: events, Time: recent}); err != nil {
		t.Fatal(err)
	}
	n.pruneAudit(ctx)
	got, err := n.Audit(ctx, policy.AuditFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	if want := []uint64{12, 11, 10, 9, 8, 7, 6, 5, 4}; !slices.Equal(ids, want) {
		t.Fatalf("ids after pruning %v, want %v", ids, want)
	}
	applied := n.AppliedIndex()
	n.pruneAudit(ctx)
	if n.AppliedIndex() != applied {
		t.Fatal("pruning a log within its bounds wrote to the log")
	}
	checkInvariants(t, n.fsm)
}

// TestNodeCheckQuota: an upload is refused early only once its project is
// at a limit; a repository outside any project is left to the push.
func TestNodeCheckQuota(t *testing.T) {
	n := internalNode(t, t.TempDir(), freeLocalAddr(t))
	ctx := t.Context()
	rec, payload := manifest("c/app", "x", nil, nil, "")
	for _, p := range []policy.Project{
		{Name: "c", Quota: policy.Quota{Storage: policy.Unlimited, Count: 1}},
		{Name: "s", Quota: policy.Quota{Storage: rec.Size, Count: policy.Unlimited}},
	} {
		if _, err := n.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := n.CheckQuota(ctx, p.Name+"/app"); err != nil {
			t.Fatalf("empty project %s: %v", p.Name, err)
		}
		r := rec
		r.Repo = p.Name + "/app"
		if err := n.propose(ctx, putCmd(r, payload, "v1")); err != nil {
			t.Fatal(err)
		}
	}
	for repo, want := range map[string]string{
		"c/app":   "holds 1 of its 1 artifacts",
		"c/other": "holds 1 of its 1 artifacts",
		"s/app":   fmt.Sprintf("uses %d of its %d bytes", rec.Size, rec.Size),
	} {
		if err := n.CheckQuota(ctx, repo); !errors.Is(err, policy.ErrQuotaExceeded) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckQuota(%s) = %v, want %q", repo, err, want)
		}
	}
	for _, repo := range []string{"missing/app", "app"} {
		if err := n.CheckQuota(ctx, repo); err != nil {
			t.Errorf("CheckQuota(%s) = %v, want nil", repo, err)
		}
	}
}

func TestPullCountsAndArtifacts(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("p", false, policy.NoQuota))
	rec, err := h.push("p/app", "a", "v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	h.mustApply(command{Op: opAppendAudit, Pulls: []PullCount{
		{Repo: "p/app", Digest: rec.Digest, Count: 3, Last: t0 + 5},
		{Repo: "p/app", Digest: blobDigest(9), Count: 1, Last: t0}, // no such manifest: ignored
	}})
	h.mustApply(command{Op: opAppendAudit, Pulls: []PullCount{{Repo: "p/app", Digest: rec.Digest, Count: 2, Last: t0 + 2}}})
	arts, err := h.f.artifacts("p/app")
	if err != nil || len(arts) != 1 {
		t.Fatalf("artifacts = %+v, %v", arts, err)
	}
	if a := arts[0]; a.PullCount != 5 || a.Pulled != t0+5 || a.Pushed != rec.Created || len(a.Tags) != 1 {
		t.Fatalf("artifact = %+v", a)
	}
	h.mustApply(command{Op: opDeleteManifest, Repo: "p/app", Digest: rec.Digest})
	if h.count(bucketPulls, key("p/app", string(rec.Digest))) != 0 {
		t.Fatal("pull count kept after the delete")
	}
}

func TestRetentionRunsKeptBounded(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("p", false, policy.NoQuota))
	for i := 1; i <= maxRunsKept+5; i++ {
		h.mustApply(command{Op: opPutRetentionRun, Run: &policy.RetentionRun{ID: uint64(i), Project: "p", Status: policy.RunSucceeded}})
	}
	// A project whose runs sort after p's stays out of p's list.
	h.mustApply(projectCmd("q", false, policy.NoQuota))
	h.mustApply(command{Op: opPutRetentionRun, Run: &policy.RetentionRun{ID: 1, Project: "q", Status: policy.RunSucceeded}})
	runs, err := h.f.retentionRuns("p", 1000)
	if err != nil || len(runs) != maxRunsKept || runs[0].ID != maxRunsKept+5 || runs[maxRunsKept-1].ID != 6 {
		t.Fatalf("runs = %d, newest %v, %v", len(runs), runs[0].ID, err)
	}
	if runs, err := h.f.retentionRuns("p", 2); err != nil || len(runs) != 2 || runs[0].ID != maxRunsKept+5 || runs[1].ID != maxRunsKept+4 {
		t.Fatalf("newest 2 runs = %+v, %v", runs, err)
	}
	for _, n := range []int{0, -1} {
		if runs, err := h.f.retentionRuns("p", n); err != nil || len(runs) != 0 {
			t.Fatalf("%d runs = %+v, %v", n, runs, err)
		}
	}
	if _, err := h.f.retentionRun("p", 1); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("oldest run kept: %v", err)
	}
	if err := h.apply(command{Op: opPutRetentionRun, Run: &policy.RetentionRun{Project: "p"}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("a run without id = %v", err)
	}
}

func TestReplicationConfigIsAudited(t *testing.T) {
	h := newHarness(t)
	ev := func(op, res, target string) *policy.AuditEvent {
		return &policy.AuditEvent{Actor: "alice", Addr: "192.0.2.7", Op: op, Resource: res, Target: target}
	}
	h.mustApply(command{Op: opPutEndpoint, Time: t0, Endpoint: &policy.Endpoint{Name: "eu", URL: "https://eu.example", Type: policy.EndpointBerth},
		Audit: ev(policy.AuditUpdate, policy.AuditEndpoint, "eu")})
	h.mustApply(command{Op: opPutRule, Time: t0, Rule: &policy.Rule{Name: "to-eu", Endpoint: "eu", Trigger: policy.TriggerManual},
		Audit: ev(policy.AuditUpdate, policy.AuditReplication, "to-eu")})
	// A refused change records nothing.
	if err := h.apply(command{Op: opDeleteEndpoint, Name: "eu", Audit: ev(policy.AuditDelete, policy.AuditEndpoint, "eu")}); !errors.Is(err, oci.ErrDenied) {
		t.Fatalf("delete an endpoint in use = %v", err)
	}
	h.mustApply(command{Op: opDeleteRule, Name: "to-eu", Time: t0, Audit: ev(policy.AuditDelete, policy.AuditReplication, "to-eu")})
	events, err := h.f.audit(policy.AuditFilter{Actor: "alice", Limit: 10})
	if err != nil || len(events) != 3 {
		t.Fatalf("events = %+v, %v; want 3", events, err)
	}
	if e := events[0]; e.Op != policy.AuditDelete || e.Resource != policy.AuditReplication || e.Addr != "192.0.2.7" {
		t.Fatalf("newest event %+v", e)
	}
}

func TestProjectUpdateIfUnchanged(t *testing.T) {
	h := newHarness(t)
	h.mustApply(projectCmd("p", false, policy.NoQuota))
	p, _ := h.f.project("p")
	rule := []policy.ImmutableRule{{Repos: "**", Tags: "v*"}}
	h.mustApply(command{Op: opPutProject, Fields: []string{FieldImmutable}, Time: t0 + 1, IfUpdated: p.Updated,
		Project: &policy.Project{Name: "p", Immutable: rule}})
	// A second writer that read the project before the first one wrote.
	err := h.apply(command{Op: opPutProject, Fields: []string{FieldImmutable}, Time: t0 + 2, IfUpdated: p.Updated,
		Project: &policy.Project{Name: "p", Immutable: []policy.ImmutableRule{{Repos: "**", Tags: "latest"}}}})
	if !errors.Is(err, oci.ErrPreconditionFailed) {
		t.Fatalf("a stale read-modify-write = %v, want ErrPreconditionFailed", err)
	}
	if p, _ := h.f.project("p"); len(p.Immutable) != 1 || p.Immutable[0].Tags != "v*" {
		t.Fatalf("rules = %+v", p.Immutable)
	}
}

// TestAuditBatch: counted events and pulls merge by what they are about,
// a batch that could not be written merges back, and what does not fit is
// counted as dropped.
func TestAuditBatch(t *testing.T) {
	b := newAuditBatch()
	fail := policy.AuditEvent{Actor: "u", Addr: "192.0.2.1", Op: policy.AuditLoginFailed, Target: "u", Time: 1}
	b.add(fail)
	fail.Time = 3
	b.add(fail)
	b.pull(PullCount{Repo: "p/a", Digest: blobDigest(1), Count: 1, Last: 5})
	b.pull(PullCount{Repo: "p/a", Digest: blobDigest(1), Count: 1, Last: 4})
	events, pulls, dropped := b.take()
	if len(events) != 1 || events[0].Count != 2 || events[0].Time != 3 || dropped != 0 {
		t.Fatalf("events %+v, dropped %d", events, dropped)
	}
	if len(pulls) != 1 || pulls[0].Count != 2 || pulls[0].Last != 5 {
		t.Fatalf("pulls %+v", pulls)
	}
	b.pull(PullCount{Repo: "p/a", Digest: blobDigest(1), Count: 1, Last: 9})
	b.putBack(events, pulls)
	events, pulls, _ = b.take()
	if len(events) != 1 || events[0].Count != 2 || len(pulls) != 1 || pulls[0].Count != 3 || pulls[0].Last != 9 {
		t.Fatalf("after put back: events %+v, pulls %+v", events, pulls)
	}
	for i := range maxPendingAudit + 2 {
		b.pull(PullCount{Repo: "p/a", Digest: blobDigest(i), Count: 1})
	}
	b.putBack(nil, []PullCount{{Repo: "p/b", Digest: blobDigest(1), Count: 1}})
	if _, pulls, dropped := b.take(); len(pulls) != maxAuditBatch || dropped != 3 {
		t.Fatalf("a full batch: %d pulls, %d dropped; want %d and 3", len(pulls), dropped, maxAuditBatch)
	}
}

func TestArtifactsListIndexChildren(t *testing.T) {
	h := newHarness(t)
	child, err := h.push("r/app", "child", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	idx, payload := manifest("r/app", "index", nil, []oci.Digest{child.Digest}, "")
	h.mustRaw(putCmd(idx, payload, "v1"))
	arts, err := h.f.artifacts("r/app")
	if err != nil || len(arts) != 2 {
		t.Fatalf("artifacts = %+v, %v", arts, err)
	}
	for _, a := range arts {
		want := 0
		if a.Digest == idx.Digest {
			want = 1
		}
		if len(a.Children) != want || (want == 1 && a.Children[0] != child.Digest) {
			t.Fatalf("%s children = %v", a.Digest, a.Children)
		}
	}
}
