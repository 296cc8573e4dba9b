package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// clusterAck is a push that a node of the cluster acknowledged.
type clusterAck struct {
	acked
	node  string    // the node it was pushed through
	blobs []v1.Hash // its config and layers
}

// pushImage pushes a new random image to repo:tag through node n and
// returns what it acknowledged.
func pushImage(ctx context.Context, n *clusterNode, repo, tag string, size int64, opts ...remote.Option) (clusterAck, error) {
	img, err := random.Image(size, 2)
	if err != nil {
		return clusterAck{}, err
	}
	a := clusterAck{acked: acked{repo: repo, tag: tag}, node: n.ID}
	if a.digest, err = img.Digest(); err != nil {
		return clusterAck{}, err
	}
	cfg, err := img.ConfigName()
	if err != nil {
		return clusterAck{}, err
	}
	a.blobs = append(a.blobs, cfg)
	layers, err := img.Layers()
	if err != nil {
		return clusterAck{}, err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return clusterAck{}, err
		}
		a.blobs = append(a.blobs, d)
	}
	ref, err := name.ParseReference(n.Host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return clusterAck{}, err
	}
	if err := remote.Write(ref, img, append(n.remote(ctx), opts...)...); err != nil {
		return clusterAck{}, fmt.Errorf("push %s:%s through %s: %w", repo, tag, n.ID, err)
	}
	return a, nil
}

// pushLoad is a stream of pushes from several goroutines, each through the
// nodes that are up in turn, recording every push acknowledged. A push
// fails "explained" when the test faulted its node meanwhile; other
// failures are kept for the test to judge.
type pushLoad struct {
	c      *testCluster
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	acks      []clusterAck
	failures  []string
	explained int
	changed   chan struct{} // closed and replaced on every ack
	// slowest is the longest acknowledged push through a node that no
	// fault touched meanwhile, and slowestAt says which one it was.
	slowest   time.Duration
	slowestAt string
}

// startPushes starts workers goroutines pushing images to <prefix>/w<i>.
func (c *testCluster) startPushes(workers int, prefix string) *pushLoad {
	c.t.Helper()
	ctx, cancel := context.WithCancel(deadlineCtx(c.t, 5*time.Minute))
	l := &pushLoad{c: c, cancel: cancel, changed: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() { l.work(ctx, w, prefix) })
	}
	c.t.Cleanup(l.halt)
	return l
}

func (l *pushLoad) work(ctx context.Context, w int, prefix string) {
	repo := fmt.Sprintf("%s/w%d", prefix, w)
	for i := 0; ctx.Err() == nil; i++ {
		up := l.c.up()
		if len(up) == 0 {
			l.pause(ctx)
			continue
		}
		n := up[(w+i)%len(up)]
		faults := n.faults.Load()
		start := time.Now()
		a, err := pushImage(ctx, n, repo, fmt.Sprintf("t%d", i), int64(512+256*w))
		took := time.Since(start)
		switch {
		case err == nil:
			l.mu.Lock()
			l.acks = append(l.acks, a)
			if took > l.slowest && n.faults.Load() == faults {
				l.slowest, l.slowestAt = took, fmt.Sprintf("%s:%s through %s at %s", a.repo, a.tag, n.ID, start.Format("15:04:05.000"))
			}
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		case ctx.Err() != nil:
		case n.faults.Load() != faults || n.down.Load():
			l.mu.Lock()
			l.explained++
			l.mu.Unlock()
		default:
			l.mu.Lock()
			l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
			l.mu.Unlock()
			l.pause(ctx)
		}
	}
}

// pause paces a worker that has nothing to push to or just failed, so that
// it does not spin (load pacing, not a wait for a condition).
func (l *pushLoad) pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(50 * time.Millisecond):
	}
}

// waitMore waits until n more pushes than now have been acknowledged.
func (l *pushLoad) waitMore(n int) {
	l.c.t.Helper()
	l.mu.Lock()
	want := len(l.acks) + n
	l.mu.Unlock()
	start := time.Now()
	deadline := time.After(clusterSettleTimeout)
	for {
		l.mu.Lock()
		got, ch := len(l.acks), l.changed
		l.mu.Unlock()
		if got >= want {
			l.c.t.Logf("%d more pushes acknowledged in %s", n, time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-ch:
		case <-deadline:
			l.c.t.Fatalf("only %d of %d pushes acknowledged within %s; unexplained failures: %s", got, want, clusterSettleTimeout, l.failureText())
		}
	}
}

func (l *pushLoad) halt() {
	l.cancel()
	l.wg.Wait()
}

// pushBound is the longest a push through a node that no fault touches may
// take, even while another node fails: a failover (2 s) and the client's
// retries, with a wide margin for a loaded machine.
const pushBound = 20 * time.Second

// stop ends the load and returns the acknowledged pushes; it logs the
// counts and fails the test when a push through a node that no fault
// touched took longer than pushBound.
func (l *pushLoad) stop() []clusterAck {
	l.c.t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c.t.Logf("pushes: %d acknowledged, %d failed on a node the test faulted, %d other failures%s",
		len(l.acks), l.explained, len(l.failures), firstOf(l.failures))
	logMeasure(l.c.t, "slowest acknowledged push through a node not faulted", l.slowest, l.slowestAt)
	if l.slowest > pushBound {
		l.c.t.Errorf("a push through a node that no fault touched took %s (%s), want well under %s", l.slowest, l.slowestAt, pushBound)
	}
	return slices.Clone(l.acks)
}

// unexplained returns the failures no fault of their node explains.
func (l *pushLoad) unexplained() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failures)
}

