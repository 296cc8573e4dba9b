package replicate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Config tunes the engine. cmd fills it from flags.
type Config struct {
	// NodeID names this node in task leases.
	NodeID string
	// CredentialKey (32 bytes, derived from the cluster secret) seals
	// endpoint passwords at rest.
	CredentialKey []byte
	// Workers bounds the tasks this node runs at once.
	Workers int
	// Lease is how long a claimed task stays this node's without a
	// renewal; a node that dies loses its tasks to another after it.
	Lease time.Duration
	// Poll is how often the engine looks for claimable tasks.
	Poll time.Duration
	// ReconcileInterval is how often the leader compares every enabled
	// policy's source and destination and queues what differs.
	ReconcileInterval time.Duration
	// HealthInterval is how often endpoints are checked; an endpoint that
	// comes back is reconciled at once.
	HealthInterval time.Duration
	// RetryMin and RetryMax bound the exponential backoff (with jitter) of
	// a task that failed temporarily; it retries until it succeeds.
	RetryMin, RetryMax time.Duration
	// HistoryCount and HistoryAge bound the finished executions kept.
	HistoryCount int
	HistoryAge   time.Duration
	// TombstoneTTL is how long a deleted tag's tombstone is kept, so that
	// an older write arriving later cannot bring it back.
	TombstoneTTL time.Duration
	// Transport, when set, carries every request to endpoints (tests wrap
	// it to inject faults).
	Transport http.RoundTripper
}

// DefaultConfig returns the defaults: 8 workers, 30 s leases, reconcile
// every 5 min, retries from 1 s to 5 min, 1000 executions or 30 days of
// history, tombstones for 7 days.
func DefaultConfig() Config {
	return Config{
		Workers:           8,
		Lease:             30 * time.Second,
		Poll:              200 * time.Millisecond,
		ReconcileInterval: 5 * time.Minute,
		HealthInterval:    15 * time.Second,
		RetryMin:          time.Second,
		RetryMax:          5 * time.Minute,
		HistoryCount:      1000,
		HistoryAge:        30 * 24 * time.Hour,
		TombstoneTTL:      7 * 24 * time.Hour,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("replication: node id required")
	case len(c.CredentialKey) != 32:
		return errors.New("replication: a 32-byte credential key is required")
	case c.Workers < 1 || c.Workers > 256:
		return fmt.Errorf("replication: workers %d: want 1 to 256", c.Workers)
	case c.Lease < time.Second:
		return fmt.Errorf("replication: lease %s: want at least 1s", c.Lease)
	case c.Poll <= 0 || c.Poll > c.Lease/3:
		return fmt.Errorf("replication: poll %s: want more than 0 and at most a third of the lease", c.Poll)
	case c.ReconcileInterval < time.Second:
		return fmt.Errorf("replication: reconcile interval %s: want at least 1s", c.ReconcileInterval)
	case c.HealthInterval < 100*time.Millisecond:
		return fmt.Errorf("replication: health interval %s too short", c.HealthInterval)
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("replication: retry bounds %s..%s", c.RetryMin, c.RetryMax)
	case c.HistoryCount < 1 || c.HistoryAge < time.Minute:
		return errors.New("replication: history must keep at least 1 execution for 1 minute")
	case c.TombstoneTTL < time.Minute:
		return fmt.Errorf("replication: tombstone ttl %s: want at least 1m", c.TombstoneTTL)
	}
	return nil
}

// Local is the registry the engine replicates from: what the copier reads,
// and the catalog that reconciliation walks.
type Local interface {
	Source
	Repositories(ctx context.Context, last string, n int) ([]string, error)
	Tags(ctx context.Context, repo, last string, n int) ([]string, error)
}

// LocalWriter writes into the local registry, for promotions inside it.
type LocalWriter interface {
	LinkBlob(ctx context.Context, repo string, d oci.Digest, size int64) error
	PutManifest(ctx context.Context, rec oci.Record, payload []byte, tag string, v oci.TagVersion) error
}

