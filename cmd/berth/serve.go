package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/replicate"
	"github.com/berth-registry/berth/retention"
)

// Timeouts of a serving node.
const (
	// readyReport is how often a node that waits for its cluster at start
	// says so.
	readyReport = 15 * time.Second
	// stepDownTimeout bounds the leadership transfer at shutdown.
	stepDownTimeout = 2 * time.Second
	// shutdownTimeout bounds the wait for requests in flight at SIGTERM.
	shutdownTimeout = 30 * time.Second
	// readHeaderTimeout stops clients that open connections and send
	// nothing; there is no read or write timeout, as a blob may take long.
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
)

func (m *Main) serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run a berth node (a one-node cluster in ./data by default)",
		Description: "Every flag is also a BERTH_* environment variable and a key of the YAML file\n" +
			"given with --config; a flag wins over the environment, which wins over the file.\n" +
			"BERTH_ADMIN_PASSWORD sets the admin password; without it a password is generated\n" +
			"on first start and kept in <data>/admin.password.",
		Flags: serveFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("serve takes no arguments, got %q", c.Args().Slice())
			}
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			return m.serve(c.Context, cfg)
		},
	}
}

// serve runs a node until ctx ends (or the node leaves its cluster). It
// wires the node in an explicit order, each step needing the ones before
// it, and shuts down in reverse.
func (m *Main) serve(ctx context.Context, cfg Config) (err error) {
	// 1. Logger first, so that every later step can report what it does.
	logger, err := newLogger(m.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	logger.Info("starting berth", "version", version, "data", cfg.Data)
	defer func() {
		if err == nil {
			logger.Info("berth stopped")
		}
	}()

	// 2. Package configs are checked before anything touches the disk, so
	// a typo fails fast and leaves no half-created data directory. The
	// node id and secret are known only after steps 4 and 5; stand-ins let
	// the rest of the cluster config (the addresses above all) be checked
	// now.
	rcfg := cfg.registryConfig()
	if err := rcfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	bcfg := cfg.blobConfig()
	if err := bcfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := cfg.authConfig().Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	acfg := cfg.apiConfig()
	if err := acfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	probe, err := cfg.clusterConfig(cmp.Or(cfg.NodeID, "unknown"), []byte("0123456789abcdef"))
	if err == nil {
		err = probe.Validate()
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}

	// 3. The data directory holds the Raft log, the state, the blobs and
	// the secrets: only this user may read it.
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	// 4. The node id names this node in Raft and gossip; it must be the
	// same on every start of this data directory, so it is kept there.
	nodeID, created, err := loadNodeID(cfg.Data, cfg.NodeID)
	if err != nil {
		return err
	}
	if created {
		logger.Info("new node id", "node_id", nodeID, "path", filepath.Join(cfg.Data, nodeIDFile))
	}
	logger = logger.With("node_id", nodeID)

	// 5. The cluster secret keys gossip, Raft's TLS and the internal API:
	// the first node generates it, joiners are given it.
	joining := len(cfg.joinOthers(probe.GossipAdvertise)) > 0
	secret, err := loadClusterSecret(cfg, joining, logger)
	if err != nil {
		return err
	}
	ccfg, err := cfg.clusterConfig(nodeID, secret)
	if err == nil {
		err = ccfg.Validate()
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}

	// 6. One metrics registry per node (not the global one), so that
	// several nodes can live in one test process.
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	// 7. The Raft node, its state machine and gossip: all metadata lives
	// there, so everything after depends on it. It joins in the
	// background.
	node, err := cluster.New(ccfg, logger, metrics)
	if err != nil {
		return fmt.Errorf("start cluster node: %w", err)
	}
	defer func() {
		if cerr := node.Close(); cerr != nil {
			logger.Error("close cluster node", "error", cerr)
			err = errors.Join(err, fmt.Errorf("close cluster node: %w", cerr))
		}
	}()

	// 8. The registry: blob store, uploads and the OCI API over the node's
	// state, with every access decision made by one Authorizer. It joins
	// the cluster's blob replication and upload routing, and the node
	// serves and repairs its blobs.
	auth, err := registry.NewAccessAuth(cfg.authConfig(), node, node, node, logger)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	reg, err := registry.New(rcfg, node, auth, logger, metrics)
	if err != nil {
		return fmt.Errorf("start registry: %w", err)
	}
	defer func() {
		if cerr := reg.Close(); cerr != nil {
			logger.Error("close registry", "error", cerr)
			err = errors.Join(err, fmt.Errorf("close registry: %w", cerr))
		}
	}()
	if err := node.AttachBlobs(reg.Blobs(), bcfg); err != nil {
		return fmt.Errorf("attach blobs: %w", err)
	}
	reg.JoinCluster(node, node)

	// 8b. The replication engine, over the node's state (endpoints,
	// policies, tasks) and the registry's content. Endpoint passwords are
	// sealed with a key derived from the cluster secret.
	credKey, err := cluster.DeriveKey(secret, "berth endpoint credentials v1")
	if err != nil {
		return fmt.Errorf("derive credential key: %w", err)
	}
	pcfg := cfg.replicateConfig(nodeID, credKey)
	if err := pcfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	engine, err := replicate.New(pcfg, node, reg.Content(), node, node, logger, metrics)
	if err != nil {
		return fmt.Errorf("start replication: %w", err)
	}

	// 8c. Tag retention: manual runs through the API, scheduled ones on the
	// leader.
	retainer, err := retention.New(retention.DefaultConfig(), node, logger, metrics)
	if err != nil {
		return fmt.Errorf("start retention: %w", err)
	}

	// 9. One mux for every HTTP endpoint, wrapped whole in the middleware
	// so that each request gets an id, an access log line and metrics. The
	// internal API serves at once (peers need it while this node catches
	// up); the registry and the management API answer 503 until the node
	// is ready and its admin account exists.
	serveCtx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	var open atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("/v2/", gate(&open, reg.Handler()))
	apiHandler := api.New(reg, node, api.Info{Version: version, NodeID: nodeID}, logger).
		WithConfig(acfg).
		WithCluster(clusterAPI{node: node, left: stopServe}).
		WithReplication(engine).
		WithRetention(retentionAPI{retainer}).
		WithAuthenticator(auth)
	mux.Handle(api.Prefix, gate(&open, apiHandler))
	mux.Handle(api.HarborPrefix, gate(&open, apiHandler))
	mux.Handle(registry.TokenPath, gate(&open, auth.TokenHandler()))
	mux.Handle(cluster.InternalPrefix, node.InternalHandler())
	mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{Registry: metrics}))
	mux.HandleFunc("/healthz", healthz)
	mux.Handle("/readyz", readyz(readiness(func() bool { return open.Load() && node.Ready() })))
	handler := registry.Middleware(mux, logger.With("component", "http"), metrics)

	// 10. Listen now, so the address is known (addr ":0" picks a free
	// port), a busy port fails the start, and peers reach the internal API.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	conns := &connTracker{}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    1 << 20,
		ConnState:         conns.track,
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	shutdown := func() error {
		// Stop taking requests and let those in flight finish; then
		// (deferred) the background work, the registry and the node.
		shutCtx, cancelShut := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancelShut()
		conns.closeUnused()
		if err := srv.Shutdown(shutCtx); err != nil {
			logger.Warn("requests still in flight at the shutdown deadline; closing them", "error", err)
			_ = srv.Close()
		}
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		logger.Info("http server stopped")
		return nil
	}

	// 11. Wait until the node has a leader and has caught up with it (a
	// joiner: until the leader has added it and sent it the state). The
	// admin account below is a write, and a joiner must see the cluster's
	// accounts before it decides one is missing.
	if err := waitReady(serveCtx, node, logger); err != nil {
		if serveCtx.Err() != nil {
			logger.Info("stopped before the cluster was ready")
			return shutdown()
		}
		return errors.Join(err, shutdown())
	}

	// 12. The admin account must exist before clients can push.
	var terminal io.Writer
	if isTerminal(m.Stderr) {
		terminal = m.Stderr
	}
	admin := adminSetup{
		Users:       node,
		DataDir:     cfg.Data,
		EnvPassword: os.Getenv(envAdminPassword),
		Logger:      logger,
		Terminal:    terminal,
	}
	if err := admin.Run(serveCtx); err != nil {
		if serveCtx.Err() != nil {
			return shutdown()
		}
		return errors.Join(err, shutdown())
	}

	// 12b. The default project and the token signing key exist on every
	// cluster; whichever node finds them missing creates them.
	if err := bootstrapAccess(serveCtx, node, logger); err != nil {
		if serveCtx.Err() != nil {
			return shutdown()
		}
		return errors.Join(err, shutdown())
	}

	// 13. Background work (scheduled GC, purge of idle uploads) runs until
	// runCtx ends; it is stopped after the server has drained.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		if rerr := reg.Run(runCtx); rerr != nil {
			logger.Error("registry background work", "error", rerr)
		}
	})
	wg.Go(func() {
		if rerr := engine.Run(runCtx); rerr != nil {
			logger.Error("replication", "error", rerr)
		}
	})
	wg.Go(func() {
		if rerr := retainer.Run(runCtx); rerr != nil {
			logger.Error("retention", "error", rerr)
		}
	})
	defer func() {
		stopRun()
		wg.Wait()
	}()

	open.Store(true)
	logger.Info("berth ready", "addr", ln.Addr().String(), "raft_addr", node.RaftAddr(),
		"gossip_addr", node.GossipAddr(), "http_advertise", ccfg.HTTPAdvertise, "data", cfg.Data)
	if m.OnReady != nil {
		m.OnReady(ln.Addr())
	}

	// Serve until SIGTERM/SIGINT (ctx), a leave, or a server failure.
	select {
	case <-serveCtx.Done():
		logger.Info("shutting down", "timeout", shutdownTimeout.String())
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	}
	// A leader hands leadership over first, so that writes pause for a
	// leadership transfer, not for an election timeout.
	stepCtx, cancelStep := context.WithTimeout(context.WithoutCancel(ctx), stepDownTimeout)
	if err := node.StepDown(stepCtx); err != nil {
		logger.Warn("could not hand leadership over before shutting down", "error", err)
	}
	cancelStep()
	return shutdown()
}