func (l *pushLoad) failureText() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d%s", len(l.failures), firstOf(l.failures))
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return "; first: " + s[0]
}

// verifyAcks checks on each node that every acknowledged push is pullable
// by tag and by digest with its exact digest and bytes.
func (c *testCluster) verifyAcks(acks []clusterAck, nodes ...*clusterNode) {
	c.t.Helper()
	images := make([]acked, len(acks))
	for i, a := range acks {
		images[i] = a.acked
	}
	ctx := deadlineCtx(c.t, 3*time.Minute)
	for _, n := range nodes {
		verifyAcked(c.t, ctx, n.Server, images)
	}
}

// verifyAll waits until every node of the cluster has converged and holds
// every blob of acks on its disk, then checks on each node that every
// acknowledged push (and probe write, unless probes is nil) is there.
func (c *testCluster) verifyAll(acks []clusterAck, probes *writeProbes) {
	c.t.Helper()
	c.waitConverged(c.nodes...)
	c.waitBlobsOnDisk(c.nodes, ackedBlobs(acks))
	c.verifyAcks(acks, c.nodes...)
	if probes != nil {
		probes.verify(c.nodes...)
	}
}

// ackedBlobs returns the distinct blobs of the pushes.
func ackedBlobs(acks []clusterAck) []v1.Hash {
	seen := map[v1.Hash]bool{}
	var out []v1.Hash
	for _, a := range acks {
		for _, d := range a.blobs {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// probeRepo is the repository of the write probes.
const probeRepo = "probe/writes"

// probeTimeout bounds one probe write.
const probeTimeout = 20 * time.Second

// probeEvery paces each node's probe writes.
const probeEvery = 20 * time.Millisecond

// probeResult is one probe write through one node.
type probeResult struct {
	node       string
	tag        string
	start, end time.Time
	ok         bool
	err        string // why it failed
	status     int    // the failure's HTTP status; 0 without an answer
	// faulted: the test faulted the node while the write was in flight.
	faulted bool
}

// writeProbes measures write availability: through every node up, one
// goroutine after another tags the same small manifest with a new tag (one
// manifest PUT, one Raft command) and records when each write started and
// ended.
type writeProbes struct {
	c        *testCluster
	manifest []byte
	media    string
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	results []probeResult
}

// startProbes pushes the probe image and starts a probe through each node.
func (c *testCluster) startProbes() *writeProbes {
	c.t.Helper()
	ctx, cancel := context.WithCancel(deadlineCtx(c.t, 5*time.Minute))
	first := c.up()[0]
	a, err := pushImage(ctx, first, probeRepo, "base", 256)
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	desc, err := remote.Get(first.ref(c.t, probeRepo+"@"+a.digest.String()), first.remote(ctx)...)
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	p := &writeProbes{c: c, manifest: desc.Manifest, media: string(desc.MediaType), cancel: cancel}
	for _, n := range c.nodes {
		p.wg.Go(func() { p.run(ctx, n) })
	}
	c.t.Cleanup(p.halt)
	return p
}

func (p *writeProbes) run(ctx context.Context, n *clusterNode) {
	client := &http.Client{Timeout: probeTimeout}
	for i := 0; ctx.Err() == nil; i++ {
		if !n.down.Load() {
			faults := n.faults.Load()
			r := probeResult{node: n.ID, tag: fmt.Sprintf("%s-%d", n.ID, i), start: time.Now()}
			status, err := p.put(ctx, client, n, r.tag)
			r.ok, r.end, r.status = err == nil, time.Now(), status
			r.faulted = n.faults.Load() != faults
			if err != nil {
				r.err = err.Error()
			}
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.results = append(p.results, r)
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(probeEvery):
		}
	}
}

// put writes one probe tag and returns the status of a failure.
func (p *writeProbes) put(ctx context.Context, client *http.Client, n *clusterNode, tag string) (int, error) {
	req, err := n.newRequest(ctx, http.MethodPut, "/v2/"+probeRepo+"/manifests/"+tag, bytes.NewReader(p.manifest), true)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", p.media)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return resp.StatusCode, fmt.Errorf("PUT manifest %s through %s: %s", tag, n.ID, resp.Status)
	}
	return 0, nil
}

func (p *writeProbes) halt() {
	p.cancel()
	p.wg.Wait()
}

// snapshot returns the results so far.
func (p *writeProbes) snapshot() []probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.results)
}

