package retention_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/retention"
)

const minute = int64(time.Minute)

func latestPushed(k int) *policy.RetentionPolicy {
	return &policy.RetentionPolicy{Rules: []policy.RetentionRule{{Kind: policy.RetainLatestPushed, Param: k, Repos: "**", Tags: "**"}}}
}

// metric returns the value of a counter of reg (with the label pair, if
// given), 0 when absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, label ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := len(label) == 0
			for _, lp := range m.GetLabel() {
				if len(label) == 2 && lp.GetName() == label[0] && lp.GetValue() == label[1] {
					ok = true
				}
			}
			if ok {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestLatestPushedKeepsKPerRepositoryWithTheirAccessories(t *testing.T) {
	f := newFixture(t)
	f.project("proj", latestPushed(2))
	var keep, drop []oci.Digest
	for _, repo := range []string{"proj/a", "proj/team/b"} {
		for i := range 4 {
			ds := f.signed(repo, fmt.Sprint(repo, i), t0+int64(i)*minute, fmt.Sprintf("v%d", i))
			if i >= 2 {
				keep = append(keep, ds[:]...)
			} else {
				drop = append(drop, ds[:]...)
			}
		}
	}
	// Pages of one repository: the second repository is on the next page.
	r, reg := f.runner(nil, func(c *retention.Config) { c.PageSize = 1 })

	run, err := r.RunRetention(f.ctx, "proj", false)
	if err != nil {
		t.Fatalf("RunRetention: %v", err)
	}
	if got := f.all("proj/a", "proj/team/b"); !maps.Equal(got, set(keep...)) {
		t.Fatalf("left %v, want %v", sorted(got), sorted(set(keep...)))
	}
	if run.Status != policy.RunSucceeded || run.DryRun || run.Trigger != retention.TriggerManual || run.Error != "" {
		t.Errorf("run: status %s dry %v trigger %s error %q", run.Status, run.DryRun, run.Trigger, run.Error)
	}
	if run.Deleted != len(drop) || run.Retained != len(keep) {
		t.Errorf("run counts: %d deleted, %d retained; want %d, %d", run.Deleted, run.Retained, len(drop), len(keep))
	}
	if run.ID != uint64(run.Started) || run.Finished < run.Started {
		t.Errorf("run id %d, started %d, finished %d", run.ID, run.Started, run.Finished)
	}
	// Deletions first, then what was kept.
	if len(run.Decisions) != len(drop)+len(keep) {
		t.Fatalf("%d decisions, want %d", len(run.Decisions), len(drop)+len(keep))
	}
	for i, d := range run.Decisions {
		if d.Retain != (i >= len(drop)) {
			t.Fatalf("decision %d (%s, retain %v): deletions must come first", i, d.Digest, d.Retain)
		}
	}
	if got := deletedIn(run); !maps.Equal(got, set(drop...)) {
		t.Errorf("decisions delete %v, want %v", sorted(got), sorted(set(drop...)))
	}

	// The run is recorded as it was returned.
	runs, err := f.node.RetentionRuns(f.ctx, "proj", 10)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs %v, %v", runs, err)
	}
	if got := runs[0]; got.ID != run.ID || got.Status != policy.RunSucceeded || got.Deleted != run.Deleted || len(got.Decisions) != len(run.Decisions) {
		t.Errorf("recorded run %+v", got)
	}

	// Deletions are audited as retention's, each accessory before its
	// subject.
	events, err := f.node.Audit(f.ctx, policy.AuditFilter{Actor: retention.Actor, Op: policy.AuditDelete, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != len(drop) {
		t.Fatalf("%d delete events by %s, want %d", len(events), retention.Actor, len(drop))
	}
	at := map[string]uint64{}
	for _, e := range events {
		at[e.Target] = e.ID
	}
	checked := 0
	for _, repo := range []string{"proj/a", "proj/team/b"} {
		for i := 0; i < len(drop); i += 3 {
			subject, sig, sbom := at[repo+"@"+string(drop[i])], at[repo+"@"+string(drop[i+1])], at[repo+"@"+string(drop[i+2])]
			if subject == 0 {
				continue // the other repository's
			}
			checked++
			if sig == 0 || sbom == 0 || sig > subject || sbom > subject {
				t.Errorf("%s@%s deleted (event %d) before its signature (%d) and SBOM (%d)", repo, drop[i], subject, sig, sbom)
			}
		}
	}
	if checked != len(drop)/3 {
		t.Errorf("the delete events name %d of the %d deleted subjects (targets %v)", checked, len(drop)/3, slices.Collect(maps.Keys(at)))
	}

	if got := metric(t, reg, "berth_retention_runs_total", "result", "succeeded"); got != 1 {
		t.Errorf("runs_total{succeeded} = %v", got)
	}
	if got := metric(t, reg, "berth_retention_artifacts_deleted_total"); got != float64(len(drop)) {
		t.Errorf("artifacts_deleted_total = %v, want %d", got, len(drop))
	}

	// A second run finds nothing more to delete.
	again, err := r.RunRetention(f.ctx, "proj", false)
	if err != nil || again.Deleted != 0 || again.Retained != len(keep) {
		t.Fatalf("second run: %d deleted, %d retained, %v", again.Deleted, again.Retained, err)
	}
}

func TestDryRunListsExactlyWhatARealRunDeletes(t *testing.T) {
	f := newFixture(t)
	f.project("proj", &policy.RetentionPolicy{Rules: []policy.RetentionRule{
		{Kind: policy.RetainLatestPushed, Param: 1, Repos: "**", Tags: "v*"},
		{Kind: policy.RetainAlways, Repos: "**", Tags: "release-*"},
	}})
	repo := "proj/app"
	for i := range 3 {
		f.signed(repo, fmt.Sprint("v", i), t0+int64(i)*minute, fmt.Sprintf("v%d", i))
	}
	f.signed(repo, "release", t0, "release-1", "v-old")
	f.image(repo, "untagged", t0+10*minute)
	c1 := f.image(repo, "child 1", t0)
	c2 := f.image(repo, "child 2", t0)
	f.image(repo, "child 1 sig", t0, policy.AccessoryTag(c1, ".sig"))
	f.put(repo, "index", t0+minute, oci.MediaTypeImageIndex, "", []oci.Digest{c1, c2}, "v-index")
	f.project("other", latestPushed(0))
	f.image("other/x", "x", t0, "latest")

	r, reg := f.runner(nil, nil)
	before := f.all(repo, "other/x")
	dry, err := r.RunRetention(f.ctx, "proj", true)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if !dry.DryRun || dry.Status != policy.RunSucceeded {
		t.Errorf("dry run: dry %v status %s", dry.DryRun, dry.Status)
	}
	if got := f.all(repo, "other/x"); !maps.Equal(got, before) {
		t.Fatalf("a dry run deleted %d manifests", len(before)-len(got))
	}
	if got := metric(t, reg, "berth_retention_artifacts_deleted_total"); got != 0 {
		t.Errorf("a dry run counted %v deletions", got)
	}
	want := deletedIn(dry)
	// v0, v1 with their accessories (6), the untagged image, the index
	// with its children and the signature of one (4).
	if len(want) != 11 || dry.Deleted != len(want) {
		t.Fatalf("dry run would delete %d (%d counted), want 11", len(want), dry.Deleted)
	}

	real, err := r.RunRetention(f.ctx, "proj", false)
	if err != nil {
		t.Fatalf("real run: %v", err)
	}
	if got := deletedIn(real); !maps.Equal(got, want) {
		t.Fatalf("real run deleted %v, the dry run listed %v", sorted(got), sorted(want))
	}
	after := f.all(repo, "other/x")
	gone := map[oci.Digest]bool{}
	for d := range before {
		if !after[d] {
			gone[d] = true
		}
	}
	if !maps.Equal(gone, want) {
		t.Fatalf("the state lost %v, the dry run listed %v", sorted(gone), sorted(want))
	}
	runs, err := f.node.RetentionRuns(f.ctx, "proj", 10)
	if err != nil || len(runs) != 2 || runs[0].ID != real.ID || !runs[1].DryRun {
		t.Fatalf("recorded runs %v, %v", runs, err)
	}
}

func TestRepositoryNoRuleSelectsIsUntouched(t *testing.T) {
	f := newFixture(t)
	f.project("proj", &policy.RetentionPolicy{Rules: []policy.RetentionRule{
		{Kind: policy.RetainLatestPushed, Param: 1, Repos: "web/**", Tags: "**"},
		{Kind: policy.RetainAlways, Repos: "tools", ExcludeRepos: true, Tags: "keep"},
		{Kind: policy.RetainAlways, Repos: "**", Tags: "**", Disabled: true},
	}})
	var web []oci.Digest
	for i := range 3 {
		web = append(web, f.image("proj/web/front", fmt.Sprint("web", i), t0+int64(i)*minute, fmt.Sprint("v", i)))
	}
	tools := []oci.Digest{
		f.image("proj/tools", "old", t0, "v1"),
		f.image("proj/tools", "untagged", t0),
	}
	r, _ := f.runner(nil, nil)
	run, err := r.RunRetention(f.ctx, "proj", false)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.digests("proj/tools"); !maps.Equal(got, set(tools...)) {
		t.Errorf("proj/tools: left %v, want it untouched", sorted(got))
	}
	if got := f.digests("proj/web/front"); !maps.Equal(got, set(web[2])) {
		t.Errorf("proj/web/front: left %v, want only the newest", sorted(got))
	}
	for _, d := range run.Decisions {
		if d.Repo == "proj/tools" {
			t.Errorf("a decision about proj/tools: %+v", d)
		}
	}
}

func TestPulledRulesUseThePullCounts(t *testing.T) {
	f := newFixture(t)
	f.project("recent", &policy.RetentionPolicy{Rules: []policy.RetentionRule{{Kind: policy.RetainLatestPulled, Param: 1, Repos: "**", Tags: "**"}}})
	f.project("within", &policy.RetentionPolicy{Rules: []policy.RetentionRule{{Kind: policy.RetainPulledWithin, Param: 1, Repos: "**", Tags: "**"}}})
	pulled := func(repo string, d oci.Digest) int64 {
		arts, err := f.node.Artifacts(f.ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range arts {
			if a.Digest == d {
				return a.Pulled
			}
		}
		return 0
	}
	pull := func(repo string, d oci.Digest) {
		// Pulls are counted in batches: wait until this one is written.
		f.node.RecordPull(repo, d, policy.Actor{Name: "ci"})
		eventually(t, 10*time.Second, "pull of "+repo+"@"+string(d)+" counted", func() bool { return pulled(repo, d) != 0 })
	}
	for _, project := range []string{"recent", "within"} {
		repo := project + "/app"
		// a is pushed last: push times must not decide.
		a := f.image(repo, "a", t0+2*minute, "a")
		b := f.image(repo, "b", t0, "b")
		c := f.image(repo, "c", t0+minute, "c")
		pull(repo, a)
		pull(repo, b) // after a's was written: b is the last pulled
		r, _ := f.runner(nil, nil)
		if _, err := r.RunRetention(f.ctx, project, false); err != nil {
			t.Fatal(err)
		}
		want := set(b)
		if project == "within" {
			want = set(a, b) // pulled today; c never
		}
		if got := f.digests(repo); !maps.Equal(got, want) {
			t.Errorf("%s: left %v, want %v (a %s, b %s, c %s)", project, sorted(got), sorted(want), a, b, c)
		}
	}
}

func TestIndexGoesWithItsChildrenAfterIt(t *testing.T) {
	f := newFixture(t)
	f.project("proj", latestPushed(1))
	repo := "proj/multi"
	c1 := f.image(repo, "amd64", t0)
	c2 := f.image(repo, "arm64", t0)
	c1sig := f.image(repo, "amd64 sig", t0, policy.AccessoryTag(c1, ".sig"))
	idx := f.put(repo, "index", t0, oci.MediaTypeImageIndex, "", []oci.Digest{c1, c2}, "v1")
	idxSig := f.image(repo, "index sig", t0, policy.AccessoryTag(idx, ".sig"))
	n1 := f.image(repo, "new amd64", t0+minute)
	newIdx := f.put(repo, "new index", t0+minute, oci.MediaTypeImageIndex, "", []oci.Digest{n1, c2}, "v2")
	r, _ := f.runner(nil, nil)
	run, err := r.RunRetention(f.ctx, "proj", false)
	if err != nil {
		t.Fatalf("run: %v (decisions %+v)", err, run.Decisions)
	}
	// c2 is listed by the kept index too: it stays.
	if got, want := f.digests(repo), set(newIdx, n1, c2); !maps.Equal(got, want) {
		t.Fatalf("left %v, want %v", sorted(got), sorted(want))
	}
	if got, want := deletedIn(run), set(idx, idxSig, c1, c1sig); !maps.Equal(got, want) {
		t.Fatalf("deleted %v, want %v", sorted(got), sorted(want))
	}
}

func TestImmutableArtifactsAreKept(t *testing.T) {
	f := newFixture(t)
	f.project("proj", latestPushed(1), policy.ImmutableRule{Repos: "**", Tags: "v1.*"})
	repo := "proj/app"
	old := f.signed(repo, "old", t0, "v1.0")
	mid := f.signed(repo, "mid", t0+minute, "v2.0")
	newest := f.signed(repo, "new", t0+2*minute, "v3.0")
	r, _ := f.runner(nil, nil)
	run, err := r.RunRetention(f.ctx, "proj", false)
	if err != nil {
		t.Fatal(err)
	}
	want := set(append(old[:], newest[:]...)...)
	if got := f.digests(repo); !maps.Equal(got, want) {
		t.Fatalf("left %v, want %v", sorted(got), sorted(want))
	}
	for _, d := range run.Decisions {
		if d.Digest == old[0] && (!d.Retain || d.Reason != "immutable") {
			t.Errorf("immutable v1.0: %+v", d)
		}
	}
	if got := deletedIn(run); !maps.Equal(got, set(mid[:]...)) {
		t.Errorf("deleted %v", sorted(got))
	}
}

func TestRunRetentionRefusesWhatItCannotRun(t *testing.T) {
	f := newFixture(t)
	f.project("bare", nil)
	f.project("norules", &policy.RetentionPolicy{})
	r, reg := f.runner(nil, nil)
	if _, err := r.RunRetention(f.ctx, "nosuch", false); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("unknown project: %v, want ErrNotFound", err)
	}
	for _, p := range []string{"bare", "norules"} {
		if _, err := r.RunRetention(f.ctx, p, true); !errors.Is(err, retention.ErrNoPolicy) || !errors.Is(err, policy.ErrInvalid) {
			t.Errorf("%s: %v, want ErrNoPolicy", p, err)
		}
	}
	if runs, _ := f.node.RetentionRuns(f.ctx, "bare", 10); len(runs) != 0 {
		t.Errorf("refused runs were recorded: %v", runs)
	}
	if got := metric(t, reg, "berth_retention_runs_total", "result", "failed") + metric(t, reg, "berth_retention_runs_total", "result", "succeeded"); got != 0 {
		t.Errorf("refused runs counted: %v", got)
	}
}

// gatedStore holds every Artifacts call until released, and may refuse or
// fail chosen deletions.
type gatedStore struct {
	*cluster.Node
	entered chan struct{}
	release chan struct{}
	leader  atomic.Bool

	mu     sync.Mutex
	refuse map[oci.Digest]error
}

func (g *gatedStore) Artifacts(ctx context.Context, repo string) ([]policy.Artifact, error) {
	if g.entered != nil {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Node.Artifacts(ctx, repo)
}

func (g *gatedStore) DeleteManifest(ctx context.Context, repo string, d oci.Digest) error {
	g.mu.Lock()
	err := g.refuse[d]
	g.mu.Unlock()
	if err != nil {
		return err
	}
	return g.Node.DeleteManifest(ctx, repo, d)
}

func (g *gatedStore) IsLeader() bool { return g.leader.Load() }

func TestRunsOfAProjectNeverOverlap(t *testing.T) {
	f := newFixture(t)
	f.project("proj", latestPushed(1))
	f.project("other", latestPushed(1))
	f.image("proj/app", "a", t0, "a")
	f.image("other/app", "a", t0, "a")
	g := &gatedStore{Node: f.node, entered: make(chan struct{}, 1), release: make(chan struct{})}
	r, _ := f.runner(g, nil)

	done := make(chan error, 1)
	go func() {
		_, err := r.RunRetention(f.ctx, "proj", false)
		done <- err
	}()
	select {
	case <-g.entered:
	case <-f.ctx.Done():
		t.Fatal("the first run did not start")
	}
	if _, err := r.RunRetention(f.ctx, "proj", true); !errors.Is(err, retention.ErrRunning) || !errors.Is(err, oci.ErrDenied) {
		t.Errorf("a second run on the same node: %v, want ErrRunning", err)
	}
	// Another node's runner sees the run in the state.
	other, _ := f.runner(nil, nil)
	if _, err := other.RunRetention(f.ctx, "proj", false); !errors.Is(err, retention.ErrRunning) {
		t.Errorf("a run through another node: %v, want ErrRunning", err)
	}
	// Another project is not held up.
	if _, err := other.RunRetention(f.ctx, "other", false); err != nil {
		t.Errorf("a run of another project: %v", err)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatalf("first run: %v", err)
	}
	if _, err := other.RunRetention(f.ctx, "proj", true); err != nil {
		t.Errorf("a run after the first ended: %v", err)
	}
}

func TestRefusedDeletionKeepsTheSubjectAndFailsTheRun(t *testing.T) {
	f := newFixture(t)
	f.project("proj", latestPushed(1))
	repo := "proj/app"
	a := f.signed(repo, "a", t0, "a")
	b := f.signed(repo, "b", t0+minute, "b")
	c := f.signed(repo, "c", t0+2*minute, "c")
	g := &gatedStore{Node: f.node, refuse: map[oci.Digest]error{
		a[1]: fmt.Errorf("refused for the test: %w", policy.ErrImmutable),
	}}
	r, reg := f.runner(g, nil)
	run, err := r.RunRetention(f.ctx, "proj", false)
	if !errors.Is(err, retention.ErrRefused) || run.Status != policy.RunFailed || run.Error == "" {
		t.Fatalf("run: %v, status %s, error %q; want it failed with ErrRefused", err, run.Status, run.Error)
	}
	// a's signature could not go, so a stays (its SBOM went first); b
	// goes whole; the other deletions went on.
	want := set(a[0], a[1], c[0], c[1], c[2])
	if got := f.digests(repo); !maps.Equal(got, want) {
		t.Fatalf("left %v, want %v", sorted(got), sorted(want))
	}
	if got := deletedIn(run); !maps.Equal(got, set(a[2], b[0], b[1], b[2])) {
		t.Errorf("recorded as deleted %v", sorted(got))
	}
	if got := metric(t, reg, "berth_retention_runs_total", "result", "failed"); got != 1 {
		t.Errorf("runs_total{failed} = %v", got)
	}
	runs, _ := f.node.RetentionRuns(f.ctx, "proj", 1)
	if len(runs) != 1 || runs[0].Status != policy.RunFailed {
		t.Errorf("recorded %+v", runs)
	}

	// A failure of the cluster stops the run at once.
	g.mu.Lock()
	g.refuse = map[oci.Digest]error{a[1]: fmt.Errorf("no leader: %w", oci.ErrUnavailable)}
	g.mu.Unlock()
	run, err = r.RunRetention(f.ctx, "proj", false)
	if !errors.Is(err, oci.ErrUnavailable) || run.Status != policy.RunFailed {
		t.Fatalf("run: %v, status %s", err, run.Status)
	}
	if got := f.digests(repo); !maps.Equal(got, want) {
		t.Errorf("left %v after an aborted run, want %v", sorted(got), sorted(want))
	}
}

func TestConfigValidate(t *testing.T) {
	if err := retention.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, mod := range []func(*retention.Config){
		func(c *retention.Config) { c.Poll = 0 },
		func(c *retention.Config) { c.Poll = time.Hour },
		func(c *retention.Config) { c.RunTimeout = 0 },
		func(c *retention.Config) { c.PageSize = 0 },
	} {
		c := retention.DefaultConfig()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v validates", c)
		}
		if _, err := retention.New(c, nil, nil, nil); err == nil {
			t.Errorf("New with %+v", c)
		}
	}
	if _, err := retention.New(retention.DefaultConfig(), nil, nil, nil); err == nil {
		t.Error("New without a store")
	}
}
