package retention_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/retention"
)

// memStore is an in-memory Store for the scheduler's tests, whose clock
// is synctest's.
type memStore struct {
	mu       sync.Mutex
	leader   bool
	projects map[string]policy.Project
	arts     map[string][]policy.Artifact // repository → artifacts
	runs     map[string][]policy.RetentionRun
	// block, when set, holds every Artifacts call until it is closed.
	block chan struct{}
}

var _ retention.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{projects: map[string]policy.Project{}, arts: map[string][]policy.Artifact{}, runs: map[string][]policy.RetentionRun{}}
}

func (s *memStore) setLeader(b bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leader = b
}

func (s *memStore) IsLeader() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader
}

func (s *memStore) Projects(ctx context.Context, last string, n int) ([]policy.Project, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []policy.Project
	for _, p := range s.projects {
		if p.Name > last {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b policy.Project) int { return cmp.Compare(a.Name, b.Name) })
	return out[:min(n, len(out))], nil
}

func (s *memStore) Project(ctx context.Context, name string) (policy.Project, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.projects[name]
	if !ok {
		return p, fmt.Errorf("project %s: %w", name, oci.ErrNotFound)
	}
	return p, nil
}

func (s *memStore) ProjectRepositories(ctx context.Context, project, last string, n int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for repo := range s.arts {
		if rel, ok := strings.CutPrefix(repo, project+"/"); ok && rel > last {
			out = append(out, repo)
		}
	}
	slices.Sort(out)
	return out[:min(n, len(out))], nil
}

func (s *memStore) Artifacts(ctx context.Context, repo string) ([]policy.Artifact, error) {
	s.mu.Lock()
	block := s.block
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.arts[repo]) == 0 {
		return nil, fmt.Errorf("repository %s: %w", repo, oci.ErrNotFound)
	}
	return slices.Clone(s.arts[repo]), nil
}

func (s *memStore) DeleteManifest(ctx context.Context, repo string, d oci.Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.arts[repo], func(a policy.Artifact) bool { return a.Digest == d })
	if i < 0 {
		return fmt.Errorf("manifest %s: %w", d, oci.ErrNotFound)
	}
	s.arts[repo] = slices.Delete(s.arts[repo], i, i+1)
	return nil
}

func (s *memStore) PutRetentionRun(ctx context.Context, run policy.RetentionRun) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	runs := s.runs[run.Project]
	if i := slices.IndexFunc(runs, func(r policy.RetentionRun) bool { return r.ID == run.ID }); i >= 0 {
		runs[i] = run
		return nil
	}
	s.runs[run.Project] = append(runs, run)
	return nil
}

func (s *memStore) RetentionRuns(ctx context.Context, project string, n int) ([]policy.RetentionRun, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	runs := slices.Clone(s.runs[project])
	slices.SortFunc(runs, func(a, b policy.RetentionRun) int { return cmp.Compare(b.ID, a.ID) })
	return runs[:min(n, len(runs))], nil
}

// scheduledRuns returns project's runs made by the schedule, oldest first.
func (s *memStore) scheduledRuns(project string) []policy.RetentionRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []policy.RetentionRun
	for _, r := range s.runs[project] {
		if r.Trigger == retention.TriggerSchedule {
			out = append(out, r)
		}
	}
	return out
}

// addProject adds project name with schedule spec, created and updated at
// the times given, and a repository of three artifacts.
func (s *memStore) addProject(name, spec string, created, updated time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.projects[name] = policy.Project{
		Name: name, Created: created.UnixNano(), Updated: updated.UnixNano(),
		Retention: &policy.RetentionPolicy{Schedule: spec, Rules: []policy.RetentionRule{
			{Kind: policy.RetainLatestPushed, Param: 1, Repos: "**", Tags: "**"},
		}},
	}
	for i := range 3 {
		s.arts[name+"/app"] = append(s.arts[name+"/app"], policy.Artifact{
			Repo: name + "/app", Digest: oci.DigestOf(fmt.Appendf(nil, "%s %d", name, i)), Tags: []string{fmt.Sprint("v", i)},
			Pushed: created.UnixNano() + int64(i), MediaType: oci.MediaTypeImageManifest,
		})
	}
}

