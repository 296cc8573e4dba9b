package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
)

// Environment variables of the fuzzy test.
const (
	seedEnv     = "BERTH_TEST_SEED"      // replay a seed
	durationEnv = "BERTH_FUZZY_DURATION" // how long faults are injected (a Go duration)
)

// testSeed returns BERTH_TEST_SEED or a fresh seed, and logs it.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(seedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", seedEnv, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with %s=%d)", seed, seedEnv, seed)
	return seed
}

func fuzzyDuration(t *testing.T) time.Duration {
	t.Helper()
	d := 6 * time.Second
	if testing.Short() {
		d = 2 * time.Second
	}
	if s := os.Getenv(durationEnv); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s: %v", durationEnv, err)
		}
		d = v
	}
	return d
}

// TestFuzzy writes through random nodes of five from several goroutines
// while a seeded schedule partitions, kills and restarts minorities. Then
// it heals, waits until every node has the same applied index and state
// hash, and checks every node against what each writer was told: a write
// that returned nil is there unless a later acknowledged write of the same
// writer undid it, a write refused as "not found" found nothing there, and
// a node that acknowledged a write reads it back.
//
// The seed fixes the schedule and every writer's operations, not the
// interleaving: a replay takes the same decisions, at times that differ a
// little.
func TestFuzzy(t *testing.T) {
	seed := testSeed(t)
	d := fuzzyDuration(t)
	c := clustertest.New(t, 5, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		// A write through a node that is cut off fails soon, and the
		// writer goes on through another.
		cfg.ApplyTimeout = 300 * time.Millisecond
		cfg.ReadIndexTimeout = 200 * time.Millisecond
		// Frequent snapshots that keep few entries, so that a node that
		// was down or cut off often has to install one (a few times a
		// run).
		cfg.SnapshotThreshold = 32
		cfg.TrailingLogs = 4
		cfg.SnapshotInterval = 100 * time.Millisecond
	}))
	ph := startPhase(d, minAcked)
	var wg sync.WaitGroup
	// Four writers of repository data, and one of accounts. bcrypt makes
	// each EnsureUser take seconds under the race detector: the accounts
	// writer starts its last one half way, so as not to hold up the end.
	writers := make([]*writer, 5)
	for w := range writers {
		accounts := w == len(writers)-1
		writers[w] = newWriter(w, accounts, ph, rand.New(rand.NewPCG(seed, uint64(w)+1)))
		var until time.Time // the end of the phase
		if accounts {
			until = time.Now().Add(d / 2)
		}
		wg.Go(func() { writers[w].run(t.Context(), c, until) })
	}
	var faults []string
	wg.Go(func() { faults = injectFaults(c, rand.New(rand.NewPCG(seed, 0)), ph) })
	wg.Wait()
	t.Logf("%d fault episodes in %s: %s", len(faults), time.Since(ph.start).Round(time.Millisecond), strings.Join(faults, "; "))

	c.Heal()
	for i := range c.N() {
		if c.Node(i) == nil {
			c.Restart(i)
		}
	}
	st := c.WaitConverged(t, 30*time.Second)
	t.Logf("converged at applied index %d", st.AppliedIndex)
	c.WaitReady(t)
	for i := range c.N() {
		if !c.Node(i).Ready() {
			t.Errorf("%s is not ready after the cluster converged", c.ID(i))
		}
	}
	for _, w := range writers {
		t.Logf("writer %d: %s", w.id, w.stats())
		for _, v := range w.violations {
			t.Errorf("writer %d: %s", w.id, v)
		}
		for i := range c.N() {
			w.check(t, c, i)
		}
	}
	if n := ph.acked.Load(); n < minAcked {
		t.Errorf("only %d writes were acknowledged (want %d): the test checked next to nothing", n, minAcked)
	}
}

// minAcked is how many acknowledged writes make the fuzzy test check
// something.
const minAcked = 60

// phase is the time faults are injected: at least d, and then until the
// writers have had min writes acknowledged, but at most 5d (a loaded
// machine makes slow progress).
type phase struct {
	start time.Time
	stop  chan struct{} // closed at the end
	acked atomic.Int64
}

