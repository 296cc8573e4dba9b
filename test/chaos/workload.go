package chaos

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand"
	"math/rand/v2"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// Image is a push that a node acknowledged: what every node must serve
// from then on.
type Image struct {
	Repo, Tag string
	Digest    v1.Hash
	Manifest  []byte    // the exact bytes pushed
	Blobs     []v1.Hash // the config and the layers
	Via       string    // the node that acknowledged it
}

func (i Image) String() string { return i.Repo + ":" + i.Tag + "@" + i.Digest.String() }

// describe returns what the ledger keeps of img pushed as repo:tag.
func describe(img v1.Image, repo, tag string) (Image, error) {
	d, err := img.Digest()
	if err != nil {
		return Image{}, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return Image{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return Image{}, err
	}
	blobs := []v1.Hash{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	return Image{Repo: repo, Tag: tag, Digest: d, Manifest: raw, Blobs: blobs}, nil
}

// Ledger records every acknowledged push. It is safe for concurrent use.
type Ledger struct {
	mu     sync.Mutex
	images []Image
}

// Add records an acknowledged push.
func (l *Ledger) Add(img Image) {
	l.mu.Lock()
	l.images = append(l.images, img)
	l.mu.Unlock()
}

// Images returns every acknowledged push so far.
func (l *Ledger) Images() []Image {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Image(nil), l.images...)
}

// Len is the number of acknowledged pushes.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.images)
}

func (l *Ledger) pick(rng *rand.Rand) (Image, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.images) == 0 {
		return Image{}, false
	}
	return l.images[rng.IntN(len(l.images))], true
}

// Weather says whether faults are in effect; Faults implements it.
type Weather interface {
	// Calm returns a number that changes whenever a fault starts or is
	// healed, and whether no fault is in effect and every healed node is
	// ready again.
	Calm() (epoch uint64, calm bool)
}

// WorkloadConfig configures a Workload.
type WorkloadConfig struct {
	Pushers int // concurrent pushers, each to its own repository
	Pullers int // concurrent pullers of acknowledged images
	// Seed seeds the workload's choices and the images' contents.
	Seed int64
	// LayerSize and Layers shape each image: Layers layers of one file of
	// LayerSize random bytes.
	LayerSize int64
	Layers    int
	// PushDeadline bounds the attempts at one push, on random nodes.
	PushDeadline time.Duration
	// PullInterval paces each puller, so that reads do not starve the
	// nodes of the two cores they share.
	PullInterval time.Duration
}

// DefaultWorkloadConfig is a light load for a two-core machine.
func DefaultWorkloadConfig() WorkloadConfig {
	return WorkloadConfig{
		Pushers:      4,
		Pullers:      2,
		LayerSize:    1024,
		Layers:       2,
		PushDeadline: 90 * time.Second,
		PullInterval: 50 * time.Millisecond,
	}
}

// Workload pushes small random images to random nodes and pulls
// acknowledged ones back from random nodes, counting what happened.
type Workload struct {
	cfg     WorkloadConfig
	client  *Client
	nodes   []*Node
	ledger  *Ledger
	weather Weather

	mu    sync.Mutex
	stats WorkloadStats
}

// WorkloadStats counts the outcomes of a workload.
type WorkloadStats struct {
	// Pushes: every push started is acknowledged, failed (it kept meeting
	// temporary errors until its deadline), rejected (a 4xx answer) or
	// interrupted (the workload ended during it).
	PushesStarted, PushesAcked, PushesFailed, PushesRejected, PushesInterrupted int
	// Attempts counts push attempts, retries included.
	Attempts int
	// Pulls: ok; unavailable (no answer, 5xx); not found while a fault was
	// in effect (a node may answer from its own, older state then); not
	// found with no fault anywhere (a false 404: berth promises none);
	// refused (another 4xx); wrong (another digest or other bytes: never
	// allowed).
	PullsOK, PullsUnavailable, PullsNotFound, PullsFalseNotFound, PullsRefused, PullsWrong int
	// Samples holds the first few errors of each kind.
	Samples map[string][]string
}

// maxSamples is how many errors of each kind the stats keep.
const maxSamples = 5

// NewWorkload returns a workload against nodes, recording acknowledged
// pushes in ledger.
func NewWorkload(cfg WorkloadConfig, client *Client, nodes []*Node, ledger *Ledger, weather Weather) *Workload {
	return &Workload{cfg: cfg, client: client, nodes: nodes, ledger: ledger, weather: weather,
		stats: WorkloadStats{Samples: map[string][]string{}}}
}

// Run pushes and pulls until ctx ends, then waits for its workers.
func (w *Workload) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range w.cfg.Pushers {
		wg.Go(func() { w.pusher(ctx, i) })
	}
	for i := range w.cfg.Pullers {
		wg.Go(func() { w.puller(ctx, i) })
	}
	wg.Wait()
}

// Stats returns the counts so far.
func (w *Workload) Stats() WorkloadStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Samples = map[string][]string{}
	for k, v := range w.stats.Samples {
		s.Samples[k] = append([]string(nil), v...)
	}
	return s
}

func (w *Workload) count(f func(*WorkloadStats)) {
	w.mu.Lock()
	f(&w.stats)
	w.mu.Unlock()
}