// Engine runs replication on one node: it claims tasks from the state
// machine and copies or deletes artifacts at their endpoints; on the
// leader it also reconciles, runs schedules and prunes history.
type Engine struct {
	cfg    Config
	store  Store
	local  Local
	writer LocalWriter
	lead   Leadership
	logger *slog.Logger
	seal   *sealer
	copier *Copier
	m      *metrics

	mu       sync.Mutex
	remotes  map[string]cachedRemote  // endpoint name → client
	limiters map[string]*rate.Limiter // rule name → bandwidth limiter
	health   map[string]Health        // endpoint name → last check
	held     map[uint64]*heldTask     // tasks this node runs
	scanning map[string]int           // rules being scanned → scans running
	runCtx   context.Context          // Run's, for work that outlives a request
	cameBack map[string]bool          // endpoints reachable again, not yet reconciled

	updates chan policy.TaskUpdate
	wake    chan struct{}
}

type cachedRemote struct {
	updated int64
	remote  *Remote
}

// heldTask is a task this node has claimed and runs.
type heldTask struct {
	task   policy.Task
	cancel context.CancelFunc
	bytes  int64 // progress, for renewals
}

// New returns an engine over store, reading from local (and writing into
// it for promotions through writer), with its metrics registered on reg.
func New(cfg Config, store Store, local Local, writer LocalWriter, lead Leadership, logger *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := newSealer(cfg.CredentialKey)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	logger = logger.With("component", "replicate")
	return &Engine{
		cfg:      cfg,
		store:    store,
		local:    local,
		writer:   writer,
		lead:     lead,
		logger:   logger,
		seal:     s,
		copier:   NewCopier(logger),
		m:        m,
		remotes:  map[string]cachedRemote{},
		limiters: map[string]*rate.Limiter{},
		health:   map[string]Health{},
		held:     map[uint64]*heldTask{},
		scanning: map[string]int{},
		cameBack: map[string]bool{},
		updates:  make(chan policy.TaskUpdate, 1024),
		wake:     make(chan struct{}, 1),
	}, nil
}

// Run runs the engine until ctx ends. Tasks running then are left to
// their leases: another node (or this one, restarted) takes them over.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	e.runCtx = ctx
	e.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { e.dispatchLoop(ctx) })
	wg.Go(func() { e.reportLoop(ctx) })
	wg.Go(func() { e.leaderLoop(ctx) })
	wg.Go(func() { e.healthLoop(ctx) })
	wg.Wait()
	return nil
}

// Kick makes the engine look for tasks now rather than at its next poll.
func (e *Engine) Kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// dispatchLoop claims tasks while this node has free workers and the local
// state shows something claimable, and keeps the task metrics.
func (e *Engine) dispatchLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.wake:
		}
		active, err := e.store.ActiveTasks(ctx)
		if err != nil {
			if ctx.Err() == nil {
				e.logger.Warn("read active tasks", "error", err)
			}
			continue
		}
		now := time.Now()
		e.m.observe(active, now)
		e.dropLost(active)
		free := e.cfg.Workers - e.heldCount()
		if free <= 0 || !anyClaimable(active, now) {
			continue
		}
		claim := newClaimID()
		tasks, err := e.store.ClaimTasks(ctx, e.cfg.NodeID, claim, free, now, e.cfg.Lease)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, oci.ErrUnavailable) {
				e.logger.Warn("claim tasks", "error", err)
			}
			continue
		}
		for _, task := range tasks {
			e.start(ctx, task)
		}
	}
}

// anyClaimable reports whether some task could be claimed at now.
func anyClaimable(active []policy.Task, now time.Time) bool {
	ns := now.UnixNano()
	for _, t := range active {
		switch t.Status {
		case policy.StatusPending:
			return true
		case policy.StatusRetrying:
			if t.NextAttempt <= ns {
				return true
			}
		case policy.StatusRunning:
			if t.LeaseUntil < ns {
				return true
			}
		}
	}
	return false
}

