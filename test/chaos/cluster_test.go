package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Bounds of the cluster scenario, beyond the fault phase itself.
const (
	// firstAckTimeout bounds the wait for the workload's first
	// acknowledged push, before any fault.
	firstAckTimeout = time.Minute
	// phaseOverrun is how long the fault phase may run past its plan:
	// faults wait for a free slot, heals for readiness.
	phaseOverrun = 2 * time.Minute
	// convergeTimeout bounds the wait for every node to report the same
	// applied state after the last heal.
	convergeTimeout = 3 * time.Minute
)

// TestCluster is the chaos scenario of one berth cluster: CHAOS_NODES
// nodes under a seeded schedule of kills, freezes, partitions and leader
// kills (a minority at a time) while clients push and pull; then heal,
// converge and check.
func TestCluster(t *testing.T) {
	cfg := chaosConfig(t)
	ctx := testContext(t)
	env := startEnv(t, ctx, cfg)
	r := &Report{
		Scenario: fmt.Sprintf("one cluster of %d nodes", cfg.Nodes),
		Seed:     cfg.Seed,
		Replay:   fmt.Sprintf("CHAOS_SEED=%d CHAOS_NODES=%d CHAOS_DURATION=%s make chaos", cfg.Seed, cfg.Nodes, cfg.Duration),
		Image:    cfg.Image,
		Nodes:    cfg.Nodes,
		Planned:  cfg.Duration,
	}
	defer finish(t, cfg, env, r)

	c, err := env.StartCluster(ctx, ClusterSpec{Name: "c", Nodes: cfg.Nodes})
	if err != nil {
		r.Fail("start the cluster: %v", err)
		return
	}
	runClusterChaos(t, ctx, cfg, env, c, r)
}

// runClusterChaos runs the workload and the fault schedule against c,
// heals, and runs every checker, recording the outcome in r.
func runClusterChaos(t *testing.T, ctx context.Context, cfg Config, env *Env, c *Cluster, r *Report) {
	sc := DefaultScheduleConfig(cfg.Seed, cfg.Duration, len(c.Nodes))
	switch {
	case len(c.Nodes) == 1:
		sc.MaxFaulted = 1
		r.Note("one node: it is faulted although it is no minority, which checks the harness, not failover")
	case sc.MaxFaulted == 0:
		r.Note("%d nodes have no minority to fault: no faults", len(c.Nodes))
	}
	r.Schedule = NewSchedule(sc)
	t.Logf("schedule of seed %d:\n%s", cfg.Seed, FormatSchedule(r.Schedule))
	if dir := artifactDir(t, cfg, env); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "schedule.txt"), []byte(FormatSchedule(r.Schedule)), 0o644); err != nil {
			t.Log(err)
		}
	}

	client := NewClient(env.Password)
	defer client.Close()
	ledger := &Ledger{}
	faults := NewFaults(FaultsConfig{
		Nodes: c.Nodes, Leader: c.Leader, MaxFaulted: sc.MaxFaulted,
		Client: client, Ledger: ledger, Seed: cfg.Seed, Logf: t.Logf,
	})
	wcfg := DefaultWorkloadConfig()
	wcfg.Seed, wcfg.Pushers, wcfg.Pullers = cfg.Seed, cfg.Pushers, cfg.Pullers
	work := NewWorkload(wcfg, client, c.Nodes, ledger, faults)

	workCtx, stopWork := context.WithCancel(ctx)
	workDone := make(chan struct{})
	go func() {
		defer close(workDone)
		work.Run(workCtx)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopWork()
			<-workDone
			stopped = true
		}
	}
	defer stop()

	// Faults start only once the cluster takes writes.
	if !pollUntil(ctx, firstAckTimeout, func() bool { return ledger.Len() > 0 }) {
		r.Fail("no push acknowledged within %s of the start, before any fault: %v", firstAckTimeout, work.Stats().Samples)
		return
	}

	phaseStart := time.Now()
	phaseCtx, endPhase := context.WithTimeout(ctx, cfg.Duration+phaseOverrun)
	faults.Run(phaseCtx, r.Schedule)
	endPhase()
	r.Ran = time.Since(phaseStart)
	stop()
	r.Injected = faults.Log()
	r.Workload = work.Stats()
	r.Acked = ledger.Len()
	if ctx.Err() != nil {
		r.Fail("stopped before the checks: %v", context.Cause(ctx))
		return
	}
	for _, in := range r.Injected {
		switch {
		case in.Broken:
			r.Fail("%s", in)
		case in.Missed:
			r.Note("%s", in)
		}
	}
	if n := len(r.Injected); n < len(r.Schedule) {
		r.Note("%d planned faults did not start within the phase's %s", len(r.Schedule)-n, cfg.Duration+phaseOverrun)
	}

	// Heal whatever is left, then the checkers.
	lastHeal := faults.LastHeal()
	did, err := HealAll(ctx, c.Nodes)
	if len(did) > 0 {
		r.Note("the final heal had to: %s", strings.Join(did, ", "))
		lastHeal = time.Now()
	}
	if err != nil {
		r.Fail("heal every node: %v", err)
		return
	}
	if lastHeal.IsZero() {
		lastHeal = time.Now()
	}
	conv, err := c.WaitConverged(ctx, convergeTimeout)
	r.Convergence, r.Converged = time.Since(lastHeal), conv
	if err != nil {
		r.Fail("convergence: %v", err)
	}

	images := ledger.Images()
	r.Images = CheckImages(ctx, client, c.Nodes, images)
	if r.Images.LostImages > 0 {
		r.Fail("%d of %d acknowledged images are not served intact by every node; first ones:\n%s",
			r.Images.LostImages, len(images), strings.Join(r.Images.Lost[:min(10, len(r.Images.Lost))], "\n"))
	}

	crashes, err := CheckLogs(ctx, c.Nodes, artifactDir(t, cfg, env))
	r.Crashes = crashes
	if err != nil {
		r.Fail("read the container logs: %v", err)
	}
	if len(crashes) > 0 {
		r.Fail("%d log lines show a panic, a fatal error or a data race", len(crashes))
	}

	s := r.Workload
	if s.PullsWrong > 0 {
		r.Fail("%d pulls got other content than was pushed: %v", s.PullsWrong, s.Samples["pull wrong"])
	}
	if s.PullsFalseNotFound > 0 {
		r.Fail("%d pulls of acknowledged images were answered 404 with no fault in effect: %v", s.PullsFalseNotFound, s.Samples["false not found"])
	}
	if s.PushesRejected > 0 {
		r.Note("%d pushes were refused with a 4xx (not acknowledged, so not lost): %v", s.PushesRejected, s.Samples["push rejected"])
	}
	if s.PullsRefused > 0 {
		r.Note("%d pulls were refused with a 4xx other than 404: %v", s.PullsRefused, s.Samples["pull refused"])
	}
}

// pollUntil calls ok until it returns true or timeout passes.
func pollUntil(ctx context.Context, timeout time.Duration, ok func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !ok() {
		if !waitUntil(ctx, time.Now().Add(pollInterval)) {
			return false
		}
	}
	return true
}
