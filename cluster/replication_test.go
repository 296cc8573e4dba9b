package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"go.etcd.io/bbolt"
)

// ms is a command time in unix nanoseconds, given in milliseconds.
func ms(v int64) int64 { return v * 1e6 }

// hlc is the version clock of millisecond v.
func hlc(v int64) uint64 { return uint64(v) << 16 }

func endpointCmd(name string) command {
	return command{Op: opPutEndpoint, Endpoint: &policy.Endpoint{Name: name, URL: "https://mirror.example", Type: policy.EndpointBerth}, Time: ms(1)}
}

// testRule is an enabled event rule "ev" to endpoint "mirror" of the
// repositories under app/ and tags v*, propagating deletes, into mirror/.
func testRule() policy.Rule {
	return policy.Rule{
		Name: "ev", Endpoint: "mirror", Repos: "app/**", Tags: "v*", DestPrefix: "mirror", Flatten: 1,
		Trigger: policy.TriggerEvent, Delete: true, Enabled: true,
	}
}

func ruleCmd(r policy.Rule) command { return command{Op: opPutRule, Rule: &r, Time: ms(1)} }

// versionedPut is a put_manifest of cluster "ca" at time at (ms), with v
// (zero: local).
func versionedPut(rec oci.Record, payload []byte, tag string, at int64, v oci.TagVersion) command {
	c := putCmd(rec, payload, tag)
	c.Origin, c.Time, c.Version = "ca", ms(at), v
	return c
}

func deleteTagCmd(repo, tag string, at int64, v oci.TagVersion, ifDigest oci.Digest) command {
	return command{Op: opDeleteTag, Repo: repo, Tag: tag, Origin: "ca", Time: ms(at), Version: v, IfDigest: ifDigest}
}

// replHarness is a harness with endpoint "mirror" and the given rules.
func replHarness(t *testing.T, rules ...policy.Rule) *harness {
	t.Helper()
	h := newHarness(t)
	h.mustApply(endpointCmd("mirror"))
	for _, r := range rules {
		h.mustApply(ruleCmd(r))
	}
	return h
}

func (h *harness) active() []policy.Task {
	h.t.Helper()
	ts, err := h.f.indexedTasks(bucketTasksActive, func(policy.Task) bool { return true })
	if err != nil {
		h.t.Fatal(err)
	}
	return ts
}

