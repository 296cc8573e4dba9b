package chaos

import (
	"context"
	"fmt"
	mrand "math/rand"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// Bounds of fault injection.
const (
	// leaderTimeout bounds the search for the leader to kill (an election
	// may be under way).
	leaderTimeout = 15 * time.Second
	// failoverTimeout bounds the wait for a write after a leader kill.
	failoverTimeout = 90 * time.Second
	// probeTimeout bounds one write attempt of the failover probe: short,
	// so that the measurement is fine-grained.
	probeTimeout = 5 * time.Second
	probeGap     = 100 * time.Millisecond
	// healTimeout bounds the docker commands of a heal.
	healTimeout = 2 * time.Minute
)

// actions are the docker commands that inject and heal each kind of fault.
var actions = map[Kind]struct {
	inject, heal func(*Node, context.Context) error
}{
	KindKill:       {(*Node).Kill, (*Node).Start},
	KindKillLeader: {(*Node).Kill, (*Node).Start},
	KindPause:      {(*Node).Pause, (*Node).Unpause},
	KindPartition:  {(*Node).Disconnect, (*Node).Connect},
}

// Injected is what became of one planned fault.
type Injected struct {
	Fault
	Node string // the node it hit; empty when it was skipped
	// At and Healed are the offsets, from the start of the fault phase, of
	// the injection and of the moment the node was ready again after the
	// heal (0: never); When is the injection's wall-clock time, to find it
	// in the nodes' logs.
	At, Healed time.Duration
	When       time.Time
	// Failover is, for a leader kill, the time until a write succeeded
	// again through another node (0: none was measured).
	Failover time.Duration
	// Err says why the fault was skipped or what went wrong with it.
	Err string
	// Missed means the docker command that injects it failed, so the fault
	// may not have happened (it was undone at once).
	Missed bool
	// Broken means the node did not recover after the heal, or no write
	// succeeded after a leader kill.
	Broken bool
}

func (i Injected) String() string {
	s := fmt.Sprintf("%-11s %-8s at %6s", i.Kind, i.Node, i.At.Round(100*time.Millisecond))
	if !i.When.IsZero() {
		s += i.When.UTC().Format(" (15:04:05.000Z)")
	}
	if i.Healed > 0 {
		s += fmt.Sprintf(", ready again at %6s", i.Healed.Round(100*time.Millisecond))
	}
	if i.Failover > 0 {
		s += fmt.Sprintf(", failover %s", i.Failover.Round(time.Millisecond))
	}
	if i.Err != "" {
		s += ": " + i.Err
	}
	return s
}

// FaultsConfig configures Faults.
type FaultsConfig struct {
	// Nodes are the targets: a schedule's Target indexes them. They may
	// span several clusters.
	Nodes []*Node
	// Leader finds the node to kill for KindKillLeader, asking the healthy
	// nodes; Cluster.Leader for one cluster. Nil: leader kills are skipped.
	Leader func(ctx context.Context, healthy []*Node) (*Node, error)
	// MaxFaulted is the most nodes in a fault at once, at least 1.
	MaxFaulted int
	// Client and Ledger serve the failover probes: tiny images, pushed and
	// recorded like every acknowledged push.
	Client *Client
	Ledger *Ledger
	// Seed seeds the probes' images.
	Seed int64
	// Logf reports each fault and heal; nil discards it.
	Logf func(format string, args ...any)
}

// Faults injects a schedule of faults and heals them, never letting more
// than MaxFaulted nodes be in a fault at once: a node counts as faulted
// from its injection until it is ready again after its heal. It measures
// failover after every leader kill, and implements Weather for the
// workload.
type Faults struct {
	cfg  FaultsConfig
	logf func(format string, args ...any)

	mu       sync.Mutex
	start    time.Time
	faulted  map[*Node]bool
	epoch    uint64
	lastHeal time.Time
	log      []Injected
}

var _ Weather = (*Faults)(nil)

// NewFaults returns an injector for cfg.Nodes.
func NewFaults(cfg FaultsConfig) *Faults {
	cfg.MaxFaulted = max(cfg.MaxFaulted, 1)
	f := &Faults{cfg: cfg, logf: cfg.Logf, faulted: map[*Node]bool{}}
	if f.logf == nil {
		f.logf = func(string, ...any) {}
	}
	return f
}

// Calm implements Weather.
func (f *Faults) Calm() (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epoch, len(f.faulted) == 0
}

// LastHeal is when the last healed node was ready again.
func (f *Faults) LastHeal() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastHeal
}

