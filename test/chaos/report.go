package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of one scenario. The scenario fills it in; Write
// prints it; Failed says whether any invariant was broken.
type Report struct {
	Scenario string
	Seed     int64
	Replay   string // how to run the same schedule again
	Image    string
	Nodes    int
	// Planned is the length of the fault phase; Ran how long it really
	// took, until the last heal.
	Planned, Ran time.Duration
	Schedule     []Fault
	Injected     []Injected
	Workload     WorkloadStats
	// Acked is the number of acknowledged pushes, failover probes
	// included; Images the result of checking them on every node.
	Acked  int
	Images ImageCheck
	// Convergence is the time from the last heal until every node reported
	// the same applied state; Converged what they reported.
	Convergence time.Duration
	Converged   Convergence
	Crashes     []string // log lines with a panic, fatal error or race
	Notes       []string // what a reader should know, not failures
	Problems    []string // broken invariants and failed checks
}

// Fail records a broken invariant or a failed check.
func (r *Report) Fail(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Note records something worth knowing that is not a failure.
func (r *Report) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Failed reports whether anything failed.
func (r *Report) Failed() bool { return len(r.Problems) > 0 }

// FaultCounts counts the faults that were injected, by kind.
func (r *Report) FaultCounts() map[Kind]int {
	counts := map[Kind]int{}
	for _, in := range r.Injected {
		if in.Node != "" && !in.Missed {
			counts[in.Kind]++
		}
	}
	return counts
}

// Failovers returns the measured failover times, shortest first.
func (r *Report) Failovers() []time.Duration {
	var d []time.Duration
	for _, in := range r.Injected {
		if in.Failover > 0 {
			d = append(d, in.Failover)
		}
	}
	slices.Sort(d)
	return d
}

// Write prints the report: a summary, the problems, then the detail of
// every fault.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	line := func(key, format string, args ...any) {
		fmt.Fprintf(&b, "  %-12s %s\n", key, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(&b, "berth chaos report: %s\n", r.Scenario)
	line("seed", "%d (replay: %s)", r.Seed, r.Replay)
	line("nodes", "%d, image %s", r.Nodes, r.Image)
	line("duration", "%s of faults planned, %s until the last heal", r.Planned, r.Ran.Round(time.Second))

	counts := r.FaultCounts()
	var kinds []string
	total := 0
	for _, k := range Kinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, counts[k]))
		total += counts[k]
	}
	line("faults", "%d injected of %d planned: %s", total, len(r.Schedule), strings.Join(kinds, ", "))

	if fo := r.Failovers(); len(fo) > 0 {
		line("failover", "%d measured: p50 %s, p99 %s, max %s", len(fo),
			percentile(fo, 50).Round(time.Millisecond), percentile(fo, 99).Round(time.Millisecond), fo[len(fo)-1].Round(time.Millisecond))
	} else {
		line("failover", "none measured")
	}

	s := r.Workload
	line("pushes", "%d attempted, %d acknowledged (and %d failover probes), %d lost; not acknowledged: %d gave up, %d rejected, %d interrupted; %d attempts",
		s.PushesStarted, s.PushesAcked, r.Acked-s.PushesAcked, r.Images.LostImages,
		s.PushesFailed, s.PushesRejected, s.PushesInterrupted, s.Attempts)
	line("pulls", "%d ok, %d failed: %d unavailable, %d not found during a fault, %d false not found, %d refused, %d wrong content",
		s.PullsOK, s.PullsUnavailable+s.PullsNotFound+s.PullsFalseNotFound+s.PullsRefused+s.PullsWrong,
		s.PullsUnavailable, s.PullsNotFound, s.PullsFalseNotFound, s.PullsRefused, s.PullsWrong)
	if r.Converged.StateHash != "" {
		line("converged", "%s after the last heal: leader %s, applied index %d, state hash %.16s",
			r.Convergence.Round(time.Millisecond), r.Converged.Leader, r.Converged.AppliedIndex, r.Converged.StateHash)
	} else {
		line("converged", "%s after the last heal (no state hash reported)", r.Convergence.Round(time.Millisecond))
	}
	line("checked", "%d images on %d nodes in %s: %d lost", r.Images.Images, r.Images.Nodes, r.Images.Took.Round(time.Millisecond), r.Images.LostImages)
	line("logs", "%d crash lines", len(r.Crashes))
	result := "PASS"
	if r.Failed() {
		result = fmt.Sprintf("FAIL (%d problems)", len(r.Problems))
	}
	line("result", "%s", result)

	section := func(title string, items []string, most int) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(&b, "\n%s:\n", title)
		for i, it := range items {
			if i == most {
				fmt.Fprintf(&b, "  … and %d more\n", len(items)-most)
				break
			}
			fmt.Fprintf(&b, "  - %s\n", strings.ReplaceAll(it, "\n", "\n    "))
		}
	}
	section("problems", r.Problems, 30)
	section("crash lines in the logs", r.Crashes, 10)
	section("notes", r.Notes, 30)
	for _, kind := range slices.Sorted(maps.Keys(s.Samples)) {
		section("first errors: "+kind, s.Samples[kind], maxSamples)
	}
	var faults []string
	for _, in := range r.Injected {
		faults = append(faults, in.String())
	}
	section("faults", faults, len(faults))
	_, err := io.WriteString(w, b.String())
	return err
}

// percentile returns the p-th percentile (nearest rank) of sorted d.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	rank := (p*len(d) + 99) / 100 // ceil(p/100 · n)
	return d[min(max(rank, 1), len(d))-1]
}
