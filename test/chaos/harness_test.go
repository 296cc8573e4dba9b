package chaos

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// chaosConfig reads the environment, skipping the test when no image is
// given (outside make chaos), and logs the seed.
func chaosConfig(t *testing.T) Config {
	t.Helper()
	cfg, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Image == "" {
		t.Skip("CHAOS_IMAGE is not set: run make chaos")
	}
	t.Logf("seed %d", cfg.Seed)
	return cfg
}

// testContext ends a minute before the test's deadline, or at Ctrl-C,
// leaving time to heal, report and clean up.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	t.Cleanup(stop)
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-time.Minute))
		t.Cleanup(cancel)
	}
	return ctx
}

// startEnv creates the run's Docker environment and removes it when the
// test ends; a failed test first saves every node's log into dir, and
// with CHAOS_KEEP=1 leaves everything for a look.
func startEnv(t *testing.T, ctx context.Context, cfg Config) *Env {
	t.Helper()
	env, err := NewEnv(ctx, EnvConfig{Image: cfg.Image, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			if dir := artifactDir(t, cfg, env); dir != "" {
				if _, err := CheckLogs(ctx, env.Nodes(), dir); err != nil {
					t.Logf("save logs: %v", err)
				}
				t.Logf("logs of the failed run are in %s", dir)
			}
			if cfg.Keep {
				t.Logf("CHAOS_KEEP: leaving the containers, network and volumes of %s; the next run removes them", env.Prefix)
				return
			}
		}
		if err := env.Close(ctx); err != nil {
			t.Errorf("remove the run's Docker objects: %v", err)
		}
	})
	return env
}

// artifactDir is the run's directory under CHAOS_ARTIFACTS, created on
// first use; "" when none is configured.
func artifactDir(t *testing.T, cfg Config, env *Env) string {
	t.Helper()
	if cfg.Artifacts == "" {
		return ""
	}
	dir := filepath.Join(cfg.Artifacts, env.Prefix)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("artifacts: %v", err)
		return ""
	}
	return dir
}

// finish prints the report, writes it into the run's artifact directory
// and fails the test for each problem in it.
func finish(t *testing.T, cfg Config, env *Env, r *Report) {
	t.Helper()
	if err := r.Write(os.Stdout); err != nil {
		t.Error(err)
	}
	if dir := artifactDir(t, cfg, env); dir != "" {
		f, err := os.Create(filepath.Join(dir, "report.txt"))
		if err == nil {
			err = r.Write(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			t.Errorf("write report: %v", err)
		} else {
			t.Logf("report and logs: %s", dir)
		}
	}
	for _, p := range r.Problems {
		t.Error(p)
	}
}