// firstWriteAfter returns how long after t0 the first probe write that
// started at or after t0 succeeded, through a node not in exclude, and
// which node that was; false when there is none yet.
func (p *writeProbes) firstWriteAfter(t0 time.Time, exclude ...string) (time.Duration, string, bool) {
	var best time.Time
	var node string
	for _, r := range p.snapshot() {
		if !r.ok || r.start.Before(t0) || slices.Contains(exclude, r.node) {
			continue
		}
		if best.IsZero() || r.end.Before(best) {
			best, node = r.end, r.node
		}
	}
	if best.IsZero() {
		return 0, "", false
	}
	return best.Sub(t0), node, true
}

// waitWriteAfter waits until a probe write that started at or after t0
// succeeded through a node not in exclude, and returns how long after t0 it
// ended.
func (p *writeProbes) waitWriteAfter(t0 time.Time, exclude ...string) (time.Duration, string) {
	p.c.t.Helper()
	var d time.Duration
	var node string
	p.c.poll("a write after "+t0.Format("15:04:05.000"), clusterSettleTimeout, func(context.Context) error {
		var ok bool
		if d, node, ok = p.firstWriteAfter(t0, exclude...); !ok {
			return fmt.Errorf("no probe write that started after it succeeded yet")
		}
		return nil
	})
	return d, node
}

// maxGap returns, for the nodes not in exclude, the longest time within
// [from, to] during which a node acknowledged no probe write (from the
// start of the window to its first success, between two successes, and
// from its last to the end), and the node it was on: how long writes
// through that node were unavailable.
func (p *writeProbes) maxGap(from, to time.Time, exclude ...string) (time.Duration, string) {
	ends := map[string][]time.Time{}
	for _, r := range p.snapshot() {
		if r.ok && !slices.Contains(exclude, r.node) && r.end.After(from) && !r.end.After(to) {
			ends[r.node] = append(ends[r.node], r.end)
		}
	}
	var worst time.Duration
	var node string
	for _, n := range p.c.nodes {
		if slices.Contains(exclude, n.ID) {
			continue
		}
		es := ends[n.ID]
		sort.Slice(es, func(i, j int) bool { return es[i].Before(es[j]) })
		prev := from
		for _, e := range append(es, to) {
			if g := e.Sub(prev); g > worst {
				worst, node = g, n.ID
			}
			prev = e
		}
	}
	return worst, node
}

// stop ends the probes and logs how many writes were acknowledged. A
// write through a node that no fault touched may fail while another node
// fails, but only as 503 Service Unavailable, the answer that tells a
// client to retry; any other failure fails the test.
func (p *writeProbes) stop() {
	p.c.t.Helper()
	p.halt()
	ok := 0
	var failed, wrong []string
	for _, r := range p.snapshot() {
		if r.ok {
			ok++
			continue
		}
		line := r.start.Format("15:04:05.000") + "+" + r.end.Sub(r.start).Round(time.Millisecond).String() + " " + r.node + ": " + r.err
		failed = append(failed, line)
		if !r.faulted && r.status != http.StatusServiceUnavailable {
			wrong = append(wrong, line)
		}
	}
	p.c.t.Logf("probe writes: %d acknowledged, %d failed%s", ok, len(failed), firstOf(failed))
	if len(wrong) > 0 {
		p.c.t.Errorf("%d writes through nodes that no fault touched failed other than with 503:\n%s", len(wrong), strings.Join(wrong[:min(len(wrong), 10)], "\n"))
	}
}

// verify checks that every probe write acknowledged is a tag of the probe
// repository on each of nodes.
func (p *writeProbes) verify(nodes ...*clusterNode) {
	p.c.t.Helper()
	var want []string
	for _, r := range p.snapshot() {
		if r.ok {
			want = append(want, r.tag)
		}
	}
	ctx := deadlineCtx(p.c.t, time.Minute)
	for _, n := range nodes {
		repo, err := name.NewRepository(n.Host()+"/"+probeRepo, name.Insecure)
		if err != nil {
			p.c.t.Fatal(err)
		}
		tags, err := remote.List(repo, n.remote(ctx)...)
		if err != nil {
			p.c.t.Errorf("list probe tags on %s: %v", n.ID, err)
			continue
		}
		have := map[string]bool{}
		for _, t := range tags {
			have[t] = true
		}
		var lost []string
		for _, t := range want {
			if !have[t] {
				lost = append(lost, t)
			}
		}
		if len(lost) > 0 {
			p.c.t.Errorf("%s lacks %d of %d acknowledged probe writes: %s", n.ID, len(lost), len(want), strings.Join(lost[:min(len(lost), 10)], " "))
			continue
		}
		p.c.t.Logf("all %d acknowledged probe writes are tags on %s", len(want), n.ID)
	}
}

// logMeasure logs a measured figure in one greppable form.
func logMeasure(t *testing.T, what string, d time.Duration, detail string) {
	t.Helper()
	t.Logf("MEASURE %s: %s (%s)", what, d.Round(time.Millisecond), detail)
}