func (h *harness) exec(id uint64) policy.Execution {
	h.t.Helper()
	e, err := h.f.execution(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return e
}

func (h *harness) task(id uint64) policy.Task {
	h.t.Helper()
	var t policy.Task
	if err := h.f.view(func(tx *bbolt.Tx) error {
		_, err := decodeAt(tx, bucketTasks, idKey(id), &t)
		return err
	}); err != nil {
		h.t.Fatal(err)
	}
	return t
}

// claim applies a claim_tasks and returns the ids the claim holds.
func (h *harness) claim(node, claim string, max int, now, until int64) []uint64 {
	h.t.Helper()
	h.mustApply(command{Op: opClaimTasks, Node: node, Claim: claim, Max: max, Time: now, Until: until})
	ts, err := h.f.indexedTasks(bucketTasksRunning, func(t policy.Task) bool { return t.Claim == claim })
	if err != nil {
		h.t.Fatal(err)
	}
	return ids(ts)
}

func ids(ts []policy.Task) []uint64 {
	out := []uint64{}
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}

// line sums up what a task does, for comparisons.
func line(t policy.Task) string {
	return fmt.Sprintf("%s %s %s:%s@%s>%s", t.Policy, t.Kind, t.Repo, t.Tag, t.Digest, t.DestRepo)
}

func lines(ts []policy.Task) []string {
	out := []string{}
	for _, t := range ts {
		out = append(out, line(t))
	}
	return out
}

func TestTagVersions(t *testing.T) {
	h := newHarness(t)
	a, pa := manifest("r", "a", nil, nil, "")
	b, pb := manifest("r", "b", nil, nil, "")
	zero := oci.TagVersion{}
	cb := func(at int64) oci.TagVersion { return oci.TagVersion{HLC: hlc(at), Origin: "cb"} }
	for _, step := range []struct {
		name   string
		cmd    command
		err    error
		want   oci.TagVersion
		digest oci.Digest // what the tag points to; "": deleted, tombstone at want
		same   bool       // the state must not change
	}{
		{name: "never written", cmd: command{Op: opLinkBlob, Repo: "r", Digest: blobDigest(1)}},
		{name: "local push", cmd: versionedPut(a, pa, "t", 1000, zero), want: oci.TagVersion{HLC: hlc(1000), Origin: "ca"}, digest: a.Digest},
		{name: "local push in the same millisecond", cmd: versionedPut(b, pb, "t", 1000, zero), want: oci.TagVersion{HLC: hlc(1000) + 1, Origin: "ca"}, digest: b.Digest},
		{name: "local re-push", cmd: versionedPut(b, pb, "t", 2000, zero), want: oci.TagVersion{HLC: hlc(1000) + 1, Origin: "ca"}, digest: b.Digest, same: true},
		{name: "replicated older", cmd: versionedPut(a, pa, "t", 3000, cb(900)), err: oci.ErrSuperseded, want: oci.TagVersion{HLC: hlc(1000) + 1, Origin: "ca"}, digest: b.Digest, same: true},
		{name: "replicated equal, other digest", cmd: versionedPut(a, pa, "t", 3000, oci.TagVersion{HLC: hlc(1000) + 1, Origin: "ca"}), err: oci.ErrSuperseded, want: oci.TagVersion{HLC: hlc(1000) + 1, Origin: "ca"}, digest: b.Digest, same: true},
		{name: "replicated higher", cmd: versionedPut(a, pa, "t", 3000, cb(5000)), want: cb(5000), digest: a.Digest},
		{name: "replicated equal, same digest", cmd: versionedPut(a, pa, "t", 3000, cb(5000)), want: cb(5000), digest: a.Digest, same: true},
		{name: "replicated higher, same digest", cmd: versionedPut(a, pa, "t", 3000, cb(6000)), want: cb(6000), digest: a.Digest},
		{name: "delete if it points elsewhere", cmd: deleteTagCmd("r", "t", 7000, zero, b.Digest), err: oci.ErrPreconditionFailed, want: cb(6000), digest: a.Digest, same: true},
		{name: "replicated delete older", cmd: deleteTagCmd("r", "t", 7000, cb(5500), ""), err: oci.ErrSuperseded, want: cb(6000), digest: a.Digest, same: true},
		{name: "local delete", cmd: deleteTagCmd("r", "t", 7000, zero, a.Digest), want: oci.TagVersion{HLC: hlc(7000), Origin: "ca"}},
		{name: "replicated put older than the tombstone", cmd: versionedPut(b, pb, "t", 9000, cb(6500)), err: oci.ErrSuperseded, want: oci.TagVersion{HLC: hlc(7000), Origin: "ca"}, same: true},
		{name: "replicated put newer than the tombstone", cmd: versionedPut(b, pb, "t", 9000, cb(8000)), want: cb(8000), digest: b.Digest},
		{name: "replicated delete newer", cmd: deleteTagCmd("r", "t", 1, cb(9000), b.Digest), want: cb(9000)},
		{name: "local push after a delete from a clock ahead", cmd: versionedPut(a, pa, "t", 8500, zero), want: oci.TagVersion{HLC: hlc(9000) + 1, Origin: "ca"}, digest: a.Digest},
		{name: "delete of a missing tag", cmd: deleteTagCmd("r", "gone", 1, zero, ""), err: oci.ErrNotFound, want: oci.TagVersion{HLC: hlc(9000) + 1, Origin: "ca"}, digest: a.Digest, same: true},
	} {
		before := h.hash()
		err := h.apply(step.cmd)
		if !errors.Is(err, step.err) || (step.err == nil) != (err == nil) {
			t.Fatalf("%s: apply = %v, want %v", step.name, err, step.err)
		}
		if step.same && h.hash() != before {
			t.Fatalf("%s: the state changed", step.name)
		}
		v, found, err := h.f.tagVersion("r", "t")
		if err != nil || v != step.want || found != (step.digest != "") {
			t.Fatalf("%s: version = %s, %v, %v; want %s, %v", step.name, v, found, err, step.want, step.digest != "")
		}
		d, _ := h.f.tag("r", "t")
		if d != step.digest {
			t.Fatalf("%s: tag = %q, want %q", step.name, d, step.digest)
		}
		ts, _ := h.f.tombstones("r", "", 10)
		wantTomb := step.digest == "" && !step.want.IsZero()
		if wantTomb != (len(ts) == 1) || wantTomb && ts[0].Version != step.want {
			t.Fatalf("%s: tombstones %+v", step.name, ts)
		}
		checkInvariants(t, h.f)
	}
}

func TestDeleteManifestLeavesTombstones(t *testing.T) {
	h := newHarness(t)
	a, pa := manifest("r", "a", nil, nil, "")
	for _, tag := range []string{"x", "y"} {
		h.mustApply(versionedPut(a, pa, tag, 1000, oci.TagVersion{}))
	}
	h.mustApply(command{Op: opDeleteManifest, Repo: "r", Digest: a.Digest, Origin: "ca", Time: ms(2000)})
	ts, err := h.f.tombstones("r", "", 10)
	if err != nil || len(ts) != 2 {
		t.Fatalf("tombstones = %+v, %v", ts, err)
	}
	for i, tag := range []string{"x", "y"} {
		want := policy.Tombstone{Repo: "r", Tag: tag, Digest: a.Digest, Version: oci.TagVersion{HLC: hlc(2000), Origin: "ca"}, Time: ms(2000)}
		if ts[i] != want {
			t.Errorf("tombstone %d = %+v, want %+v", i, ts[i], want)
		}
	}
	if page, _ := h.f.tombstones("r", "x", 10); len(page) != 1 || page[0].Tag != "y" {
		t.Fatalf("tombstones after x = %+v", page)
	}
	h.mustApply(command{Op: opPurgeTombstones, Time: ms(2000)})
	if ts, _ := h.f.tombstones("r", "", 10); len(ts) != 2 {
		t.Fatalf("purge before the deletes dropped tombstones: %+v", ts)
	}
	h.mustApply(command{Op: opPurgeTombstones, Time: ms(2000) + 1})
	if ts, _ := h.f.tombstones("r", "", 10); len(ts) != 0 {
		t.Fatalf("tombstones after purge = %+v", ts)
	}
	checkInvariants(t, h.f)
}

func TestOutbox(t *testing.T) {
	web1, p1 := manifest("app/web", "m1", nil, nil, "")
	web2, p2 := manifest("app/web", "m2", nil, nil, "")
	loose, pl := manifest("app/web", "loose", nil, nil, "")
	other, po := manifest("other/x", "o", nil, nil, "")
	sig, ps := manifest("app/web", "sig", nil, nil, "")
	ref, pr := manifest("app/web", "ref", nil, nil, web1.Digest)
	sigTag := policy.AccessoryTag(web1.Digest, ".sig")
	ev := testRule()
	noDelete := testRule()
	noDelete.Name, noDelete.Delete = "nodel", false
	off := testRule()
	off.Name, off.Enabled = "off", false
	manual := testRule()
	manual.Name, manual.Trigger = "man", policy.TriggerManual
	copyLine := func(rule, tag string, d oci.Digest) string {
		return line(policy.Task{Policy: rule, Kind: policy.TaskCopy, Repo: "app/web", Tag: tag, Digest: d, DestRepo: "mirror/web"})
	}
	delLine := func(rule, tag string, d oci.Digest) string {
		return line(policy.Task{Policy: rule, Kind: policy.TaskDelete, Repo: "app/web", Tag: tag, Digest: d, DestRepo: "mirror/web"})
	}
	for _, tc := range []struct {
		name   string
		before []command // applied before the rules exist
		rules  []policy.Rule
		steps  []command
		want   []string
		execs  int // executions made by the steps
	}{
		{
			name:  "a push of a matching tag makes a copy task",
			rules: []policy.Rule{ev},
			steps: []command{putCmd(web1, p1, "v1")},
			want:  []string{copyLine("ev", "v1", web1.Digest)},
			execs: 1,
		},
		{
			name:  "other tags, repositories and untagged pushes make none",
			rules: []policy.Rule{ev},
			steps: []command{putCmd(web1, p1, "latest"), putCmd(other, po, "v1"), putCmd(web2, p2, "")},
		},
		{
			name:  "disabled and manual rules make none",
			rules: []policy.Rule{off, manual},
			steps: []command{putCmd(web1, p1, "v1")},
		},
		{
			name:   "an identical re-push makes none",
			before: []command{putCmd(web1, p1, "v1")},
			rules:  []policy.Rule{ev},
			steps:  []command{putCmd(web1, p1, "v1")},
		},
		{
			name:  "a waiting task takes in the next push",
			rules: []policy.Rule{ev},
			steps: []command{putCmd(web1, p1, "v1"), putCmd(web2, p2, "v1")},
			want:  []string{copyLine("ev", "v1", web2.Digest)},
			execs: 1,
		},
		{
			name:  "each rule makes its own execution",
			rules: []policy.Rule{ev, noDelete},
			steps: []command{putCmd(web1, p1, "v1")},
			want:  []string{copyLine("ev", "v1", web1.Digest), copyLine("nodel", "v1", web1.Digest)},
			execs: 2,
		},
		{
			name:   "an accessory tag copies its subject's tags again",
			before: []command{putCmd(web1, p1, "v1"), putCmd(web1, p1, "v2"), putCmd(web1, p1, "latest")},
			rules:  []policy.Rule{ev},
			steps:  []command{putCmd(sig, ps, sigTag)},
			want:   []string{copyLine("ev", "v1", web1.Digest), copyLine("ev", "v2", web1.Digest)},
			execs:  1,
		},
		{
			name:   "a referrer copies its subject's tags again",
			before: []command{putCmd(web1, p1, "v1")},
			rules:  []policy.Rule{ev},
			steps:  []command{putCmd(ref, pr, "")},
			want:   []string{copyLine("ev", "v1", web1.Digest)},
			execs:  1,
		},
		{
			name:   "a tag delete makes a delete task where the rule deletes",
			before: []command{putCmd(web1, p1, "v1")},
			rules:  []policy.Rule{ev, noDelete},
			steps:  []command{{Op: opDeleteTag, Repo: "app/web", Tag: "v1"}},
			want:   []string{delLine("ev", "v1", web1.Digest)},
			execs:  1,
		},
		{
			name:  "a delete takes the place of a waiting copy",
			rules: []policy.Rule{ev},
			steps: []command{putCmd(web1, p1, "v1"), {Op: opDeleteTag, Repo: "app/web", Tag: "v1"}},
			want:  []string{delLine("ev", "v1", web1.Digest)},
			execs: 1,
		},
		{
			name:   "a manifest delete makes a task per tag, or one by digest",
			before: []command{putCmd(web1, p1, "v1"), putCmd(web1, p1, "v2"), putCmd(loose, pl, "")},
			rules:  []policy.Rule{ev},
			steps: []command{
				{Op: opDeleteManifest, Repo: "app/web", Digest: web1.Digest},
				{Op: opDeleteManifest, Repo: "app/web", Digest: loose.Digest},
			},
			want:  []string{delLine("ev", "v1", web1.Digest), delLine("ev", "v2", web1.Digest), delLine("ev", "", loose.Digest)},
			execs: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := replHarness(t)
			for _, c := range tc.before {
				h.mustApply(c)
			}
			for _, r := range tc.rules {
				h.mustApply(ruleCmd(r))
			}
			for _, c := range tc.steps {
				h.mustApply(c)
			}
			got := lines(h.active())
			slices.Sort(got)
			want := append([]string{}, tc.want...)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("tasks\n%q\nwant\n%q", got, want)
			}
			es, _ := h.f.executions("", 0, 100)
			if len(es) != tc.execs {
				t.Fatalf("%d executions, want %d: %+v", len(es), tc.execs, es)
			}
			for _, e := range es {
				if e.Trigger != policy.TriggerEvent || e.Status != policy.ExecRunning || e.Total != e.Pending || e.Total == 0 {
					t.Errorf("execution %+v", e)
				}
			}
			checkInvariants(t, h.f)
		})
	}
}