// Log returns what became of each planned fault so far.
func (f *Faults) Log() []Injected {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Injected(nil), f.log...)
}

// Run injects the faults of schedule at their times and returns when
// every one has been healed. Once ctx ends no new fault starts, and those
// in effect are healed at once.
func (f *Faults) Run(ctx context.Context, schedule []Fault) {
	f.mu.Lock()
	f.start = time.Now()
	f.mu.Unlock()
	slots := make(chan struct{}, f.cfg.MaxFaulted)
	var wg sync.WaitGroup
	for i, fault := range schedule {
		if !waitUntil(ctx, f.start.Add(fault.Start)) {
			break
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		idx := f.record(Injected{Fault: fault, At: time.Since(f.start)})
		n, at, err := f.inject(ctx, fault)
		if n == nil {
			f.update(idx, func(in *Injected) { in.Err = err.Error() })
			f.logf("fault %d %s: %v", i+1, fault.Kind, err)
			<-slots
			continue
		}
		f.update(idx, func(in *Injected) { in.Node, in.At, in.When = n.Short, at.Sub(f.start), at })
		undo, hold := actions[fault.Kind].heal, fault.Hold
		if err != nil {
			// Docker could not do it (the freezer of cgroup v1 sometimes
			// cannot freeze): no fault to vouch for, but undo at once
			// whatever part of it happened.
			f.update(idx, func(in *Injected) { in.Missed, in.Err = true, "not injected: "+err.Error() })
			f.logf("fault %d %s of %s not injected: %v", i+1, fault.Kind, n.Short, err)
			undo, hold = (*Node).healAny, 0
		} else {
			f.logf("fault %d: %s %s for %s", i+1, fault.Kind, n.Short, fault.Hold.Round(100*time.Millisecond))
			if fault.Kind == KindKillLeader {
				wg.Go(func() { f.measureFailover(ctx, idx, n, at) })
			}
		}
		wg.Go(func() {
			defer func() { <-slots }()
			waitUntil(ctx, at.Add(hold))
			f.heal(idx, n, undo)
		})
	}
	wg.Wait()
}

// waitUntil waits until t or until ctx ends; it reports whether ctx is
// still live.
func waitUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (f *Faults) record(in Injected) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, in)
	return len(f.log) - 1
}

func (f *Faults) update(i int, change func(*Injected)) {
	f.mu.Lock()
	change(&f.log[i])
	f.mu.Unlock()
}

// healthy returns the nodes not in a fault, in cluster order.
func (f *Faults) healthy() []*Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*Node
	for _, n := range f.cfg.Nodes {
		if !f.faulted[n] {
			out = append(out, n)
		}
	}
	return out
}

// target resolves a fault's node: the leader for a leader kill; else the
// node it names or, when that one is in a fault already (a leader kill
// took it), the next healthy one.
func (f *Faults) target(ctx context.Context, fault Fault) (*Node, error) {
	healthy := f.healthy()
	if len(healthy) == 0 {
		return nil, fmt.Errorf("no healthy node")
	}
	if fault.Kind == KindKillLeader {
		if f.cfg.Leader == nil {
			return nil, fmt.Errorf("no way to find a leader")
		}
		ctx, cancel := context.WithTimeout(ctx, leaderTimeout)
		defer cancel()
		for {
			l, err := f.cfg.Leader(ctx, healthy)
			if err == nil {
				f.mu.Lock()
				busy := f.faulted[l]
				f.mu.Unlock()
				if busy {
					return nil, fmt.Errorf("the leader %s is in a fault already", l.Short)
				}
				return l, nil
			}
			if !waitUntil(ctx, time.Now().Add(pollInterval)) {
				return nil, err
			}
		}
	}
	nodes := f.cfg.Nodes
	for k := range nodes {
		n := nodes[(fault.Target+k)%len(nodes)]
		f.mu.Lock()
		busy := f.faulted[n]
		f.mu.Unlock()
		if !busy {
			return n, nil
		}
	}
	return nil, fmt.Errorf("every node is in a fault")
}

