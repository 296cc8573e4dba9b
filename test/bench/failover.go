package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Bounds of the failover measurements.
const (
	probeTimeout = 20 * time.Second // one write (longer than berth's 10 s apply timeout)
	probeRetry   = 5 * time.Millisecond
	probeWarm    = 3                // successful writes before the leader is stopped
	outageLimit  = 60 * time.Second // give up on a failover after this
)

// Log messages the failover measurements look for in the nodes' JSON logs:
// hashicorp/raft's on a follower that stops hearing from its leader, and
// berth's when a node sees a new leader.
const (
	msgElection  = "heartbeat timeout reached, starting election"
	msgRestart   = "Election timeout reached, restarting election"
	msgStickyNo  = "rejecting pre-vote request since we have a leader"
	msgNewLeader = "raft leader"
	// berth's own, on a leader that stops: whether it handed over.
	msgHandedOver = "handed leadership over"
	msgNoHandover = "could not hand leadership over before shutting down"
)

// attempt is one write of a probe.
type attempt struct {
	start, end time.Time
	// mid is when the manifest PUT was sent (zero if the blob failed): a
	// write whose manifest PUT was sent after a leader was killed was
	// committed by its successor.
	mid            time.Time
	err            error
	blob, manifest time.Duration // the steps of a successful write
}

// probe writes through one node, back to back, and records every attempt.
// A write is the cheapest real one: a 64-byte blob upload the way docker
// does it (HEAD, POST, PUT) and a manifest PUT that tags it.
type probe struct {
	c    *client
	repo string

	mu       sync.Mutex // guards attempts
	attempts []attempt
}

// emptyConfig is the OCI empty JSON, the config of every probe manifest.
var emptyConfig = []byte("{}")

func newProbe(ctx context.Context, s *server, repo string) (*probe, error) {
	p := &probe{c: newClient(s), repo: repo}
	if _, err := p.c.pushSmallBlob(ctx, repo, emptyConfig); err != nil {
		return nil, fmt.Errorf("probe setup on %s: %w", s.name, err)
	}
	return p, nil
}

// run writes until ctx ends.
func (p *probe) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		a := p.write(ctx, fmt.Sprintf("p%06d", i))
		if ctx.Err() != nil {
			return // cut short: not a verdict on the cluster
		}
		p.mu.Lock()
		p.attempts = append(p.attempts, a)
		p.mu.Unlock()
		if a.err != nil {
			time.Sleep(probeRetry)
		}
	}
}

func (p *probe) write(ctx context.Context, tag string) attempt {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	layer := make([]byte, 64)
	_, _ = rand.Read(layer)
	a := attempt{start: time.Now()}
	if _, err := p.c.pushSmallBlob(ctx, p.repo, layer); err != nil {
		a.end, a.err = time.Now(), fmt.Errorf("blob: %w", shortErr(err))
		return a
	}
	a.mid = time.Now()
	a.blob = a.mid.Sub(a.start)
	if err := p.c.putManifest(ctx, p.repo, tag, imageManifest(emptyConfig, layer)); err != nil {
		a.end, a.err = time.Now(), fmt.Errorf("manifest: %w", shortErr(err))
		return a
	}
	a.end = time.Now()
	a.manifest = a.end.Sub(a.mid)
	return a
}

