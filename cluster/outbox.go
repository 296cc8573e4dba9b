package cluster

import (
	"slices"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The outbox: the tasks of event rules are made by the apply of the push
// or delete that causes them, in the same transaction, so that no write is
// ever acknowledged without its replication recorded, and none is recorded
// twice (see DESIGN.md, "The outbox").

// allRules returns every rule, in name order, read once per command.
func (w *writer) allRules() ([]policy.Rule, error) {
	if w.read {
		return w.rules, nil
	}
	var rules []policy.Rule
	c := w.tx.Bucket(bucketRules).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		var r policy.Rule
		if _, err := w.getJSON(bucketRules, k, &r); err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	w.rules, w.read = rules, true
	return rules, nil
}

// eventRules returns the enabled rules triggered by events.
func (w *writer) eventRules() ([]policy.Rule, error) {
	all, err := w.allRules()
	if err != nil {
		return nil, err
	}
	var out []policy.Rule
	for _, r := range all {
		if r.Enabled && r.Trigger == policy.TriggerEvent {
			out = append(out, r)
		}
	}
	return out, nil
}

// eventTask is the task of rule r for one artifact.
func eventTask(r policy.Rule, kind, repo, tag string, d oci.Digest, v oci.TagVersion) policy.Task {
	return policy.Task{
		Policy: r.Name, Endpoint: r.Endpoint, Kind: kind,
		Repo: repo, Tag: tag, Digest: d, DestRepo: r.DestRepo(repo), Version: v,
	}
}

// tagged is a tag with what it points to and its version.
type tagged struct {
	tag     string
	digest  oci.Digest
	version oci.TagVersion
}

// putEvents makes the tasks of a put_manifest of rec, tagged tag ("" for
// none): tw is what the put did to the tag, added whether rec is new in its
// repository. A put that changed nothing makes none, so that two clusters
// replicating to each other stop once they agree.
func (w *writer) putEvents(rec oci.Record, tag string, tw tagWrite, added bool) error {
	tagChanged := tag != "" && tw.changed
	if !tagChanged && !added {
		return nil
	}
	rules, err := w.eventRules()
	if err != nil || len(rules) == 0 {
		return err
	}
	// An accessory (a signature tag, a referrer) travels with its subject:
	// the subject's tags are copied again, and carry it along.
	var subjects []oci.Digest
	if s, ok := policy.AccessoryOf(tag); ok {
		subjects = append(subjects, s)
	}
	if rec.Subject != "" && !slices.Contains(subjects, rec.Subject) {
		subjects = append(subjects, rec.Subject)
	}
	var again []tagged
	for _, s := range subjects {
		p := prefix(rec.Repo, string(s))
		for _, k := range w.keysWithPrefix(bucketTagsByDigest, p) {
			t := string(k[len(p):])
			v, err := w.tagVersion(rec.Repo, t)
			if err != nil {
				return err
			}
			again = append(again, tagged{tag: t, digest: s, version: v})
		}
	}
	return w.emit(rules, func(r policy.Rule) []policy.Task {
		var ts []policy.Task
		if tagChanged && r.Match(rec.Repo, tag) {
			ts = append(ts, eventTask(r, policy.TaskCopy, rec.Repo, tag, rec.Digest, tw.version))
		}
		for _, a := range again {
			if r.Match(rec.Repo, a.tag) {
				ts = append(ts, eventTask(r, policy.TaskCopy, rec.Repo, a.tag, a.digest, a.version))
			}
		}
		return ts
	})
}

// deleteEvents makes the delete tasks of the rules that propagate deletes,
// for the tombstones of a delete (one without a tag: a manifest deleted
// that no tag pointed to).
func (w *writer) deleteEvents(deleted []policy.Tombstone) error {
	rules, err := w.eventRules()
	if err != nil || len(rules) == 0 {
		return err
	}
	return w.emit(rules, func(r policy.Rule) []policy.Task {
		if !r.Delete {
			return nil
		}
		var ts []policy.Task
		for _, d := range deleted {
			if d.Tag == "" && r.MatchRepo(d.Repo) || d.Tag != "" && r.Match(d.Repo, d.Tag) {
				ts = append(ts, eventTask(r, policy.TaskDelete, d.Repo, d.Tag, d.Digest, d.Version))
			}
		}
		return ts
	})
}

// emit records, for each rule, the tasks want lists: each one folds into
// the rule's pending task for the same reference when there is one, and
// the others form one new execution of the rule (none when there are
// none).
func (w *writer) emit(rules []policy.Rule, want func(policy.Rule) []policy.Task) error {
	for _, r := range rules {
		var exec uint64
		for _, t := range want(r) {
			folded, err := w.coalesce(t)
			if err != nil {
				return err
			}
			if folded {
				continue
			}
			if exec == 0 {
				exec = w.newExecution(r.Name, policy.TriggerEvent, "", false)
			}
			if err := w.addTask(exec, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// coalesce folds t into the newest task of its rule and reference when
// that one waits (pending or retrying, not running): it becomes t, pending
// again. It reports whether it did.
func (w *writer) coalesce(t policy.Task) (bool, error) {
	id := w.get(bucketTaskLatest, latestKey(t))
	if id == nil {
		return false, nil
	}
	var old policy.Task
	found, err := w.getJSON(bucketTasks, id, &old)
	if err != nil || !found || (old.Status != policy.StatusPending && old.Status != policy.StatusRetrying) {
		return false, err
	}
	n := old
	n.Kind, n.Tag, n.Digest, n.Version = t.Kind, t.Tag, t.Digest, t.Version
	n.DestRepo, n.Endpoint = t.DestRepo, t.Endpoint
	n.Status, n.NextAttempt, n.Error = policy.StatusPending, 0, ""
	return true, w.storeTask(&old, n)
}