// inject puts the fault's node into the fault. It returns the node (nil
// when the fault was skipped) and the time the docker command started: the
// fault takes effect during the command, which may take seconds on a
// loaded machine, so measuring from its end would make failover look
// faster than it is. The node counts as faulted from before the command
// (no pull during it counts as one in calm weather) until heal.
func (f *Faults) inject(ctx context.Context, fault Fault) (*Node, time.Time, error) {
	n, err := f.target(ctx, fault)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("skipped: %w", err)
	}
	f.mu.Lock()
	f.faulted[n] = true
	f.epoch++
	f.mu.Unlock()
	at := time.Now()
	return n, at, actions[fault.Kind].inject(n, ctx)
}

// fail records that a fault went wrong: the run cannot vouch for it.
func (f *Faults) fail(idx int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.update(idx, func(in *Injected) {
		in.Broken = true
		in.Err = strings.TrimPrefix(in.Err+"; "+msg, "; ")
	})
	f.logf("fault %d: %s", idx+1, msg)
}

// heal undoes a fault with undo and waits until the node is ready again;
// the node stays counted as faulted (and its slot taken) when it does not
// recover. It does not stop when the fault phase ends: every fault is
// healed.
func (f *Faults) heal(idx int, n *Node, undo func(*Node, context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), healTimeout)
	defer cancel()
	err := undo(n, ctx)
	if err == nil {
		err = n.WaitReady(ctx, readyTimeout)
	}
	if err != nil {
		f.fail(idx, "heal: %v", err)
		return
	}
	f.mu.Lock()
	delete(f.faulted, n)
	f.epoch++
	f.lastHeal = time.Now()
	f.log[idx].Healed = f.lastHeal.Sub(f.start)
	f.mu.Unlock()
	f.logf("healed %s", n.Short)
}

// measureFailover writes through the nodes that survived the kill of the
// leader, round robin, until one write succeeds: the failover time runs
// from the kill to that acknowledgement. Each write is a tiny image pushed
// and recorded in the ledger like any other.
func (f *Faults) measureFailover(ctx context.Context, idx int, killed *Node, at time.Time) {
	var survivors []*Node
	for _, n := range f.healthy() {
		if n != killed {
			survivors = append(survivors, n)
		}
	}
	if len(survivors) == 0 {
		f.update(idx, func(in *Injected) { in.Err = "no node left to write through: failover not measured" })
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), failoverTimeout)
	defer cancel()
	src := mrand.NewSource(f.cfg.Seed + int64(idx))
	var last error
	for i := 0; ; i++ {
		n := survivors[i%len(survivors)]
		img, err := random.Image(256, 1, random.WithSource(src))
		if err != nil {
			last = err
			break
		}
		desc, err := describe(img, "chaos/failover", fmt.Sprintf("f%d-%d", idx+1, i))
		if err != nil {
			last = err
			break
		}
		actx, acancel := context.WithTimeout(ctx, probeTimeout)
		err = f.cfg.Client.Push(actx, n, desc.Repo, desc.Tag, img)
		acancel()
		if err == nil {
			took := time.Since(at)
			desc.Via = n.Short
			f.cfg.Ledger.Add(desc)
			f.update(idx, func(in *Injected) { in.Failover = took })
			f.logf("failover after killing leader %s: a write succeeded through %s after %s", killed.Short, n.Short, took.Round(time.Millisecond))
			return
		}
		last = err
		if !waitUntil(ctx, time.Now().Add(probeGap)) {
			break
		}
	}
	f.fail(idx, "no write succeeded within %s of the leader kill: %v", failoverTimeout, last)
}

// HealAll undoes any fault a node of nodes is still in (a fault whose
// heal failed, a crash of the harness between the two) and waits until
// every node is ready. It returns what it did.
func HealAll(ctx context.Context, nodes []*Node) ([]string, error) {
	var did []string
	for _, n := range nodes {
		acts, err := n.Heal(ctx)
		for _, a := range acts {
			did = append(did, a+" "+n.Short)
		}
		if err != nil {
			return did, fmt.Errorf("heal %s: %w", n.Short, err)
		}
	}
	for _, n := range nodes {
		if err := n.WaitReady(ctx, readyTimeout); err != nil {
			return did, err
		}
	}
	return did, nil
}
