package cluster

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"go.etcd.io/bbolt"
)

// Reads of the access state: bbolt read transactions on the local applied
// state, like every read.

func (f *fsm) project(name string) (policy.Project, error) {
	if hasSep(name) {
		return policy.Project{}, fmt.Errorf("project %s: %w", name, oci.ErrNotFound)
	}
	return one[policy.Project](f, bucketProjects, []byte(name), "project "+name)
}

// byID resolves an id through an id bucket to a name.
func (f *fsm) byID(bucket []byte, id uint64, what string) (string, error) {
	var name string
	err := f.view(func(tx *bbolt.Tx) error {
		name = string(tx.Bucket(bucket).Get(idKey(id)))
		return nil
	})
	if err == nil && name == "" {
		err = fmt.Errorf("%s %d: %w", what, id, oci.ErrNotFound)
	}
	return name, err
}

// pageJSON decodes at most n values of bucket whose keys start with p and
// sort strictly after p+last, in key order, keeping those keep accepts.
func pageJSON[T any](f *fsm, bucket, p []byte, last string, n int, keep func(T) bool) ([]T, error) {
	out := []T{}
	if n <= 0 || hasSep(last) {
		return out, nil
	}
	err := f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		start := append(bytes.Clone(p), last...)
		k, v := c.Seek(start)
		if last != "" && bytes.Equal(k, start) {
			k, v = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, p) && len(out) < n; k, v = c.Next() {
			var t T
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode %s %q: %w", bucket, k, err)
			}
			if keep == nil || keep(t) {
				out = append(out, t)
			}
		}
		return nil
	})
	return out, err
}

func (f *fsm) projects(last string, n int) ([]policy.Project, error) {
	return pageJSON[policy.Project](f, bucketProjects, nil, last, n, nil)
}

// projectUsage reads project and its usage in one transaction; found is
// false when there is no such project.
func (f *fsm) projectUsage(name string) (p policy.Project, u policy.Usage, found bool, err error) {
	if hasSep(name) {
		return p, u, false, nil
	}
	err = f.view(func(tx *bbolt.Tx) error {
		ok, err := decodeAt(tx, bucketProjects, []byte(name), &p)
		if err != nil || !ok {
			return err
		}
		found = true
		_, err = decodeAt(tx, bucketProjectUsage, []byte(name), &u)
		return err
	})
	return p, u, found, err
}

func (f *fsm) usage(project string) (policy.Usage, error) {
	var u policy.Usage
	err := f.view(func(tx *bbolt.Tx) error {
		_, err := decodeAt(tx, bucketProjectUsage, []byte(project), &u)
		return err
	})
	return u, err
}

// projectAccess returns what an access decision needs about project for
// user (its role; "" for robots and anonymous).
func (f *fsm) projectAccess(userName, project string) (policy.ProjectAccess, error) {
	pa := policy.ProjectAccess{Name: project}
	if hasSep(project) || hasSep(userName) {
		return pa, nil
	}
	err := f.view(func(tx *bbolt.Tx) error {
		var p policy.Project
		found, err := decodeAt(tx, bucketProjects, []byte(project), &p)
		if err != nil || !found {
			return err
		}
		pa.Exists, pa.Public = true, p.Public
		if userName != "" {
			pa.Role = policy.Role(tx.Bucket(bucketMembers).Get(key(project, userName)))
		}
		return nil
	})
	return pa, err
}

func (f *fsm) members(project string) ([]policy.Member, error) {
	out := []policy.Member{}
	if hasSep(project) {
		return out, nil
	}
	p := prefix(project)
	err := f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketMembers).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			name := string(k[len(p):])
			var u user
			if _, err := decodeAt(tx, bucketUsers, []byte(name), &u); err != nil {
				return err
			}
			out = append(out, policy.Member{Project: project, User: name, UserID: u.ID, Role: policy.Role(v)})
		}
		return nil
	})
	return out, err
}

// memberships returns the projects user is a member of, with the role.
func (f *fsm) memberships(userName string) ([]policy.Member, error) {
	out := []policy.Member{}
	if hasSep(userName) {
		return out, nil
	}
	p := prefix(userName)
	err := f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketMembersByUser).Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			project := string(k[len(p):])
			role := policy.Role(tx.Bucket(bucketMembers).Get(key(project, userName)))
			out = append(out, policy.Member{Project: project, User: userName, Role: role})
		}
		return nil
	})
	return out, err
}