func startPhase(d time.Duration, min int64) *phase {
	ph := &phase{start: time.Now(), stop: make(chan struct{})}
	go func() {
		defer close(ph.stop)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for now := range t.C {
			if now.Sub(ph.start) >= 5*d || now.Sub(ph.start) >= d && ph.acked.Load() >= min {
				return
			}
		}
	}()
	return ph
}

// over reports whether the phase has ended.
func (ph *phase) over() bool {
	select {
	case <-ph.stop:
		return true
	default:
		return false
	}
}

// sleep waits for d or the end of the phase.
func (ph *phase) sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-ph.stop:
	}
}

// injectFaults runs fault episodes until the phase ends: each cuts off or kills one
// or two of the five nodes (the current leader among them one time in
// three) for a while, then heals and restarts them, and waits a little.
// It returns what it did.
func injectFaults(c *clustertest.Cluster, rng *rand.Rand, ph *phase) []string {
	var done []string
	for !ph.over() {
		victims := rng.Perm(c.N())[:1+rng.IntN(2)]
		if l := currentLeader(c); l >= 0 && rng.IntN(3) == 0 && !slices.Contains(victims, l) {
			victims[0] = l
		}
		var what string
		var killed []int
		kinds := 4
		if len(victims) == 1 {
			kinds = 3 // cases 1 and 3 need two
		}
		switch k := rng.IntN(kinds); {
		case k == 0:
			c.Partition(victims)
			what = fmt.Sprintf("cut %v off", victims)
		case k == 1 && len(victims) == 2:
			c.Partition(victims[:1], victims[1:])
			what = fmt.Sprintf("cut %v and %v off", victims[:1], victims[1:])
		case k == 1 || k == 2:
			killed = victims
			what = fmt.Sprintf("kill %v", victims)
		default:
			killed = victims[:1]
			c.Partition(victims[1:])
			what = fmt.Sprintf("kill %v, cut %v off", victims[:1], victims[1:])
		}
		for _, i := range killed {
			c.Kill(i)
		}
		ph.sleep(time.Duration(100+rng.IntN(600)) * time.Millisecond)
		c.Heal()
		for _, i := range killed {
			c.Restart(i)
		}
		done = append(done, what)
		ph.sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
	}
	return done
}

// currentLeader returns a live node that believes it leads, or -1.
func currentLeader(c *clustertest.Cluster) int {
	for i := range c.N() {
		if n := c.Node(i); n != nil && n.IsLeader() {
			return i
		}
	}
	return -1
}

// fact is what a writer knows of one key of the state: its value ("" for
// absent), or nothing, after a write whose outcome it was not told.
type fact struct {
	known bool
	val   string
}

func knownFact(v string) fact { return fact{known: true, val: v} }

// outcome is how a write ended, as its caller sees it.
type outcome int

const (
	acked    outcome = iota // returned nil: applied
	notFound                // rejected as not found: applied, changed nothing
	unknown                 // unavailable, closed, cancelled: may or may not apply
)

// writer is one goroutine's writes and its model of their keys. Each
// writer has its own repository and user, so its writes to a key are in
// order: a write whose outcome it was not told is applied, if ever, before
// its next write (Raft commits a term's entries before the next term's).
type writer struct {
	id        int
	accounts  bool // writes only its user, with EnsureUser
	ph        *phase
	rng       *rand.Rand
	repo      string
	user      string
	layer     oci.Digest
	blobs     []oci.Digest
	manifests []manifestDef
	tags      []string
	passwords []string

	facts      map[string]fact // "blob <d>", "manifest <d>", "tag <t>", "user" (password and admin)
	counts     map[string]*[3]int
	violations []string
}

type manifestDef struct {
	rec     oci.Record
	payload []byte
}

func newWriter(id int, accounts bool, ph *phase, rng *rand.Rand) *writer {
	w := &writer{
		id: id, accounts: accounts, ph: ph, rng: rng,
		repo:      fmt.Sprintf("fuzz/w%d", id),
		user:      fmt.Sprintf("user%d", id),
		tags:      []string{"latest", "v1", "v2"},
		passwords: []string{"pw-a", "pw-b"},
		facts:     map[string]fact{},
		counts:    map[string]*[3]int{},
	}
	w.layer = blob("layer of %s", w.repo)
	for k := range 4 {
		w.blobs = append(w.blobs, blob("%s %d", w.repo, k))
	}
	for k := range 3 {
		rec, payload := image(w.repo, fmt.Sprintf("%s %d", w.repo, k), w.layer)
		w.manifests = append(w.manifests, manifestDef{rec, payload})
	}
	return w
}