// TestOutboxVersions: event tasks carry the version of the write, and a
// replicated write that changes nothing (the echo of a write this cluster
// sent) makes no task, so that two clusters replicating to each other stop.
func TestOutboxVersions(t *testing.T) {
	h := replHarness(t, testRule())
	web, p := manifest("app/web", "m1", nil, nil, "")
	h.mustApply(versionedPut(web, p, "v1", 1000, oci.TagVersion{}))
	v, _, _ := h.f.tagVersion("app/web", "v1")
	ts := h.active()
	if len(ts) != 1 || ts[0].Version != v || v.IsZero() {
		t.Fatalf("tasks %+v, tag version %s", ts, v)
	}
	// The task ran; the peer sends the same write back.
	h.claim("n1", "c1", 1, ms(1), ms(100))
	h.mustApply(command{Op: opUpdateTasks, Updates: []policy.TaskUpdate{{ID: ts[0].ID, Claim: "c1", Status: policy.StatusSucceeded}}, Time: ms(2)})
	before := h.hash()
	h.mustApply(versionedPut(web, p, "v1", 2000, v))
	if h.hash() != before || len(h.active()) != 0 {
		t.Fatalf("the echo of a write changed the state: tasks %+v", h.active())
	}
	// A higher version of the same digest travels on.
	next := oci.TagVersion{HLC: v.HLC + 5, Origin: "cb"}
	h.mustApply(versionedPut(web, p, "v1", 2000, next))
	if ts := h.active(); len(ts) != 1 || ts[0].Version != next || ts[0].Digest != web.Digest {
		t.Fatalf("tasks after a higher version %+v", ts)
	}
	// A delete task carries the tombstone's version.
	h.mustApply(deleteTagCmd("app/web", "v1", 3000, oci.TagVersion{}, ""))
	tomb, _, _ := h.f.tagVersion("app/web", "v1")
	if ts := h.active(); len(ts) != 1 || ts[0].Kind != policy.TaskDelete || ts[0].Version != tomb {
		t.Fatalf("tasks after delete %+v (tombstone %s)", ts, tomb)
	}
	checkInvariants(t, h.f)
}