// shortErr drops the URL (with its upload id) from a transport error, so
// that equal failures count as one kind.
func shortErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// waitFor waits until ok holds for the attempts so far.
func (p *probe) waitFor(ctx context.Context, timeout time.Duration, ok func([]attempt) bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		p.mu.Lock()
		done := ok(p.attempts)
		p.mu.Unlock()
		if done {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

func (p *probe) snapshot() []attempt {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.attempts)
}

// successSince returns a condition: a write whose manifest PUT was sent
// at or after t succeeded.
func successSince(t time.Time) func([]attempt) bool {
	return func(as []attempt) bool {
		for _, a := range as {
			if a.err == nil && !a.mid.Before(t) {
				return true
			}
		}
		return false
	}
}

// outage is one stop of the leader, as the probe and the nodes' logs saw it.
type outage struct {
	// gap is, for a kill, the time from the kill until a write whose
	// manifest PUT was sent after it succeeded; for a handover, the
	// longest time between two successful writes around it.
	gap      time.Duration
	detected time.Duration // stop → a survivor's raft starts an election (0: none logged)
	elected  time.Duration // stop → a survivor logs the new leader (0: none logged)
	// restarts counts candidates whose election timed out and began
	// again; refusals, pre-votes refused because the voter still heard
	// from a leader (hashicorp/raft's leader stickiness).
	restarts, refusals int
	// handover is what the stopped leader logged of its leadership
	// transfer (SIGTERM only): msgHandedOver or msgNoHandover and why.
	handover string
	exited   time.Duration // stop → the old leader's process is gone
	failed   int           // failed writes in the outage
	errs     failures
	resumed  attempt // the successful write that ended the outage
	via      string  // the node the probe wrote through
	viaLead  bool    // via became the new leader
}

// measureOutage stops the leader with sig while a probe writes through
// via, and measures the outage. The leader is left stopped.
func measureOutage(ctx context.Context, c *berthCluster, leader, via *server, sig syscall.Signal) (outage, error) {
	o := outage{via: via.name}
	p, err := newProbe(ctx, via, "bench/failover")
	if err != nil {
		return o, err
	}
	pctx, cancel := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() { p.run(pctx); close(probeDone) }()
	stopProbe := sync.OnceFunc(func() { cancel(); <-probeDone })
	defer stopProbe()
	warm := func(as []attempt) bool {
		n := 0
		for _, a := range as {
			if a.err == nil {
				n++
			}
		}
		return n >= probeWarm
	}
	if !p.waitFor(ctx, outageLimit, warm) {
		return o, fmt.Errorf("probe through %s: no successful writes before the stop: %v", via.name, lastErr(p.snapshot()))
	}
	survivors := c.others(leader)
	offsets := map[string]int64{}
	for _, s := range c.nodes {
		if fi, err := os.Stat(s.logPath); err == nil {
			offsets[s.name] = fi.Size()
		}
	}

	t0 := time.Now()
	resumeAfter := t0
	if sig == syscall.SIGKILL {
		leader.kill()
		o.exited = time.Since(t0)
	} else {
		_ = leader.cmd.Process.Signal(sig)
		select {
		case <-leader.exited:
		case <-time.After(outageLimit):
			leader.kill()
			return o, fmt.Errorf("%s did not exit within %s of %s", leader.name, outageLimit, sig)
		}
		o.exited = time.Since(t0)
		leader.stop() // closes its log
		// Writes go on through the old leader until it hands over; the
		// outage is over once writes succeed without it.
		resumeAfter = t0.Add(o.exited)
	}
	if !p.waitFor(ctx, outageLimit, successSince(resumeAfter)) {
		return o, fmt.Errorf("no write through %s succeeded within %s of %s to %s: %v", via.name, outageLimit, sig, leader.name, lastErr(p.snapshot()))
	}
	stopProbe()
	o.analyse(p.snapshot(), t0, resumeAfter, sig == syscall.SIGKILL)
	for _, s := range survivors {
		if err := o.readLog(s.logPath, offsets[s.name], t0, leader.name); err != nil {
			return o, err
		}
	}
	if sig != syscall.SIGKILL {
		o.handover = handoverLogged(leader.logPath, offsets[leader.name])
	}
	o.errs.explain(via.logPath)
	if l, err := c.leaderOf(ctx, via); err == nil {
		o.viaLead = l == via
	}
	return o, nil
}

// analyse computes the outage from the probe's attempts: the leader was
// stopped at t0, and the outage is over with the first successful write
// whose manifest PUT was sent at or after resumeAfter. Attempts run one
// after the other: each starts after the previous one ended.
func (o *outage) analyse(as []attempt, t0, resumeAfter time.Time, kill bool) {
	var last time.Time // the end of the last successful write so far
	for _, a := range as {
		if a.err == nil && a.end.Before(t0) {
			last = a.end
		}
	}
	for _, a := range as {
		switch {
		case a.start.Before(last):
			continue
		case a.err != nil:
			o.failed++
			o.errs.add(a.err)
			continue
		}
		if kill {
			if !a.mid.Before(t0) {
				o.gap, o.resumed = a.end.Sub(t0), a
			}
		} else if g := a.end.Sub(last); g > o.gap {
			o.gap, o.resumed = g, a
		}
		last = a.end
		if !a.mid.Before(resumeAfter) {
			return
		}
	}
}

// readLog reads, from a survivor's log written since offset, when it
// started an election and when it saw a leader other than old.
func (o *outage) readLog(path string, offset int64, t0 time.Time, old string) error {
	evs, err := readLogEvents(path, offset)
	if err != nil {
		return err
	}
	for _, e := range evs {
		d := e.Time.Sub(t0)
		if d < 0 {
			continue
		}
		if e.Msg == msgElection && (o.detected == 0 || d < o.detected) {
			o.detected = d
		}
		switch {
		case e.Msg == msgNewLeader && e.Leader != "" && e.Leader != old && (o.elected == 0 || d < o.elected):
			o.elected = d
		case e.Msg == msgRestart && (o.elected == 0 || d < o.elected):
			o.restarts++
		case e.Msg == msgStickyNo && (o.elected == 0 || d < o.elected):
			o.refusals++
		}
	}
	return nil
}

// handoverLogged returns what a stopped leader logged, since offset, of
// handing its leadership over: msgHandedOver, or msgNoHandover with the
// error ("" if neither).
func handoverLogged(path string, offset int64) string {
	var out string
	_ = scanLog(path, offset, func(l logLine) bool {
		switch l.Msg {
		case msgHandedOver:
			out = l.Msg
		case msgNoHandover:
			out = l.Msg + ": " + l.Error
		}
		return out == ""
	})
	return out
}

func lastErr(as []attempt) error {
	for i := len(as) - 1; i >= 0; i-- {
		if as[i].err != nil {
			return as[i].err
		}
	}
	return errors.New("no attempt failed either")
}

// readLogEvents reads the lines of the node log at path, from offset on,
// that tell of elections and leaders.
func readLogEvents(path string, offset int64) ([]logLine, error) {
	var out []logLine
	err := scanLog(path, offset, func(l logLine) bool {
		switch l.Msg {
		case msgElection, msgNewLeader, msgRestart, msgStickyNo:
			out = append(out, l)
		}
		return true
	})
	return out, err
}

// measureFailovers stops the leader n times with sig, each time while a
// probe writes through one of the others (in turn), and starts it again
// so that the cluster is whole for the next round.
func measureFailovers(ctx context.Context, c *berthCluster, n int, sig syscall.Signal) ([]outage, error) {
	var out []outage
	for i := range n {
		leader, err := c.waitHealthy(ctx, 2*time.Minute)
		if err != nil {
			return out, err
		}
		survivors := c.others(leader)
		via := survivors[i%len(survivors)]
		o, err := measureOutage(ctx, c, leader, via, sig)
		if err != nil {
			return out, fmt.Errorf("%s %d of %d: %w", sig, i+1, n, err)
		}
		out = append(out, o)
		fmt.Fprintf(os.Stderr, "  %s %2d/%d: leader %s, writes through %s (%s): writes back after %s; new leader logged after %s; %d failed writes\n",
			sigName(sig), i+1, n, leader.name, via.name, map[bool]string{true: "became leader", false: "follower"}[o.viaLead],
			o.gap.Round(time.Millisecond), o.elected.Round(time.Millisecond), o.failed)
		if err := leader.start(ctx); err != nil {
			return out, fmt.Errorf("restart %s: %w", leader.name, err)
		}
	}
	return out, nil
}

func sigName(sig syscall.Signal) string {
	if sig == syscall.SIGKILL {
		return "SIGKILL"
	}
	return "SIGTERM"
}

// quantile is the nearest-rank p-quantile of ds (which it sorts): with 20
// samples p99 is the largest, not an interpolation below it.
func quantile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds))*p+0.9999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}