// sample keeps an error of a kind, stamped with the time (UTC, as in the
// nodes' logs) to find it there.
func (w *Workload) sample(kind string, format string, args ...any) {
	at := time.Now().UTC().Format("15:04:05.000")
	w.count(func(s *WorkloadStats) {
		if len(s.Samples[kind]) < maxSamples {
			s.Samples[kind] = append(s.Samples[kind], at+" "+fmt.Sprintf(format, args...))
		}
	})
}

// rng returns the random source of worker i of a kind (0 pushers, 1
// pullers), derived from the seed.
func (w *Workload) rng(kind, i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(w.cfg.Seed), uint64(kind<<32|i)))
}

func (w *Workload) pusher(ctx context.Context, id int) {
	rng := w.rng(0, id)
	// go-containerregistry's random package takes a math/rand source.
	src := mrand.NewSource(rng.Int64())
	repo := fmt.Sprintf("chaos/pusher-%d", id)
	for i := 0; ctx.Err() == nil; i++ {
		tag := fmt.Sprintf("t%d", i)
		img, err := random.Image(w.cfg.LayerSize, int64(w.cfg.Layers), random.WithSource(src))
		if err != nil {
			w.sample("image", "%v", err)
			return
		}
		desc, err := describe(img, repo, tag)
		if err != nil {
			w.sample("image", "%v", err)
			return
		}
		w.count(func(s *WorkloadStats) { s.PushesStarted++ })
		via, attempts, err := pushRetrying(ctx, w.client, w.nodes, rng, desc, img, w.cfg.PushDeadline)
		w.count(func(s *WorkloadStats) { s.Attempts += attempts })
		switch {
		case err == nil:
			desc.Via = via.Short
			w.ledger.Add(desc)
			w.count(func(s *WorkloadStats) { s.PushesAcked++ })
		case ctx.Err() != nil:
			w.count(func(s *WorkloadStats) { s.PushesInterrupted++ })
		case Temporary(err):
			w.count(func(s *WorkloadStats) { s.PushesFailed++ })
			w.sample("push failed", "%s: %v", desc, err)
		default:
			w.count(func(s *WorkloadStats) { s.PushesRejected++ })
			w.sample("push rejected", "%s: %v", desc, err)
		}
	}
}

// pushRetrying pushes img to random nodes until one acknowledges it, an
// answer is not temporary, ctx ends or deadline passes. It returns the
// node that acknowledged and the number of attempts.
func pushRetrying(ctx context.Context, c *Client, nodes []*Node, rng *rand.Rand, desc Image, img v1.Image, deadline time.Duration) (*Node, int, error) {
	end := time.Now().Add(deadline)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n := nodes[rng.IntN(len(nodes))]
		err := c.Push(ctx, n, desc.Repo, desc.Tag, img)
		if err == nil {
			return n, attempt, nil
		}
		if ctx.Err() != nil || !Temporary(err) || time.Now().After(end) {
			return nil, attempt, fmt.Errorf("push via %s (attempt %d): %w", n.Short, attempt, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff + time.Duration(rng.Int64N(int64(backoff)))):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (w *Workload) puller(ctx context.Context, id int) {
	rng := w.rng(1, id)
	tick := time.NewTicker(w.cfg.PullInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		img, ok := w.ledger.pick(rng)
		if !ok {
			continue
		}
		n := w.nodes[rng.IntN(len(w.nodes))]
		epoch, calm := w.weather.Calm()
		err := verifyPull(ctx, w.client, n, img, img.Tag, img.Blobs[rng.IntN(len(img.Blobs))])
		if ctx.Err() != nil {
			return
		}
		epoch2, calm2 := w.weather.Calm()
		quiet := calm && calm2 && epoch == epoch2
		switch {
		case err == nil:
			w.count(func(s *WorkloadStats) { s.PullsOK++ })
		case IsWrongContent(err):
			w.count(func(s *WorkloadStats) { s.PullsWrong++ })
			w.sample("pull wrong", "%v", err)
		case IsNotFound(err) && quiet:
			w.count(func(s *WorkloadStats) { s.PullsFalseNotFound++ })
			w.sample("false not found", "%s from %s with no fault in effect: %v", img, n.Short, err)
		case IsNotFound(err):
			w.count(func(s *WorkloadStats) { s.PullsNotFound++ })
		case Temporary(err):
			w.count(func(s *WorkloadStats) { s.PullsUnavailable++ })
		default:
			w.count(func(s *WorkloadStats) { s.PullsRefused++ })
			w.sample("pull refused", "%s from %s: %v", img, n.Short, err)
		}
	}
}

// verifyPull GETs img's manifest by ref (its tag or digest) from n, checks
// its bytes and digest, then GETs blob and checks its hash. A content
// mismatch is a *WrongContentError.
func verifyPull(ctx context.Context, c *Client, n *Node, img Image, ref string, blob v1.Hash) error {
	body, digest, err := c.Manifest(ctx, n, img.Repo, ref)
	if err != nil {
		return err
	}
	if digest != img.Digest.String() || !bytes.Equal(body, img.Manifest) {
		return &WrongContentError{fmt.Sprintf("%s:%s from %s: digest %s and %d bytes, pushed %s and %d bytes",
			img.Repo, ref, n.Short, digest, len(body), img.Digest, len(img.Manifest))}
	}
	return c.Blob(ctx, n, img.Repo, blob)
}