func TestClaims(t *testing.T) {
	r := testRule()
	r.Concurrency = 2
	h := replHarness(t, r)
	for i := 1; i <= 4; i++ {
		rec, p := manifest("app/web", fmt.Sprint(i), nil, nil, "")
		h.mustApply(putCmd(rec, p, fmt.Sprintf("v%d", i)))
	}
	if n := len(h.active()); n != 4 {
		t.Fatalf("%d tasks, want 4", n)
	}
	for _, step := range []struct {
		name        string
		node, claim string
		max         int
		now         int64
		want        []uint64
	}{
		{"the rule's concurrency bounds a claim", "a", "c1", 10, 100, []uint64{1, 2}},
		{"a repeated claim takes no more", "a", "c1", 10, 100, []uint64{1, 2}},
		{"a rule at its concurrency gives nothing", "b", "c2", 10, 150, []uint64{}},
		{"an expired lease is taken over", "b", "c3", 1, 151, []uint64{1}},
		{"the other expired lease goes next", "c", "c4", 10, 152, []uint64{2}},
	} {
		got := h.claim(step.node, step.claim, step.max, step.now, step.now+50)
		if !slices.Equal(got, step.want) {
			t.Fatalf("%s: claimed %v, want %v", step.name, got, step.want)
		}
	}
	if t1 := h.task(1); t1.Attempts != 2 || t1.Owner != "b" || t1.Started != 100 || t1.LeaseUntil != 201 {
		t.Fatalf("task taken over: %+v", t1)
	}

	// An update under a claim that lost the task is ignored.
	before := h.hash()
	h.mustApply(command{Op: opUpdateTasks, Updates: []policy.TaskUpdate{{ID: 2, Claim: "c1", Status: policy.StatusSucceeded}}, Time: 160})
	if h.hash() != before {
		t.Fatal("an update of a stale claim changed the state")
	}
	// A retry waits for its next attempt.
	h.mustApply(command{Op: opUpdateTasks, Updates: []policy.TaskUpdate{
		{ID: 1, Claim: "c3", Status: policy.StatusRetrying, NextAttempt: 300, Error: "503"},
		{ID: 2, Claim: "c4", Status: policy.StatusRunning, LeaseUntil: 1000},
	}, Time: 160})
	if t1 := h.task(1); t1.Status != policy.StatusRetrying || t1.Owner != "" || t1.Claim != "" || t1.Error != "503" {
		t.Fatalf("retrying task %+v", t1)
	}
	if got := h.claim("a", "c5", 10, 250, 400); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("claim before the retry is due: %v, want [3]", got)
	}
	h.mustApply(command{Op: opUpdateTasks, Updates: []policy.TaskUpdate{{ID: 3, Claim: "c5", Status: policy.StatusSucceeded}}, Time: 260})
	if got := h.claim("a", "c6", 10, 300, 400); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("claim once the retry is due: %v, want [1]", got)
	}
	checkInvariants(t, h.f)
}

