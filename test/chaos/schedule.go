package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind string

// The kinds of fault.
const (
	// KindKill is a SIGKILL (docker kill); the heal is docker start, on
	// the same volume.
	KindKill Kind = "kill"
	// KindPause freezes the node (docker pause): its connections stay
	// open and silent; the heal is docker unpause.
	KindPause Kind = "pause"
	// KindPartition takes the node off the network (docker network
	// disconnect); the heal is docker network connect.
	KindPartition Kind = "partition"
	// KindKillLeader kills whichever node leads when the fault starts; the
	// time until a write succeeds again through another node is the
	// failover time.
	KindKillLeader Kind = "kill-leader"
)

// Kinds lists every kind, in the order reports show them.
var Kinds = []Kind{KindKill, KindPause, KindPartition, KindKillLeader}

// Fault is one planned fault.
type Fault struct {
	// Start is when it is injected, from the start of the fault phase (or
	// later, when as many faults as allowed are still in effect).
	Start time.Duration
	// Hold is how long it lasts before it is healed.
	Hold time.Duration
	Kind Kind
	// Target is the index of the node; -1 for KindKillLeader, whose node
	// is the leader of the moment.
	Target int
}

func (f Fault) String() string {
	target := "the leader"
	if f.Target >= 0 {
		target = fmt.Sprintf("node #%d", f.Target+1)
	}
	return fmt.Sprintf("at %6s %-11s %s for %s", f.Start.Round(100*time.Millisecond), f.Kind, target, f.Hold.Round(100*time.Millisecond))
}

// Weighted is a kind of fault and how often it is chosen, relative to the
// others.
type Weighted struct {
	Kind   Kind
	Weight int
}

// ScheduleConfig configures NewSchedule.
type ScheduleConfig struct {
	Seed int64
	// Duration is the fault phase: no fault is planned to start later.
	Duration time.Duration
	// Targets is the number of nodes to choose from.
	Targets int
	// MaxFaulted is the most nodes in a fault at once: a minority,
	// (Targets-1)/2, for one cluster.
	MaxFaulted int
	Kinds      []Weighted
	// Gap bounds the time between one fault's start and the next one's;
	// Hold bounds how long a fault lasts. Each is drawn uniformly from
	// [min, max].
	Gap, Hold [2]time.Duration
}

// DefaultScheduleConfig faults a minority of nodes at a time, every few
// seconds, with every kind of fault.
func DefaultScheduleConfig(seed int64, duration time.Duration, nodes int) ScheduleConfig {
	return ScheduleConfig{
		Seed:       seed,
		Duration:   duration,
		Targets:    nodes,
		MaxFaulted: (nodes - 1) / 2,
		Kinds: []Weighted{
			{KindKill, 3},
			{KindPause, 2},
			{KindPartition, 3},
			{KindKillLeader, 3},
		},
		Gap:  [2]time.Duration{2 * time.Second, 8 * time.Second},
		Hold: [2]time.Duration{4 * time.Second, 15 * time.Second},
	}
}

// NewSchedule plans the faults of cfg. It depends on nothing but cfg: the
// same seed gives the same schedule. Never more than MaxFaulted faults are
// planned to be in effect at once, and never two on the node they name (a
// leader kill names none: Faults moves a fault off a node that is already
// in one).
func NewSchedule(cfg ScheduleConfig) []Fault {
	if cfg.MaxFaulted < 1 || cfg.Targets < 1 || len(cfg.Kinds) == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0xfa17))
	type busy struct {
		until  time.Duration
		target int // -1: the leader, some node not otherwise busy
	}
	var (
		faults []Fault
		active []busy
	)
	for t := uniform(rng, cfg.Gap); t < cfg.Duration; {
		active = slices.DeleteFunc(active, func(b busy) bool { return b.until <= t })
		if len(active) >= cfg.MaxFaulted {
			// Every slot is taken: the next fault comes a gap after the
			// first heal.
			first := slices.MinFunc(active, func(a, b busy) int { return int(a.until - b.until) })
			t = first.until + uniform(rng, cfg.Gap)
			continue
		}
		kind := pickKind(rng, cfg.Kinds)
		target := -1
		if kind != KindKillLeader {
			var free []int
			for i := range cfg.Targets {
				if !slices.ContainsFunc(active, func(b busy) bool { return b.target == i }) {
					free = append(free, i)
				}
			}
			target = free[rng.IntN(len(free))]
		}
		hold := uniform(rng, cfg.Hold)
		faults = append(faults, Fault{Start: t, Hold: hold, Kind: kind, Target: target})
		active = append(active, busy{until: t + hold, target: target})
		t += uniform(rng, cfg.Gap)
	}
	return faults
}

// FormatSchedule lists faults one a line.
func FormatSchedule(faults []Fault) string {
	var b strings.Builder
	for i, f := range faults {
		fmt.Fprintf(&b, "%3d %s\n", i+1, f)
	}
	return b.String()
}

func uniform(rng *rand.Rand, r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + time.Duration(rng.Int64N(int64(r[1]-r[0])))
}

func pickKind(rng *rand.Rand, kinds []Weighted) Kind {
	total := 0
	for _, k := range kinds {
		total += k.Weight
	}
	n := rng.IntN(total)
	for _, k := range kinds {
		if n < k.Weight {
			return k.Kind
		}
		n -= k.Weight
	}
	return kinds[len(kinds)-1].Kind
}