// classify sorts a write's error into its outcome; an error no write of
// this test should get is a violation.
func (w *writer) classify(op string, err error) outcome {
	var o outcome
	switch {
	case err == nil:
		o = acked
		w.ph.acked.Add(1)
	case errors.Is(err, oci.ErrNotFound):
		o = notFound
	case errors.Is(err, oci.ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		o = unknown
	default:
		w.violate("%s: unexpected error %v", op, err)
		o = unknown
	}
	if w.counts[op] == nil {
		w.counts[op] = new([3]int)
	}
	w.counts[op][o]++
	return o
}

func (w *writer) violate(format string, args ...any) {
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
}

// forget marks key unknown unless it is known to hold keep.
func (w *writer) forget(key, keep string) {
	if f := w.facts[key]; !f.known || f.val != keep {
		w.facts[key] = fact{}
	}
}

// refused records a "not found" answer for key: it must not have been
// known to exist, and it is known absent now.
func (w *writer) refused(op, key string) {
	if f := w.facts[key]; f.known && f.val != "" {
		w.violate("%s: not found, but %s was acknowledged as %q", op, key, f.val)
	}
	w.facts[key] = knownFact("")
}

// run writes through random nodes until the phase ends, or until when it
// is not zero. The layer every manifest references is linked first and
// never unlinked.
func (w *writer) run(ctx context.Context, c *clustertest.Cluster, until time.Time) {
	more := func() bool {
		return !w.ph.over() && (until.IsZero() || time.Now().Before(until)) && ctx.Err() == nil
	}
	for !w.accounts && more() {
		n := c.Node(w.rng.IntN(c.N()))
		if n != nil && w.classify("link layer", n.LinkBlob(ctx, w.repo, w.layer, 1)) == acked {
			break
		}
	}
	for more() {
		n := c.Node(w.rng.IntN(c.N()))
		if n == nil {
			continue // killed; the next pick is another node
		}
		w.step(ctx, n)
	}
}

// step makes one random write through n and updates the model.
func (w *writer) step(ctx context.Context, n *cluster.Node) {
	if w.accounts {
		w.ensureUser(ctx, n)
		return
	}
	switch p := w.rng.IntN(100); {
	case p < 25:
		d := w.blobs[w.rng.IntN(len(w.blobs))]
		key := "blob " + string(d)
		switch w.classify("LinkBlob", n.LinkBlob(ctx, w.repo, d, 1)) {
		case acked:
			w.facts[key] = knownFact("linked")
			// A node that acknowledged a write reads it back.
			if ok, err := n.BlobLinked(ctx, w.repo, d); err == nil && !ok {
				w.violate("LinkBlob %s through %s acknowledged, but BlobLinked there is false", d, n.ID())
			}
		case unknown:
			w.forget(key, "linked")
		}
	case p < 40:
		d := w.blobs[w.rng.IntN(len(w.blobs))]
		w.removal("UnlinkBlob", "blob "+string(d), n.UnlinkBlob(ctx, w.repo, d))
	case p < 65:
		m := w.manifests[w.rng.IntN(len(w.manifests))]
		tag := w.tags[w.rng.IntN(len(w.tags))]
		mkey, tkey, dg := "manifest "+string(m.rec.Digest), "tag "+tag, string(m.rec.Digest)
		switch w.classify("PutManifest", n.PutManifest(ctx, m.rec, m.payload, tag, oci.TagVersion{})) {
		case acked:
			w.facts[mkey] = knownFact(dg)
			w.facts[tkey] = knownFact(dg)
			if d, err := n.Tag(ctx, w.repo, tag); (err == nil || errors.Is(err, oci.ErrNotFound)) && string(d) != dg {
				w.violate("PutManifest %s:%s through %s acknowledged, but the tag is %s there", w.repo, tag, n.ID(), d)
			}
		case notFound:
			w.violate("PutManifest %s:%s: not found", w.repo, tag)
		case unknown:
			w.forget(mkey, dg)
			w.forget(tkey, dg)
		}
	case p < 80:
		tag := w.tags[w.rng.IntN(len(w.tags))]
		w.removal("DeleteTag", "tag "+tag, n.DeleteTag(ctx, w.repo, tag, oci.TagVersion{}, ""))
	case p < 95:
		m := w.manifests[w.rng.IntN(len(w.manifests))]
		dg := string(m.rec.Digest)
		o := w.removal("DeleteManifest", "manifest "+dg, n.DeleteManifest(ctx, w.repo, m.rec.Digest))
		// The manifest's tags go with it.
		for _, tag := range w.tags {
			if f := w.facts["tag "+tag]; f.known && f.val == dg {
				if o == unknown {
					w.facts["tag "+tag] = fact{}
				} else {
					w.facts["tag "+tag] = knownFact("")
				}
			}
		}
	default:
		d := w.blobs[w.rng.IntN(len(w.blobs))]
		w.removal("UnlinkBlobs", "blob "+string(d), n.UnlinkBlobs(ctx, []oci.Digest{d}, time.Time{}))
	}
}

// removal records the outcome of a write that removes key: applied or
// refused as not found, key is absent; otherwise it may be.
func (w *writer) removal(op, key string, err error) outcome {
	o := w.classify(op, err)
	switch o {
	case acked:
		w.facts[key] = knownFact("")
	case notFound:
		w.refused(op, key)
	case unknown:
		w.forget(key, "")
	}
	return o
}

// ensureUser sets the writer's user to a random password and admin flag.
func (w *writer) ensureUser(ctx context.Context, n *cluster.Node) {
	pw, admin := w.passwords[w.rng.IntN(len(w.passwords))], w.rng.IntN(2) == 0
	v := fmt.Sprintf("%s admin=%v", pw, admin)
	_, err := n.EnsureUser(ctx, w.user, pw, admin)
	switch w.classify("EnsureUser", err) {
	case acked:
		w.facts["user"] = knownFact(v)
	case unknown:
		w.forget("user", v)
	}
}

// check compares node i's state with every fact the writer knows.
func (w *writer) check(t *testing.T, c *clustertest.Cluster, i int) {
	t.Helper()
	ctx := t.Context()
	n := c.Node(i)
	for key, f := range w.facts {
		if !f.known {
			continue
		}
		kind, name, _ := strings.Cut(key, " ")
		var got string
		var err error
		switch kind {
		case "blob":
			var ok bool
			if ok, err = n.BlobLinked(ctx, w.repo, oci.Digest(name)); ok {
				got = "linked"
			}
		case "manifest":
			var rec oci.Record
			if rec, _, err = n.Manifest(ctx, w.repo, oci.Digest(name)); err == nil {
				got = string(rec.Digest)
			}
		case "tag":
			var d oci.Digest
			d, err = n.Tag(ctx, w.repo, name)
			got = string(d)
		case "user":
			// One bcrypt comparison takes seconds under the race
			// detector: the password is checked on one node (the others
			// have the same state hash), the user's presence on all.
			pw, _, _ := strings.Cut(f.val, " ")
			var ok, admin bool
			if i == 0 {
				ok, admin, err = n.CheckPassword(ctx, w.user, pw)
			} else {
				ok, err = n.UserExists(ctx, w.user)
				admin = strings.HasSuffix(f.val, "admin=true")
			}
			if ok {
				got = fmt.Sprintf("%s admin=%v", pw, admin)
			}
		}
		if errors.Is(err, oci.ErrNotFound) {
			err = nil
		}
		if err != nil || got != f.val {
			t.Errorf("writer %d: %s: %s has %q (%v), acknowledged %q", w.id, key, c.ID(i), got, err, f.val)
		}
	}
}

// stats summarizes the writer's outcomes per operation.
func (w *writer) stats() string {
	var ops []string
	for op := range w.counts {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	var b strings.Builder
	for _, op := range ops {
		n := w.counts[op]
		fmt.Fprintf(&b, "%s %d ok/%d not found/%d unknown; ", op, n[acked], n[notFound], n[unknown])
	}
	return strings.TrimSuffix(b.String(), "; ")
}
