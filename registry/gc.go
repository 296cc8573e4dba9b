package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/berth-registry/berth/oci"
)

// ErrGCRunning: a garbage collection was asked for while another one runs on
// this node. Run does not queue: the scheduled and the manual collection do
// the same work, so the caller may simply report that one is in progress.
var ErrGCRunning = errors.New("garbage collection already running")

// DefaultGCGrace is how old an unreferenced blob must be before GC deletes
// it: long enough for a client to push a manifest after its layers.
const DefaultGCGrace = time.Hour

// GCConfig tunes one collection.
type GCConfig struct {
	// Grace is the minimum age (by mtime) of a blob GC deletes;
	// DefaultGCGrace when zero or negative.
	Grace time.Duration
	// DryRun reports what would be deleted without deleting anything.
	DryRun bool
}

// GCResult describes one collection. In a dry run Deleted and BytesFreed
// count what would have been deleted.
type GCResult struct {
	Scanned    int
	Deleted    int
	BytesFreed int64
	Duration   time.Duration
	DryRun     bool
}

// Collector deletes blobs that no committed manifest references and no
// repository still links.
//
// Every node of a cluster runs its own collector over its own store, with
// the mark taken from the committed state, which is the same everywhere.
// Safety while pushes run, on this node and on others, comes from these
// rules:
//   - grace: a blob whose file is younger than GCConfig.Grace, or that a
//     repository linked less than Grace ago, is kept. Put, Ingest and Touch
//     refresh the mtime under the blob's lock, and GC deletes only under
//     that lock after re-checking the mtime, so a blob re-uploaded (here,
//     or pushed here by a peer for its write quorum), mounted or HEADed
//     during a collection is not deleted.
//   - unlink before delete: the candidates' old links are dropped through
//     the state machine first (UnlinkBlobs with the grace cutoff), and a
//     file is deleted only if, once that has applied, nothing references
//     or links it any more. The state machine refuses a manifest whose
//     blobs are not linked in its repository, so no manifest can commit
//     against a blob being deleted, whichever node it was pushed through.
//     A node that dies mid-sweep leaves unlinked files, which the next run
//     deletes.
//   - protection: the manifest PUT handler calls Protect with the digests a
//     manifest references before it checks that they exist, and releases
//     them once the state machine has applied (or refused) the manifest. GC
//     tests "protected" and deletes under the lock Protect takes.
//
// Blobs of open upload sessions are not in the BlobStore until the session
// finishes (and then they are new), so GC cannot touch them by construction.
type Collector struct {
	blobs  *BlobStore
	state  GCState
	logger *slog.Logger

	running sync.Mutex // one collection at a time (TryLock)

	mu        sync.Mutex // guards protected; held for each delete
	protected map[oci.Digest]int
}

// NewCollector returns a collector of blobs using state for the mark. It
// logs one line per run to logger (the caller names the component); nil
// discards.
func NewCollector(blobs *BlobStore, state GCState, logger *slog.Logger) *Collector {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Collector{
		blobs:     blobs,
		state:     state,
		logger:    logger,
		protected: map[oci.Digest]int{},
	}
}

// Protect keeps ds from being deleted until release is called. Protections
// nest: a digest stays protected while any holder has not released it.
// release may be called more than once.
func (c *Collector) Protect(ds []oci.Digest) (release func()) {
	c.mu.Lock()
	for _, d := range ds {
		c.protected[d]++
	}
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			for _, d := range ds {
				if c.protected[d]--; c.protected[d] <= 0 {
					delete(c.protected, d)
				}
			}
			c.mu.Unlock()
		})
	}
}

// Run collects garbage once: it marks what the state references or linked
// within the grace period, walks the store for older files outside the
// mark, unlinks their old links through the state machine, marks again,
// and deletes each candidate that is still outside the mark, last modified
// before now-Grace, and not protected. A dry run unlinks and deletes
// nothing. A second Run while one is in progress fails at once with
// ErrGCRunning.
func (c *Collector) Run(ctx context.Context, cfg GCConfig, now time.Time) (GCResult, error) {
	if !c.running.TryLock() {
		return GCResult{}, ErrGCRunning
	}
	defer c.running.Unlock()
	began := time.Now()
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGCGrace
	}
	res := GCResult{DryRun: cfg.DryRun}
	cutoff := now.Add(-cfg.Grace)

	live, err := c.state.LiveBlobs(ctx, cutoff)
	if err != nil {
		return res, fmt.Errorf("gc: mark: %w", err)
	}
	type candidate struct {
		d    oci.Digest
		size int64
	}
	var cands []candidate
	err = c.blobs.Walk(ctx, func(d oci.Digest, size int64, mod time.Time) error {
		res.Scanned++
		if _, ok := live[d]; !ok && mod.Before(cutoff) {
			cands = append(cands, candidate{d, size})
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("gc: sweep: %w", err)
	}
	if len(cands) > 0 && !cfg.DryRun {
		ds := make([]oci.Digest, len(cands))
		for i, cand := range cands {
			ds[i] = cand.d
		}
		// The candidates' old links go first, through the log: from then
		// on no manifest can commit against them (apply refuses blobs not
		// linked in the repository).
		if err := c.state.UnlinkBlobs(ctx, ds, cutoff); err != nil {
			return res, fmt.Errorf("gc: unlink %d blobs: %w", len(ds), err)
		}
	}
	if len(cands) > 0 {
		// Mark again: a manifest committed, or a blob linked again, during
		// the walk saves its blobs.
		since := cutoff
		if !cfg.DryRun {
			since = time.Time{}
		}
		if live, err = c.state.LiveBlobs(ctx, since); err != nil {
			return res, fmt.Errorf("gc: mark again: %w", err)
		}
	}

	var errs []error
	for _, cand := range cands {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if _, ok := live[cand.d]; ok {
			continue
		}
		if cfg.DryRun {
			if !c.isProtected(cand.d) {
				res.Deleted++
				res.BytesFreed += cand.size
			}
			continue
		}
		freed, ok, err := c.deleteUnprotected(cand.d, cutoff)
		if ok {
			res.Deleted++
			res.BytesFreed += freed
		}
		if err != nil && !errors.Is(err, oci.ErrNotFound) { // not found: deleted by someone else since the walk
			errs = append(errs, err)
		}
	}
	res.Duration = time.Since(began)
	c.logger.Info("garbage collection finished",
		"scanned", res.Scanned, "deleted", res.Deleted, "bytes_freed", res.BytesFreed,
		"dry_run", res.DryRun, "duration", res.Duration)
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	return res, nil
}

// deleteUnprotected deletes d if it is not protected and still older than
// cutoff, holding c.mu so that no Protect can slip in between the check and
// the delete.
func (c *Collector) deleteUnprotected(d oci.Digest, cutoff time.Time) (int64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.protected[d] > 0 {
		return 0, false, nil
	}
	return c.blobs.removeIfOlder(d, cutoff)
}

func (c *Collector) isProtected(d oci.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.protected[d] > 0
}
