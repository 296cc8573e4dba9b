package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Registry. Only cmd reads files, flags and environment;
// it passes a Config built from DefaultConfig.
type Config struct {
	// DataDir holds blobs (<DataDir>/blobs) and upload sessions
	// (<DataDir>/uploads).
	DataDir string
	// UploadPurgeAfter is how long an upload session may stay idle before
	// it is removed.
	UploadPurgeAfter time.Duration
	// GCInterval is the period of automatic garbage collection; 0 disables
	// the schedule (`berth gc` still works).
	GCInterval time.Duration
	// GCGrace protects blobs younger than this from garbage collection, so
	// that a blob uploaded for a manifest that is still on its way survives.
	GCGrace time.Duration
	// MaxBlobSize bounds one blob.
	MaxBlobSize int64
	// AnonymousPull lets clients without credentials pull. The Registry
	// itself does not read it: cmd passes it to the Authorizer
	// (AuthConfig.AnonymousPull, or NewAdminAuth).
	AnonymousPull bool
}

// DefaultConfig returns the configuration of `berth serve` with no flags.
func DefaultConfig() Config {
	return Config{
		DataDir:          "data",
		UploadPurgeAfter: 24 * time.Hour,
		GCInterval:       time.Hour,
		GCGrace:          time.Hour,
		MaxBlobSize:      10 << 30,
		AnonymousPull:    true,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("registry: data dir is empty")
	case c.UploadPurgeAfter <= 0:
		return fmt.Errorf("registry: upload purge age %s must be positive", c.UploadPurgeAfter)
	case c.GCInterval < 0:
		return fmt.Errorf("registry: gc interval %s must not be negative", c.GCInterval)
	case c.GCGrace <= 0:
		return fmt.Errorf("registry: gc grace %s must be positive", c.GCGrace)
	case c.MaxBlobSize <= 0:
		return fmt.Errorf("registry: max blob size %d must be positive", c.MaxBlobSize)
	}
	return nil
}

// Registry serves the OCI Distribution API over a blob store, upload
// sessions and the metadata State.
type Registry struct {
	cfg       Config
	state     State
	auth      Authorizer
	logger    *slog.Logger
	blobs     *BlobStore
	uploads   *Uploads
	collector *Collector
	metrics   *registryMetrics
	routes    *routeTable
	handler   http.Handler
	// From the state and the Authorizer, when they implement them; nil
	// otherwise.
	pulls   PullRecorder
	catalog CatalogFilter

	// Set by JoinCluster; nil on a one-node registry.
	peers   BlobPeers
	router  UploadRouter
	proxy   *httputil.ReverseProxy
	fetches fetchGroup

	gcMu      sync.Mutex // one collection at a time
	closeOnce sync.Once
}

// registryMetrics are the storage and GC collectors of a Registry.
type registryMetrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector
	gcRuns     *prometheus.CounterVec
	gcDeleted  prometheus.Counter
	gcFreed    prometheus.Counter
	gcDuration prometheus.Histogram
}