// waitReady waits for node.WaitReady, saying every little while what it
// waits for, until ctx ends.
func waitReady(ctx context.Context, node *cluster.Node, logger *slog.Logger) error {
	start := time.Now()
	logger.Info("waiting for the cluster to be ready")
	for {
		wctx, cancel := context.WithTimeout(ctx, readyReport)
		err := node.WaitReady(wctx)
		cancel()
		if err == nil {
			logger.Info("cluster ready", "waited", time.Since(start).Round(time.Millisecond).String(), "leader", node.Leader())
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		leader := node.Leader()
		if leader == "" {
			leader = "none yet"
		}
		logger.Warn("still waiting for the cluster: a node that joins waits for the leader to add it; a restarted one for a quorum",
			"waited", time.Since(start).Round(time.Second).String(), "leader", leader, "applied_index", node.AppliedIndex(), "last", err)
	}
}

// bootstrapAccess creates the public project library and the token
// signing key when the cluster has none (its first start, or a cluster
// upgraded from before projects: library then adopts the repositories
// already under library/).
func bootstrapAccess(ctx context.Context, node *cluster.Node, logger *slog.Logger) error {
	ctx = policy.WithActor(ctx, policy.Actor{Name: "system"})
	created, err := node.EnsureProject(ctx, policy.Project{Name: policy.DefaultProject, Public: true, Owner: adminUser, Quota: policy.NoQuota})
	if err != nil {
		return fmt.Errorf("create project %s: %w", policy.DefaultProject, err)
	}
	if created {
		logger.Info("created the public project", "project", policy.DefaultProject)
	}
	if err := node.EnsureTokenKey(ctx); err != nil {
		return fmt.Errorf("create the token signing key: %w", err)
	}
	return nil
}

// gate answers 503 until open is set: the node is not ready to serve.
func gate(open *atomic.Bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !open.Load() {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"node is starting: waiting for the cluster"}]}`+"\n")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// retentionAPI runs the API's manual retention runs detached from the
// request: a run that has started finishes (and records its end) even if
// the client goes away.
type retentionAPI struct{ r *retention.Runner }

func (a retentionAPI) RunRetention(ctx context.Context, project string, dryRun bool) (policy.RetentionRun, error) {
	return a.r.RunRetention(context.WithoutCancel(ctx), project, dryRun)
}

// clusterAPI adapts the node to the management API's cluster endpoints.
type clusterAPI struct {
	node *cluster.Node
	left func() // ends serve once the node has left
}

func (c clusterAPI) ClusterStatus(ctx context.Context, hash bool) (any, error) {
	return c.node.Status(ctx, hash)
}

func (c clusterAPI) LeaveCluster(ctx context.Context) error {
	if err := c.node.Leave(ctx); err != nil {
		return err
	}
	// Shut down once the answer is on its way.
	time.AfterFunc(100*time.Millisecond, c.left)
	return nil
}

var (
	_ replicate.Store = (*cluster.Node)(nil)
	_ replicate.Local = registry.Content{}
)

// connTracker remembers connections that never sent a request, so that a
// shutdown can close them at once: http.Server.Shutdown waits up to 5 s for
// such connections to send one.
type connTracker struct {
	mu    sync.Mutex
	fresh map[net.Conn]struct{}
}

func (t *connTracker) track(c net.Conn, s http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fresh == nil {
		t.fresh = map[net.Conn]struct{}{}
	}
	if s == http.StateNew {
		t.fresh[c] = struct{}{}
	} else {
		delete(t.fresh, c)
	}
}

func (t *connTracker) closeUnused() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.fresh {
		_ = c.Close()
	}
}

// healthz answers 200 while the process runs.
func healthz(w http.ResponseWriter, _ *http.Request) {
	writeStatus(w, http.StatusOK, "ok")
}

// readiness is what /readyz asks.
type readiness func() bool

// readyz answers 200 when the node can serve reads and writes, 503 otherwise
// (a load balancer then sends traffic elsewhere).
func readyz(n readiness) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !n() {
			writeStatus(w, http.StatusServiceUnavailable, "not ready")
			return
		}
		writeStatus(w, http.StatusOK, "ready")
	})
}

func writeStatus(w http.ResponseWriter, code int, status string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": status})
}