// scheduler starts a Runner's Run over s in the bubble and returns a stop
// function that ends it and waits.
func scheduler(t *testing.T, s *memStore) (*retention.Runner, func()) {
	t.Helper()
	cfg := retention.DefaultConfig() // Poll 15s
	r, err := retention.New(cfg, s, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	return r, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// hourly is due at the start of every hour (of UTC, as the bubble's
// clock starts at midnight UTC, whatever the local zone).
const hourly = "CRON_TZ=UTC 0 * * * *"

// advance lets fake time pass by d and waits for every goroutine of the
// bubble to block.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func wantRuns(t *testing.T, s *memStore, project string, n int) {
	t.Helper()
	runs := s.scheduledRuns(project)
	if len(runs) != n {
		var at []string
		for _, r := range runs {
			at = append(at, time.Unix(0, r.Started).UTC().Format(time.TimeOnly))
		}
		t.Fatalf("at %s: %d scheduled runs of %s (at %v), want %d", time.Now().UTC().Format(time.DateTime), len(runs), project, at, n)
	}
}

func TestScheduledRunsOnlyOnTheLeaderWhenDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		start := time.Now()
		s.addProject("hourly", hourly, start, start)
		s.addProject("manual", "", start, start)
		_, stop := scheduler(t, s)
		defer stop()

		advance(3*time.Hour + 30*time.Minute)
		wantRuns(t, s, "hourly", 0) // not the leader

		// Leading now: the 01:00, 02:00 and 03:00 runs nobody made are
		// one catch-up run.
		s.setLeader(true)
		advance(20 * time.Second)
		wantRuns(t, s, "hourly", 1)
		advance(29 * time.Minute) // 03:59:20
		wantRuns(t, s, "hourly", 1)
		advance(time.Minute) // 04:00:20
		wantRuns(t, s, "hourly", 2)
		if run := s.scheduledRuns("hourly")[1]; run.Status != policy.RunSucceeded || run.Deleted != 0 {
			t.Errorf("second run: %+v", run)
		}
		if first := s.scheduledRuns("hourly")[0]; first.Deleted != 2 {
			t.Errorf("first run deleted %d, want 2", first.Deleted)
		}

		s.setLeader(false)
		advance(3 * time.Hour)
		wantRuns(t, s, "hourly", 2)
		if runs, _ := s.RetentionRuns(context.Background(), "manual", 10); len(runs) != 0 {
			t.Errorf("a project without a schedule ran %d times", len(runs))
		}
	})
}

func TestNewLeaderRunsOneCatchUpNotTheBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		now := time.Now()
		s.addProject("p", hourly, now.Add(-30*24*time.Hour), now.Add(-30*24*time.Hour))
		// The previous leader's last scheduled run, ten days ago.
		old := now.Add(-10 * 24 * time.Hour)
		_ = s.PutRetentionRun(context.Background(), policy.RetentionRun{ID: uint64(old.UnixNano()), Project: "p",
			Trigger: retention.TriggerSchedule, Status: policy.RunSucceeded, Started: old.UnixNano(), Finished: old.UnixNano()})
		s.setLeader(true)
		_, stop := scheduler(t, s)
		defer stop()

		advance(20 * time.Second)
		wantRuns(t, s, "p", 2) // the old one and one catch-up
		advance(50 * time.Minute)
		wantRuns(t, s, "p", 2)
		advance(10 * time.Minute) // past 01:00
		wantRuns(t, s, "p", 3)
	})
}

func TestNewScheduleIsNotDueForTheTimeBeforeIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		now := time.Now().Add(10 * time.Minute) // 00:10
		time.Sleep(10 * time.Minute)
		// A project of last month whose schedule was set just now.
		s.addProject("p", hourly, now.Add(-30*24*time.Hour), now)
		s.setLeader(true)
		_, stop := scheduler(t, s)
		defer stop()

		advance(45 * time.Minute) // 00:55
		wantRuns(t, s, "p", 0)
		advance(10 * time.Minute) // 01:05
		wantRuns(t, s, "p", 1)
	})
}

func TestDueRunSkippedWhileThePreviousOneRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		start := time.Now()
		s.addProject("p", "@every 1m", start, start)
		s.block = make(chan struct{})
		s.setLeader(true)
		r, stop := scheduler(t, s)
		defer stop()

		advance(70 * time.Second)
		wantRuns(t, s, "p", 1)
		if _, err := r.RunRetention(context.Background(), "p", true); !errors.Is(err, retention.ErrRunning) {
			t.Errorf("a manual run during a scheduled one: %v, want ErrRunning", err)
		}
		advance(5 * time.Minute) // five more due times, skipped
		wantRuns(t, s, "p", 1)
		if run := s.scheduledRuns("p")[0]; run.Status != policy.RunRunning {
			t.Fatalf("first run %s, want running", run.Status)
		}

		s.mu.Lock()
		close(s.block)
		s.block = nil
		s.mu.Unlock()
		synctest.Wait()
		if run := s.scheduledRuns("p")[0]; run.Status != policy.RunSucceeded {
			t.Fatalf("first run %s after its release", run.Status)
		}
		advance(time.Minute)
		wantRuns(t, s, "p", 2)
	})
}

func TestInterruptedRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		now := time.Now().Add(8 * time.Hour)
		time.Sleep(8 * time.Hour)
		s.addProject("recent", "", now, now)
		s.addProject("stale", "CRON_TZ=UTC @daily", now, now)
		// A run of each left "running" by a node that stopped: one an
		// hour ago, one seven hours ago (runs end by RunTimeout, 6h).
		for p, at := range map[string]time.Time{"recent": now.Add(-time.Hour), "stale": now.Add(-7 * time.Hour)} {
			_ = s.PutRetentionRun(context.Background(), policy.RetentionRun{ID: uint64(at.UnixNano()), Project: p,
				Trigger: retention.TriggerManual, Status: policy.RunRunning, Started: at.UnixNano()})
		}
		r, err := retention.New(retention.DefaultConfig(), s, quiet(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.RunRetention(context.Background(), "recent", false); !errors.Is(err, retention.ErrRunning) {
			t.Errorf("a run while another node's may still go on: %v, want ErrRunning", err)
		}

		// The leader records the stale one as failed when it first sees
		// its project's schedule.
		s.setLeader(true)
		_, stop := scheduler(t, s)
		advance(20 * time.Second)
		stop()
		runs, _ := s.RetentionRuns(context.Background(), "stale", 1)
		if len(runs) != 1 || runs[0].Status != policy.RunFailed || !strings.Contains(runs[0].Error, "interrupted") {
			t.Fatalf("stale run: %+v", runs)
		}
		if run, err := r.RunRetention(context.Background(), "stale", true); err != nil || run.Status != policy.RunSucceeded {
			t.Fatalf("a run after an interrupted one: %+v, %v", run, err)
		}
	})
}

// TestRunAfterAnInterruptedOne: a project without a schedule is never
// seen by the leader's scheduler; its next run records the interrupted
// one as failed, so that it does not stay "running" for ever.
func TestRunAfterAnInterruptedOne(t *testing.T) {
	s := newMemStore()
	now := time.Now()
	s.addProject("p", "", now, now)
	at := now.Add(-7 * time.Hour) // runs end by RunTimeout, 6h
	_ = s.PutRetentionRun(context.Background(), policy.RetentionRun{ID: uint64(at.UnixNano()), Project: "p",
		Trigger: retention.TriggerManual, Status: policy.RunRunning, Started: at.UnixNano()})
	r, err := retention.New(retention.DefaultConfig(), s, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	run, err := r.RunRetention(context.Background(), "p", true)
	if err != nil || run.Status != policy.RunSucceeded {
		t.Fatalf("a run after an interrupted one: %+v, %v", run, err)
	}
	runs, _ := s.RetentionRuns(context.Background(), "p", 2)
	if len(runs) != 2 || runs[1].ID != uint64(at.UnixNano()) || runs[1].Status != policy.RunFailed || !strings.Contains(runs[1].Error, "interrupted") {
		t.Fatalf("the interrupted run: %+v", runs)
	}
}

func TestScheduledRunsHappenOnTheLeader(t *testing.T) {
	f := newFixture(t)
	pol := latestPushed(1)
	pol.Schedule = "@every 1s"
	f.project("proj", pol)
	f.project("manual", latestPushed(0))
	repo := "proj/app"
	f.image(repo, "old", t0, "old")
	newest := f.image(repo, "new", t0+minute, "new")
	f.image("manual/app", "x", t0, "x")

	g := &gatedStore{Node: f.node}
	g.leader.Store(true)
	r, reg := f.runner(g, nil)
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	var run policy.RetentionRun
	eventually(t, 20*time.Second, "a scheduled run", func() bool {
		runs, err := f.node.RetentionRuns(f.ctx, "proj", 1)
		if err != nil || len(runs) == 0 || runs[0].Status == policy.RunRunning {
			return false
		}
		run = runs[0]
		return true
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if run.Trigger != retention.TriggerSchedule || run.Status != policy.RunSucceeded || run.DryRun {
		t.Errorf("scheduled run %+v", run)
	}
	if got := f.digests(repo); !maps.Equal(got, set(newest)) {
		t.Errorf("left %v", sorted(got))
	}
	// A project without a schedule runs only by hand.
	if runs, _ := f.node.RetentionRuns(f.ctx, "manual", 1); len(runs) != 0 {
		t.Errorf("a project without a schedule ran: %+v", runs)
	}
	if len(f.digests("manual/app")) != 1 {
		t.Error("a project without a schedule lost artifacts")
	}
	if got := metric(t, reg, "berth_retention_runs_total", "result", "succeeded"); got < 1 {
		t.Errorf("runs_total{succeeded} = %v", got)
	}
}