func newRegistryMetrics(reg prometheus.Registerer, blobs *BlobStore, uploads *Uploads) (*registryMetrics, error) {
	m := &registryMetrics{
		reg: reg,
		gcRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_gc_runs_total",
			Help: "Garbage collection runs, by result (ok, error, dry_run).",
		}, []string{"result"}),
		gcDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_gc_blobs_deleted_total",
			Help: "Blobs deleted by garbage collection.",
		}),
		gcFreed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_gc_bytes_freed_total",
			Help: "Bytes freed by garbage collection.",
		}),
		gcDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_gc_duration_seconds",
			Help:    "Duration of garbage collection runs.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
	}
	m.collectors = []prometheus.Collector{
		m.gcRuns, m.gcDeleted, m.gcFreed, m.gcDuration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_blobs",
			Help: "Blobs in the local blob store.",
		}, func() float64 { n, _ := blobs.Stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_blob_bytes",
			Help: "Bytes of the blobs in the local blob store.",
		}, func() float64 { _, b := blobs.Stats(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_uploads_open",
			Help: "Open blob upload sessions on this node.",
		}, func() float64 { return float64(uploads.Open()) }),
	}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("registry: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *registryMetrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

// New opens the blob store and upload sessions under cfg.DataDir and
// returns a Registry that keeps its metadata in state and asks auth about
// every request. When auth is also a CatalogFilter, the catalog lists only
// what it lets each caller see; when state is a PullRecorder, it is told
// of every manifest GET. reg may be nil (no metrics); logger may be nil.
func New(cfg Config, state State, auth Authorizer, logger *slog.Logger, reg prometheus.Registerer) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if state == nil || auth == nil {
		return nil, errors.New("registry: state and authorizer are required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With(keyComponent, "registry")
	blobs, err := OpenBlobStore(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	uploads, err := OpenUploads(filepath.Join(cfg.DataDir, "uploads"), blobs, cfg.MaxBlobSize)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	metrics, err := newRegistryMetrics(reg, blobs, uploads)
	if err != nil {
		return nil, err
	}
	rg := &Registry{
		cfg:       cfg,
		state:     state,
		auth:      auth,
		logger:    logger,
		blobs:     blobs,
		uploads:   uploads,
		collector: NewCollector(blobs, state, logger.With(keyComponent, "gc")),
		metrics:   metrics,
	}
	rg.pulls, _ = state.(PullRecorder)
	rg.catalog, _ = auth.(CatalogFilter)
	rg.routes = rg.newRouteTable()
	rg.handler = http.HandlerFunc(rg.serve)
	return rg, nil
}

// Handler serves /v2/, the whole OCI Distribution API. cmd mounts it next to
// /metrics and /healthz and wraps the mux in Middleware.
func (reg *Registry) Handler() http.Handler { return reg.handler }

// Run collects garbage every GCInterval and purges idle upload sessions
// until ctx ends; then it returns nil.
func (reg *Registry) Run(ctx context.Context) error {
	purgeEvery := min(reg.cfg.UploadPurgeAfter/4, 10*time.Minute)
	purgeEvery = max(purgeEvery, time.Second)
	purge := time.NewTicker(purgeEvery)
	defer purge.Stop()
	var gcTick <-chan time.Time
	if reg.cfg.GCInterval > 0 {
		t := time.NewTicker(reg.cfg.GCInterval)
		defer t.Stop()
		gcTick = t.C
	}
	reg.purgeUploads()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-purge.C:
			reg.purgeUploads()
		case <-gcTick:
			if _, err := reg.GC(ctx, false); err != nil && ctx.Err() == nil {
				reg.logger.Error("scheduled garbage collection", keyError, err)
			}
		}
	}
}

func (reg *Registry) purgeUploads() {
	n, err := reg.uploads.Purge(time.Now().Add(-reg.cfg.UploadPurgeAfter))
	if err != nil {
		reg.logger.Error("purge idle uploads", keyError, err)
	}
	if n > 0 {
		reg.logger.Info("purged idle uploads", "count", n)
	}
}

// GC runs one garbage collection now (for `berth gc` and the admin API);
// with dryRun it only reports what it would delete. Collections never
// overlap: a call waits for the one in progress.
func (reg *Registry) GC(ctx context.Context, dryRun bool) (GCResult, error) {
	reg.gcMu.Lock()
	defer reg.gcMu.Unlock()
	res, err := reg.collector.Run(ctx, GCConfig{Grace: reg.cfg.GCGrace, DryRun: dryRun}, time.Now())
	m := reg.metrics
	switch {
	case err != nil:
		m.gcRuns.WithLabelValues("error").Inc()
		return res, fmt.Errorf("registry: gc: %w", err)
	case dryRun:
		m.gcRuns.WithLabelValues("dry_run").Inc()
	default:
		m.gcRuns.WithLabelValues("ok").Inc()
		m.gcDeleted.Add(float64(res.Deleted))
		m.gcFreed.Add(float64(res.BytesFreed))
	}
	m.gcDuration.Observe(res.Duration.Seconds())
	return res, nil
}

// Close unregisters the Registry's metrics. Blobs and upload sessions are
// durable on disk at every moment, so there is nothing to flush; Close does
// not wait for requests in flight (the http.Server's Shutdown does).
func (reg *Registry) Close() error {
	reg.closeOnce.Do(reg.metrics.unregister)
	return nil
}

// logFor returns the registry's logger with the request id of r.
func (reg *Registry) logFor(r *http.Request) *slog.Logger {
	if id := RequestID(r.Context()); id != "" {
		return reg.logger.With(keyRequestID, id)
	}
	return reg.logger
}