func (f *fsm) users(last string, n int) ([]policy.User, error) {
	out := []policy.User{}
	if n <= 0 || hasSep(last) {
		return out, nil
	}
	err := f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketUsers).Cursor()
		k, v := c.Seek([]byte(last))
		if last != "" && string(k) == last {
			k, v = c.Next()
		}
		for ; k != nil && len(out) < n; k, v = c.Next() {
			var u user
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("decode user %q: %w", k, err)
			}
			out = append(out, u.public(string(k)))
		}
		return nil
	})
	return out, err
}

func (f *fsm) robot(name string) (robotRecord, error) {
	if hasSep(name) {
		return robotRecord{}, fmt.Errorf("robot %s: %w", name, oci.ErrNotFound)
	}
	return one[robotRecord](f, bucketRobots, []byte(name), "robot "+name)
}

// robots pages through robots: of project, or the system robots when
// project is "".
func (f *fsm) robots(project, last string, n int) ([]policy.Robot, error) {
	p := []byte(policy.RobotPrefix)
	if project != "" {
		if hasSep(project) {
			return []policy.Robot{}, nil
		}
		p = []byte(policy.RobotName(project, ""))
	}
	recs, err := pageJSON(f, bucketRobots, p, last, n, func(r robotRecord) bool {
		return r.Project == project
	})
	out := make([]policy.Robot, len(recs))
	for i, r := range recs {
		out[i] = r.Robot
	}
	return out, err
}

func (f *fsm) tokenKey(kid string) (TokenKey, error) {
	if hasSep(kid) {
		return TokenKey{}, fmt.Errorf("token key %s: %w", kid, oci.ErrNotFound)
	}
	return one[TokenKey](f, bucketTokenKeys, []byte(kid), "token key "+kid)
}

// currentTokenKey returns the signing key in use.
func (f *fsm) currentTokenKey() (TokenKey, error) {
	var k TokenKey
	err := f.view(func(tx *bbolt.Tx) error {
		kid := tx.Bucket(bucketMeta).Get(metaTokenKey)
		if kid != nil {
			if found, err := decodeAt(tx, bucketTokenKeys, kid, &k); found || err != nil {
				return err
			}
		}
		return fmt.Errorf("token signing key %s: %w", kid, oci.ErrNotFound)
	})
	return k, err
}

