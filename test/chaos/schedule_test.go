package chaos

import (
	"reflect"
	"testing"
	"time"
)

func TestScheduleReplays(t *testing.T) {
	cfg := DefaultScheduleConfig(42, 3*time.Minute, 3)
	a, b := NewSchedule(cfg), NewSchedule(cfg)
	if len(a) == 0 {
		t.Fatal("no faults planned")
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("the same seed gave two schedules:\n%s\n%s", FormatSchedule(a), FormatSchedule(b))
	}
	cfg.Seed = 43
	if c := NewSchedule(cfg); reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same schedule:\n%s", FormatSchedule(a))
	}
}

func TestScheduleFaultsAMinority(t *testing.T) {
	for _, nodes := range []int{1, 2, 3, 5, 7} {
		for seed := range int64(50) {
			cfg := DefaultScheduleConfig(seed, 3*time.Minute, nodes)
			if nodes == 1 {
				cfg.MaxFaulted = 1 // the harness check of make chaos with one node
			}
			faults := NewSchedule(cfg)
			if cfg.MaxFaulted == 0 && len(faults) > 0 {
				t.Fatalf("%d nodes, seed %d: %d faults planned with no minority to fault", nodes, seed, len(faults))
			}
			for i, f := range faults {
				if f.Start >= cfg.Duration || f.Hold < cfg.Hold[0] || f.Hold > cfg.Hold[1] {
					t.Fatalf("%d nodes, seed %d: fault %d out of bounds: %s", nodes, seed, i+1, f)
				}
				if f.Target >= nodes || (f.Target < 0) != (f.Kind == KindKillLeader) {
					t.Fatalf("%d nodes, seed %d: fault %d has target %d", nodes, seed, i+1, f.Target)
				}
				inEffect := 0
				for j, g := range faults[:i] {
					if g.Start+g.Hold <= f.Start {
						continue
					}
					inEffect++
					if f.Target >= 0 && g.Target == f.Target {
						t.Fatalf("%d nodes, seed %d: faults %d and %d overlap on node #%d", nodes, seed, j+1, i+1, f.Target+1)
					}
				}
				if inEffect >= cfg.MaxFaulted {
					t.Fatalf("%d nodes, seed %d: fault %d starts with %d others in effect, at most %d at once:\n%s",
						nodes, seed, i+1, inEffect, cfg.MaxFaulted, FormatSchedule(faults))
				}
			}
		}
	}
}

func TestPercentile(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		p    int
		want time.Duration
	}{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {1, 1}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("p%d = %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %d", got)
	}
}