// TestOneRunningPerReference: two tasks of one rule for the same reference
// and destination never run at once.
func TestOneRunningPerReference(t *testing.T) {
	man := testRule()
	man.Trigger = policy.TriggerManual
	h := replHarness(t, man)
	job := policy.Task{Kind: policy.TaskCopy, Repo: "app/web", Tag: "v1", Digest: blobDigest(1)}
	for i := range 2 {
		h.mustApply(command{Op: opStartExecution, Name: "ev", Trigger: policy.TriggerManual, Token: fmt.Sprint(i), Tasks: []policy.Task{job}, Done: true, Time: 1})
	}
	if got := h.claim("a", "c1", 10, 10, 100); len(got) != 1 {
		t.Fatalf("claimed %v, want one task", got)
	}
	first := h.claim("a", "c1", 0, 10, 100)[0]
	h.mustApply(command{Op: opUpdateTasks, Updates: []policy.TaskUpdate{{ID: first, Claim: "c1", Status: policy.StatusSucceeded}}, Time: 20})
	if got := h.claim("a", "c2", 10, 30, 100); len(got) != 1 || got[0] == first {
		t.Fatalf("claimed %v after the first ended", got)
	}
	checkInvariants(t, h.f)
}

func TestExecutionCounts(t *testing.T) {
	man := testRule()
	man.Trigger = policy.TriggerManual
	job := func(tag string) policy.Task {
		return policy.Task{Kind: policy.TaskCopy, Repo: "app/web", Tag: tag, Digest: blobDigest(1)}
	}
	start := func(token string, done bool, tags ...string) command {
		var ts []policy.Task
		for _, tag := range tags {
			ts = append(ts, job(tag))
		}
		return command{Op: opStartExecution, Name: "ev", Trigger: policy.TriggerManual, Token: token, Tasks: ts, Done: done, Time: 5}
	}
	update := func(at int64, us ...policy.TaskUpdate) command {
		return command{Op: opUpdateTasks, Updates: us, Time: at}
	}
	done := func(id uint64, claim, status string, bytes int64) policy.TaskUpdate {
		return policy.TaskUpdate{ID: id, Claim: claim, Status: status, Bytes: bytes}
	}

	t.Run("a failed task fails the execution", func(t *testing.T) {
		h := replHarness(t, man)
		h.mustApply(start("s", true, "v1", "v2", "v3"))
		h.claim("n", "c1", 10, 10, 100)
		h.mustApply(update(20, done(1, "c1", policy.StatusSucceeded, 10), policy.TaskUpdate{ID: 2, Claim: "c1", Status: policy.StatusRetrying, NextAttempt: 30}))
		want := policy.Execution{ID: 1, Policy: "ev", Trigger: policy.TriggerManual, Status: policy.ExecRunning, Created: 5, Total: 3, Pending: 1, Running: 1, Succeeded: 1, Bytes: 10}
		if e := h.exec(1); e != want {
			t.Fatalf("execution\n%+v\nwant\n%+v", e, want)
		}
		h.claim("n", "c2", 10, 30, 100)
		h.mustApply(update(40, done(2, "c2", policy.StatusFailed, 0), done(3, "c1", policy.StatusSucceeded, 5)))
		want.Status, want.Finished, want.Pending, want.Running, want.Succeeded, want.Failed, want.Bytes = policy.ExecFailed, 40, 0, 0, 2, 1, 15
		if e := h.exec(1); e != want {
			t.Fatalf("execution\n%+v\nwant\n%+v", e, want)
		}
		checkInvariants(t, h.f)
	})
	t.Run("an execution without tasks succeeds at once", func(t *testing.T) {
		h := replHarness(t, man)
		h.mustApply(start("s", true))
		if e := h.exec(1); e.Status != policy.ExecSucceeded || e.Finished != 5 {
			t.Fatalf("execution %+v", e)
		}
	})
	t.Run("a scan in progress keeps its execution running", func(t *testing.T) {
		h := replHarness(t, man)
		h.mustApply(start("s", false, "v1"))
		h.claim("n", "c1", 10, 10, 100)
		h.mustApply(update(20, done(1, "c1", policy.StatusSucceeded, 0)))
		if e := h.exec(1); e.Status != policy.ExecRunning {
			t.Fatalf("execution of an open scan %+v", e)
		}
		add := command{Op: opAddTasks, Exec: 1, Tasks: []policy.Task{job("v2")}, Time: 30}
		h.mustApply(add)
		h.mustApply(add) // a repeat adds nothing
		h.mustApply(command{Op: opAddTasks, Exec: 1, Done: true, Time: 30})
		if e := h.exec(1); e.Status != policy.ExecRunning || e.Total != 2 || e.Pending != 1 {
			t.Fatalf("execution after the last chunk %+v", e)
		}
		h.claim("n", "c2", 10, 40, 100)
		h.mustApply(update(50, done(2, "c2", policy.StatusSucceeded, 0)))
		if e := h.exec(1); e.Status != policy.ExecSucceeded || e.Finished != 50 {
			t.Fatalf("execution %+v", e)
		}
		// A chunk that comes after the execution ended runs it again.
		h.mustApply(command{Op: opAddTasks, Exec: 1, Tasks: []policy.Task{job("v3")}, Done: true, Time: 60})
		if e := h.exec(1); e.Status != policy.ExecRunning || e.Finished != 0 || e.Total != 3 {
			t.Fatalf("execution after a late chunk %+v", e)
		}
		checkInvariants(t, h.f)
	})
	t.Run("a repeated start makes one execution", func(t *testing.T) {
		h := replHarness(t, man)
		h.mustApply(start("s", true, "v1"))
		h.mustApply(start("s", true, "v1"))
		if es, _ := h.f.executions("", 0, 10); len(es) != 1 || es[0].Total != 1 {
			t.Fatalf("executions %+v", es)
		}
	})
	t.Run("stop", func(t *testing.T) {
		h := replHarness(t, man)
		h.mustApply(start("s", true, "v1", "v2"))
		h.claim("n", "c1", 1, 10, 100)
		h.mustApply(command{Op: opStopExecution, Exec: 1, Time: 20})
		e := h.exec(1)
		if e.Status != policy.ExecStopped || e.Stopped != 2 || e.Pending+e.Running != 0 || e.Finished != 20 || len(h.active()) != 0 {
			t.Fatalf("stopped execution %+v, active %+v", e, h.active())
		}
		if err := h.apply(command{Op: opAddTasks, Exec: 1, Tasks: []policy.Task{job("v3")}, Time: 30}); !errors.Is(err, oci.ErrDenied) {
			t.Fatalf("add to a stopped execution: %v", err)
		}
		// The worker's report comes too late.
		before := h.hash()
		h.mustApply(update(30, done(1, "c1", policy.StatusSucceeded, 9)))
		if h.hash() != before {
			t.Fatal("an update of a stopped task changed the state")
		}
		checkInvariants(t, h.f)
	})
	t.Run("rejected", func(t *testing.T) {
		h := replHarness(t, man)
		for _, tc := range []struct {
			cmd  command
			want error
		}{
			{command{Op: opStartExecution, Name: "nope", Trigger: "manual", Time: 1}, oci.ErrNotFound},
			{command{Op: opStartExecution, Name: "ev", Time: 1}, ErrBadCommand},
			{command{Op: opStartExecution, Name: "ev", Trigger: "manual", Tasks: []policy.Task{{Kind: "move", Repo: "a", Digest: blobDigest(1)}}}, ErrBadCommand},
			{command{Op: opStartExecution, Name: "ev", Trigger: "manual", Tasks: []policy.Task{{Kind: "copy", Repo: "A", Digest: blobDigest(1)}}}, ErrBadCommand},
			{command{Op: opStartExecution, Name: "ev", Trigger: "manual", Tasks: []policy.Task{{Kind: "copy", Repo: "a", Digest: "x"}}}, ErrBadCommand},
			{command{Op: opAddTasks, Exec: 9}, oci.ErrNotFound},
			{command{Op: opStopExecution, Exec: 9}, oci.ErrNotFound},
			{command{Op: opClaimTasks, Claim: "c", Max: 1, Time: 1, Until: 2}, ErrBadCommand},
			{command{Op: opClaimTasks, Node: "n", Claim: "c", Max: 1, Time: 2, Until: 2}, ErrBadCommand},
			{command{Op: opUpdateTasks, Updates: []policy.TaskUpdate{{ID: 1, Status: "pending"}}}, ErrBadCommand},
			{command{Op: opPruneHistory, Keep: -1}, ErrBadCommand},
		} {
			before := h.hash()
			if err := h.apply(tc.cmd); !errors.Is(err, tc.want) {
				t.Errorf("%s %+v: %v, want %v", tc.cmd.Op, tc.cmd, err, tc.want)
			}
			if h.hash() != before {
				t.Errorf("rejected %s changed the state", tc.cmd.Op)
			}
		}
	})
}