// tokenKeys lists the signing keys the state keeps, newest first.
func (f *fsm) tokenKeys() ([]policy.SigningKey, error) {
	out := []policy.SigningKey{}
	err := f.view(func(tx *bbolt.Tx) error {
		current := string(tx.Bucket(bucketMeta).Get(metaTokenKey))
		return tx.Bucket(bucketTokenKeys).ForEach(func(kid, v []byte) error {
			var k TokenKey
			if err := json.Unmarshal(v, &k); err != nil {
				return fmt.Errorf("decode token key %q: %w", kid, err)
			}
			out = append(out, policy.SigningKey{Kid: k.Kid, Created: k.Created, Current: k.Kid == current})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b policy.SigningKey) int { return cmp.Compare(b.Created, a.Created) })
	return out, nil
}

// audit returns the newest events that f selects, newest first. With a
// project it walks that project's index only.
func (f *fsm) audit(flt policy.AuditFilter) ([]policy.AuditEvent, error) {
	out := []policy.AuditEvent{}
	if flt.Limit <= 0 || hasSep(flt.Project) {
		return out, nil
	}
	err := f.view(func(tx *bbolt.Tx) error {
		events := tx.Bucket(bucketAudit)
		var (
			c *bbolt.Cursor
			p []byte
		)
		if flt.Project != "" {
			c, p = tx.Bucket(bucketAuditProject).Cursor(), prefix(flt.Project)
		} else {
			c = events.Cursor()
		}
		// Seek to the newest entry before flt.Before, then walk back.
		upper := uint64(math.MaxUint64)
		if flt.Before != 0 {
			upper = flt.Before
		}
		bound := append(bytes.Clone(p), idKey(upper)...)
		k, _ := c.Seek(bound)
		if k == nil {
			k, _ = c.Last()
		}
		for k != nil && bytes.Compare(k, bound) >= 0 {
			k, _ = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, p) && len(out) < flt.Limit; k, _ = c.Prev() {
			if len(k) < 8 {
				continue
			}
			v := events.Get(k[len(k)-8:])
			if v == nil {
				continue
			}
			var e policy.AuditEvent
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode audit event %x: %w", k, err)
			}
			if flt.Match(e) {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}

// auditPrunable reports whether prune_audit with keep and before would
// drop the oldest event, from that event alone.
func (f *fsm) auditPrunable(keep int, before int64) (bool, error) {
	var ok bool
	err := f.view(func(tx *bbolt.Tx) error {
		k, v := tx.Bucket(bucketAudit).Cursor().First()
		if k == nil {
			return nil
		}
		var e policy.AuditEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decode audit event %x: %w", k, err)
		}
		ok = auditExpired(e, decodeUint(tx.Bucket(bucketMeta).Get(metaAuditSeq)), keep, before)
		return nil
	})
	return ok, err
}

// artifacts lists the manifests of repo with their tags, push and pull
// times, and whether an immutability rule of its project protects one of
// their tags.
func (f *fsm) artifacts(repo string) ([]policy.Artifact, error) {
	out := []policy.Artifact{}
	if hasSep(repo) {
		return out, nil
	}
	p := prefix(repo)
	err := f.view(func(tx *bbolt.Tx) error {
		var rules []policy.ImmutableRule
		if name, ok := policy.ProjectOf(repo); ok {
			var pr policy.Project
			if _, err := decodeAt(tx, bucketProjects, []byte(name), &pr); err != nil {
				return err
			}
			rules = pr.Immutable
		}
		c := tx.Bucket(bucketManifests).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var r oci.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode manifest %q: %w", k, err)
			}
			a := policy.Artifact{
				Repo: repo, Digest: r.Digest, Pushed: r.Created, Size: r.Size,
				MediaType: r.MediaType, ArtifactType: r.ArtifactType, Subject: r.Subject, Children: r.Children,
			}
			tp := prefix(repo, string(r.Digest))
			tc := tx.Bucket(bucketTagsByDigest).Cursor()
			for tk, _ := tc.Seek(tp); tk != nil && bytes.HasPrefix(tk, tp); tk, _ = tc.Next() {
				t := string(tk[len(tp):])
				a.Tags = append(a.Tags, t)
				if _, imm := policy.Immutable(rules, repo, t); imm {
					a.Immutable = true
				}
			}
			n, last := decodePair(tx.Bucket(bucketPulls).Get(k))
			a.PullCount, a.Pulled = int64(n), int64(last)
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// projectRepos pages through the repositories of project.
func (f *fsm) projectRepos(project, last string, n int) ([]string, error) {
	if hasSep(project) {
		return []string{}, nil
	}
	p := []byte(project + "/")
	names, err := f.page(bucketRepos, p, last, n)
	for i := range names {
		names[i] = project + "/" + names[i]
	}
	return names, err
}

// retentionRuns returns the newest n runs of project, newest first,
// decoding only those (a run holds up to policy.MaxRunDecisions).
func (f *fsm) retentionRuns(project string, n int) ([]policy.RetentionRun, error) {
	out := []policy.RetentionRun{}
	if n <= 0 || hasSep(project) {
		return out, nil
	}
	p := prefix(project)
	err := f.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRetention)
		c := b.Cursor()
		for k := lastWithPrefix(c, p); k != nil && bytes.HasPrefix(k, p) && len(out) < n; k, _ = c.Prev() {
			var r policy.RetentionRun
			if err := json.Unmarshal(b.Get(k), &r); err != nil {
				return fmt.Errorf("decode retention run %q: %w", k, err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

func (f *fsm) retentionRun(project string, id uint64) (policy.RetentionRun, error) {
	if hasSep(project) {
		return policy.RetentionRun{}, fmt.Errorf("retention run %d: %w", id, oci.ErrNotFound)
	}
	return one[policy.RetentionRun](f, bucketRetention, retentionKey(project, id), fmt.Sprintf("retention run %d of %s", id, project))
}