func newClaimID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e *Engine) heldCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.held)
}

// dropLost cancels the tasks this node runs that the state no longer gives
// it: stopped, their policy removed, or taken over after a lost lease.
func (e *Engine) dropLost(active []policy.Task) {
	ours := make(map[uint64]string, len(active))
	for _, t := range active {
		if t.Status == policy.StatusRunning && t.Owner == e.cfg.NodeID {
			ours[t.ID] = t.Claim
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, h := range e.held {
		if claim, ok := ours[id]; !ok || claim != h.task.Claim {
			h.cancel()
		}
	}
}

// start runs one claimed task in its own goroutine.
func (e *Engine) start(ctx context.Context, t policy.Task) {
	tctx, cancel := context.WithCancel(ctx)
	h := &heldTask{task: t, cancel: cancel}
	e.mu.Lock()
	e.held[t.ID] = h
	e.mu.Unlock()
	go func() {
		defer cancel()
		u := e.runTask(tctx, h)
		e.mu.Lock()
		delete(e.held, t.ID)
		e.mu.Unlock()
		if tctx.Err() != nil && u.Status == policy.StatusRetrying {
			// Stopped or shutting down: the lease decides what happens
			// next, not a retry counted against the task.
			return
		}
		if u.Status != policy.StatusRetrying {
			e.m.done.WithLabelValues(t.Endpoint, u.Status).Inc()
		}
		select {
		case e.updates <- u:
		case <-ctx.Done():
		}
	}()
}

// runTask does one attempt of a task and says how it ended.
func (e *Engine) runTask(ctx context.Context, h *heldTask) policy.TaskUpdate {
	t := h.task
	log := e.logger.With("task", t.ID, "policy", t.Policy, "endpoint", t.Endpoint, "repo", t.Repo, "ref", t.Ref(), "kind", t.Kind)
	u := policy.TaskUpdate{ID: t.ID, Claim: t.Claim}
	start := time.Now()
	res, err := e.attempt(ctx, h)
	u.Bytes = res.Bytes
	e.m.bytes.WithLabelValues(t.Endpoint).Add(float64(res.Bytes))
	switch {
	case err == nil:
		u.Status = policy.StatusSucceeded
		u.Note = res.Note
		log.Debug("task done", "bytes", res.Bytes, "note", res.Note, "took", time.Since(start))
	case IsTemporary(err) || ctx.Err() != nil:
		u.Status = policy.StatusRetrying
		u.Error = err.Error()
		wait := e.retryDelay(t.Attempts, err)
		u.NextAttempt = time.Now().Add(wait).UnixNano()
		e.m.retries.WithLabelValues(t.Endpoint).Inc()
		log.Info("task will retry", "attempt", t.Attempts, "in", wait.Round(time.Millisecond), "error", err)
	default:
		u.Status = policy.StatusFailed
		u.Error = err.Error()
		log.Warn("task failed", "attempt", t.Attempts, "error", err)
	}
	return u
}

// attempt copies or deletes the artifact of h's task.
func (e *Engine) attempt(ctx context.Context, h *heldTask) (CopyResult, error) {
	t := h.task
	rule, err := e.store.Rule(ctx, t.Policy)
	if err != nil {
		return CopyResult{}, fmt.Errorf("policy %s: %w", t.Policy, err)
	}
	remote, err := e.remote(ctx, t.Endpoint)
	if err != nil {
		return CopyResult{}, err
	}
	if t.Kind == policy.TaskDelete {
		note, err := e.copier.Delete(ctx, remote, t)
		return CopyResult{Note: note}, err
	}
	opt := CopyOptions{
		OnlySigned: rule.OnlySigned,
		Override:   rule.Override,
		Limiter:    e.limiter(rule),
		Progress: func(n int64) {
			e.mu.Lock()
			h.bytes += n
			e.mu.Unlock()
		},
	}
	return e.copier.Copy(ctx, e.local, remote, t, opt)
}

// retryDelay is the wait before attempt n+1 of a task: exponential from
// RetryMin with jitter, capped at RetryMax, and never less than a
// Retry-After the endpoint asked for.
func (e *Engine) retryDelay(attempts int, err error) time.Duration {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = e.cfg.RetryMin
	b.MaxInterval = e.cfg.RetryMax
	b.MaxElapsedTime = 0
	b.RandomizationFactor = 0.5
	b.Reset()
	d := b.NextBackOff()
	for i := 1; i < attempts && i < 64; i++ {
		d = b.NextBackOff()
	}
	if ra := RetryAfter(err); ra > d {
		d = ra
	}
	return min(d, e.cfg.RetryMax)
}

// limiter returns the bandwidth limiter of rule on this node (nil: none).
func (e *Engine) limiter(rule policy.Rule) *rate.Limiter {
	if rule.Bandwidth <= 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.limiters[rule.Name]
	if l == nil || int64(l.Limit()) != rule.Bandwidth {
		burst := int(min(rule.Bandwidth, 1<<20))
		l = rate.NewLimiter(rate.Limit(rule.Bandwidth), burst)
		e.limiters[rule.Name] = l
	}
	return l
}

// remote returns the client of an endpoint, made again when the endpoint
// changed.
func (e *Engine) remote(ctx context.Context, name string) (*Remote, error) {
	ep, err := e.store.Endpoint(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", name, err)
	}
	e.mu.Lock()
	c, ok := e.remotes[name]
	e.mu.Unlock()
	if ok && c.updated == ep.Updated {
		return c.remote, nil
	}
	r, err := e.newRemote(ep)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.remotes[name] = cachedRemote{updated: ep.Updated, remote: r}
	e.mu.Unlock()
	return r, nil
}

func (e *Engine) newRemote(ep policy.Endpoint) (*Remote, error) {
	password, err := e.seal.open(ep.Name, ep.Secret)
	if err != nil {
		return nil, err
	}
	return NewRemote(ep, password, e.cfg.Transport, e.logger)
}

// reportLoop sends what workers report in batches (one Raft command for
// many tasks), and renews the leases of running tasks.
func (e *Engine) reportLoop(ctx context.Context) {
	flush := time.NewTicker(50 * time.Millisecond)
	defer flush.Stop()
	renew := time.NewTicker(e.cfg.Lease / 3)
	defer renew.Stop()
	var batch []policy.TaskUpdate
	send := func(us []policy.TaskUpdate) {
		if len(us) == 0 {
			return
		}
		// A report must not be lost to a brief election: retry it within
		// the lease (after that the task is another node's anyway).
		deadline := time.Now().Add(e.cfg.Lease)
		for {
			err := e.store.UpdateTasks(ctx, us, time.Now())
			if err == nil || ctx.Err() != nil {
				return
			}
			if time.Now().After(deadline) {
				e.logger.Warn("report task results", "tasks", len(us), "error", err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-e.updates:
			batch = append(batch, u)
			if len(batch) < 256 {
				continue
			}
		case <-flush.C:
		case <-renew.C:
			send(e.renewals())
			continue
		}
		if len(batch) > 0 {
			send(batch)
			batch = nil
			e.Kick() // workers are free again
		}
	}
}

// renewals are the lease renewals of every task this node runs.
func (e *Engine) renewals() []policy.TaskUpdate {
	until := time.Now().Add(e.cfg.Lease).UnixNano()
	e.mu.Lock()
	defer e.mu.Unlock()
	us := make([]policy.TaskUpdate, 0, len(e.held))
	for _, h := range e.held {
		us = append(us, policy.TaskUpdate{ID: h.task.ID, Claim: h.task.Claim, Status: policy.StatusRunning, LeaseUntil: until, Bytes: h.bytes})
	}
	return us
}