func TestEndpointsAndRules(t *testing.T) {
	h := newHarness(t)
	r := testRule()
	for _, tc := range []struct {
		name string
		cmd  command
		want error
	}{
		{"invalid endpoint", command{Op: opPutEndpoint, Endpoint: &policy.Endpoint{Name: "Bad", URL: "https://x", Type: "berth"}}, policy.ErrInvalid},
		{"endpoint with a path", command{Op: opPutEndpoint, Endpoint: &policy.Endpoint{Name: "m", URL: "https://x/p", Type: "berth"}}, policy.ErrInvalid},
		{"no endpoint", command{Op: opPutEndpoint}, ErrBadCommand},
		{"rule of a missing endpoint", ruleCmd(r), oci.ErrNotFound},
		{"invalid rule", ruleCmd(policy.Rule{Name: "x", Endpoint: "mirror", Trigger: "sometimes"}), policy.ErrInvalid},
		{"delete missing endpoint", command{Op: opDeleteEndpoint, Name: "mirror"}, oci.ErrNotFound},
		{"delete missing rule", command{Op: opDeleteRule, Name: "ev"}, oci.ErrNotFound},
	} {
		before := h.hash()
		if err := h.apply(tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if h.hash() != before {
			t.Errorf("%s: a rejected command changed the state", tc.name)
		}
	}

	h.mustApply(endpointCmd("mirror"))
	h.mustApply(ruleCmd(r))
	replaced := endpointCmd("mirror")
	replaced.Time = ms(9)
	h.mustApply(replaced)
	if e, _ := h.f.endpoint("mirror"); e.Created != ms(1) || e.Updated != ms(9) {
		t.Fatalf("replaced endpoint %+v: Created must stay", e)
	}
	err := h.apply(command{Op: opDeleteEndpoint, Name: "mirror"})
	if !errors.Is(err, oci.ErrDenied) || !strings.Contains(err.Error(), `"ev"`) {
		t.Fatalf("delete of an endpoint in use: %v", err)
	}

	web, p := manifest("app/web", "m1", nil, nil, "")
	h.mustApply(putCmd(web, p, "v1"))
	h.mustApply(command{Op: opDeleteRule, Name: "ev", Time: ms(10)})
	if len(h.active()) != 0 {
		t.Fatalf("active tasks of a deleted rule: %+v", h.active())
	}
	e := h.exec(1)
	if e.Status != policy.ExecStopped || e.Stopped != 1 {
		t.Fatalf("execution of the deleted rule %+v", e)
	}
	if rs, _ := h.f.rules(); len(rs) != 0 {
		t.Fatalf("rules %+v", rs)
	}
	h.mustApply(command{Op: opDeleteEndpoint, Name: "mirror"})
	checkInvariants(t, h.f)
}

func TestPruneHistory(t *testing.T) {
	man := testRule()
	man.Trigger = policy.TriggerManual
	h := replHarness(t, man)
	// Executions 1-4 end at 10, 20, 30, 40; execution 5 runs.
	for i := int64(1); i <= 5; i++ {
		h.mustApply(command{Op: opStartExecution, Name: "ev", Trigger: "manual", Token: fmt.Sprint(i),
			Tasks: []policy.Task{{Kind: policy.TaskCopy, Repo: "app/web", Tag: "v1", Digest: blobDigest(int(i))}}, Done: true, Time: i})
		if i == 5 {
			break
		}
		h.claim("n", fmt.Sprint("c", i), 1, i*10-1, i*10+5)
		h.mustApply(command{Op: opUpdateTasks, Updates: []policy.TaskUpdate{{ID: uint64(i), Claim: fmt.Sprint("c", i), Status: policy.StatusSucceeded}}, Time: i * 10})
	}
	remaining := func() []uint64 {
		es, _ := h.f.executions("", 0, 100)
		var out []uint64
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	h.mustApply(command{Op: opPruneHistory, Time: 20})
	if got := remaining(); !slices.Equal(got, []uint64{5, 4, 3, 2}) {
		t.Fatalf("after pruning before 20: %v", got)
	}
	h.mustApply(command{Op: opPruneHistory, Keep: 1})
	if got := remaining(); !slices.Equal(got, []uint64{5, 4}) {
		t.Fatalf("after keeping 1: %v", got)
	}
	// The latest task of v1 is execution 5's, which stays.
	if lt, ok, _ := h.f.latestTask("ev", "app/web", "v1"); !ok || lt.Execution != 5 {
		t.Fatalf("latest task %+v %v", lt, ok)
	}
	h.mustApply(command{Op: opStopExecution, Exec: 5, Time: 99})
	h.mustApply(command{Op: opPruneHistory, Time: 100})
	if got := remaining(); len(got) != 0 {
		t.Fatalf("after pruning everything: %v", got)
	}
	if _, ok, _ := h.f.latestTask("ev", "app/web", "v1"); ok {
		t.Fatal("the latest entry of a pruned task stayed")
	}
	checkInvariants(t, h.f)
}

func TestExecutionsAndTasksPages(t *testing.T) {
	man := testRule()
	man.Trigger = policy.TriggerManual
	other := man
	other.Name = "other"
	h := replHarness(t, man, other)
	var jobs []policy.Task
	for i := range 5 {
		jobs = append(jobs, policy.Task{Kind: policy.TaskCopy, Repo: "app/web", Tag: fmt.Sprint("v", i), Digest: blobDigest(i)})
	}
	for i, rule := range []string{"ev", "other", "ev", "other", "ev"} {
		h.mustApply(command{Op: opStartExecution, Name: rule, Trigger: "manual", Token: fmt.Sprint(i), Tasks: jobs, Done: true, Time: 1})
	}
	for _, tc := range []struct {
		rule   string
		before uint64
		n      int
		want   []uint64
	}{
		{"", 0, 10, []uint64{5, 4, 3, 2, 1}},
		{"", 4, 2, []uint64{3, 2}},
		{"", 1, 2, []uint64{}},
		{"ev", 0, 10, []uint64{5, 3, 1}},
		{"ev", 5, 1, []uint64{3}},
		{"other", 0, 10, []uint64{4, 2}},
		{"other", 9, 10, []uint64{4, 2}},
		{"o", 0, 10, []uint64{}},
		{"nope", 0, 10, []uint64{}},
	} {
		es, err := h.f.executions(tc.rule, tc.before, tc.n)
		got := []uint64{}
		for _, e := range es {
			got = append(got, e.ID)
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("executions(%q, %d, %d) = %v, %v; want %v", tc.rule, tc.before, tc.n, got, err, tc.want)
		}
	}
	h.claim("n", "c", 2, 1, 100) // tasks 1 and 2 run
	for _, tc := range []struct {
		exec   uint64
		status string
		after  uint64
		n      int
		want   []uint64
	}{
		{1, "", 0, 10, []uint64{1, 2, 3, 4, 5}},
		{1, "", 2, 2, []uint64{3, 4}},
		{1, policy.StatusPending, 0, 10, []uint64{3, 4, 5}},
		{1, policy.StatusRunning, 0, 10, []uint64{1, 2}},
		{2, "", 0, 10, []uint64{6, 7, 8, 9, 10}},
		{2, "", 10, 10, []uint64{}},
		{9, "", 0, 10, []uint64{}},
	} {
		ts, err := h.f.tasks(tc.exec, tc.status, tc.after, tc.n)
		if got := ids(ts); err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("tasks(%d, %q, %d, %d) = %v, %v; want %v", tc.exec, tc.status, tc.after, tc.n, got, err, tc.want)
		}
	}
}

// checkReplication recomputes the indexes and counts of executions and
// tasks from the tasks and compares them with what apply maintained, and
// checks that versions and tombstones go with tags as they should.
func checkReplication(tx *bbolt.Tx) error {
	keys := func(b []byte) map[string]bool {
		m := map[string]bool{}
		tx.Bucket(b).ForEach(func(k, _ []byte) error { m[string(k)] = true; return nil })
		return m
	}
	active, running, execTasks := keys(bucketTasksActive), keys(bucketTasksRunning), keys(bucketExecTasks)
	counts := map[uint64]*execution{}
	nActive, nRunning, nTasks := 0, 0, 0
	var maxTask uint64
	err := tx.Bucket(bucketTasks).ForEach(func(k, v []byte) error {
		var t policy.Task
		if err := json.Unmarshal(v, &t); err != nil {
			return err
		}
		nTasks++
		maxTask = max(maxTask, t.ID)
		if !bytes.Equal(k, idKey(t.ID)) {
			return fmt.Errorf("task key %x holds task %d", k, t.ID)
		}
		if active[string(k)] != t.Active() || running[string(k)] != (t.Status == policy.StatusRunning) {
			return fmt.Errorf("task %d (%s): active index %v, running index %v", t.ID, t.Status, active[string(k)], running[string(k)])
		}
		if t.Active() {
			nActive++
		}
		if t.Status == policy.StatusRunning {
			nRunning++
		}
		if !execTasks[string(idKey(t.Execution, t.ID))] {
			return fmt.Errorf("task %d is not listed under execution %d", t.ID, t.Execution)
		}
		e := counts[t.Execution]
		if e == nil {
			e = &execution{}
			counts[t.Execution] = e
		}
		e.Total++
		e.count(t.Status, 1)
		e.Bytes += t.Bytes
		return nil
	})
	if err != nil {
		return err
	}
	if len(active) != nActive || len(running) != nRunning || len(execTasks) != nTasks {
		return fmt.Errorf("indexes list %d active, %d running, %d tasks; there are %d, %d, %d", len(active), len(running), len(execTasks), nActive, nRunning, nTasks)
	}
	if seq := decodeUint(tx.Bucket(bucketMeta).Get(metaTaskSeq)); seq < maxTask {
		return fmt.Errorf("task sequence %d below task %d", seq, maxTask)
	}
	runningExecs, ruleExecs, tokens := keys(bucketExecRunning), keys(bucketRuleExecs), keys(bucketExecTokens)
	nExecs, nRunningExecs, nTokens := 0, 0, 0
	err = tx.Bucket(bucketExecutions).ForEach(func(k, v []byte) error {
		var e execution
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		nExecs++
		want := counts[e.ID]
		if want == nil {
			want = &execution{}
		}
		delete(counts, e.ID)
		if e.Total != want.Total || e.Pending != want.Pending || e.Running != want.Running || e.Succeeded != want.Succeeded ||
			e.Failed != want.Failed || e.Stopped != want.Stopped || e.Bytes != want.Bytes {
			return fmt.Errorf("execution %d counts %+v, its tasks say %+v", e.ID, e.Execution, want.Execution)
		}
		isRunning := e.Status == policy.ExecRunning
		if runningExecs[string(k)] != isRunning {
			return fmt.Errorf("execution %d (%s): running index %v", e.ID, e.Status, runningExecs[string(k)])
		}
		if isRunning {
			nRunningExecs++
			if !e.Open && e.Pending+e.Running == 0 {
				return fmt.Errorf("execution %d runs without anything to do", e.ID)
			}
		} else if e.Pending+e.Running != 0 || e.Finished == 0 && e.Created != 0 {
			return fmt.Errorf("execution %d is %s with active tasks or no end: %+v", e.ID, e.Status, e.Execution)
		}
		if !ruleExecs[string(append(prefix(e.Policy), k...))] {
			return fmt.Errorf("execution %d is not listed under rule %s", e.ID, e.Policy)
		}
		if e.Token != "" {
			nTokens++
			if !bytes.Equal(tx.Bucket(bucketExecTokens).Get([]byte(e.Token)), k) {
				return fmt.Errorf("token of execution %d does not lead to it", e.ID)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(counts) > 0 {
		return fmt.Errorf("tasks of missing executions: %v", slices.Collect(maps.Keys(counts)))
	}
	if len(runningExecs) != nRunningExecs || len(ruleExecs) != nExecs || len(tokens) != nTokens {
		return fmt.Errorf("indexes list %d running, %d, %d tokens; there are %d, %d, %d", len(runningExecs), len(ruleExecs), len(tokens), nRunningExecs, nExecs, nTokens)
	}
	err = tx.Bucket(bucketTaskLatest).ForEach(func(k, v []byte) error {
		var t policy.Task
		if found, err := decodeAt(tx, bucketTasks, v, &t); err != nil || !found {
			return fmt.Errorf("latest %q points to missing task %x (%v)", k, v, err)
		}
		if !bytes.Equal(latestKey(t), k) {
			return fmt.Errorf("latest %q points to task %d of %q", k, t.ID, latestKey(t))
		}
		return nil
	})
	if err != nil {
		return err
	}
	tags := keys(bucketTags)
	for k := range keys(bucketTagVersions) {
		if !tags[k] {
			return fmt.Errorf("version of missing tag %q", k)
		}
	}
	for k := range keys(bucketTombstones) {
		if tags[k] {
			return fmt.Errorf("tombstone of existing tag %q", k)
		}
	}
	return nil
}
