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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/registry"
)

// Timeouts of a serving node.
const (
	// readyTimeout bounds the wait for the node to elect a leader and
	// catch up with its log at start.
	readyTimeout = time.Minute
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

// serve runs a node until ctx ends. It wires the node in an explicit order,
// each step needing the ones before it, and shuts down in reverse.
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
	// a typo fails fast and leaves no half-created data directory.
	rcfg := cfg.registryConfig()
	if err := rcfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// The node id is known only after step 4; any id lets the rest of the
	// cluster config (the Raft address above all) be checked now.
	if err := cfg.clusterConfig(cmp.Or(cfg.NodeID, "unknown")).Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}

	// 3. The data directory holds the Raft log, the state, the blobs and
	// the admin password: only this user may read it.
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	// 4. The node id names this node in Raft; it must be the same on every
	// start of this data directory, so it is kept there.
	nodeID, created, err := loadNodeID(cfg.Data, cfg.NodeID)
	if err != nil {
		return err
	}
	if created {
		logger.Info("new node id", "node_id", nodeID, "path", filepath.Join(cfg.Data, nodeIDFile))
	}
	logger = logger.With("node_id", nodeID)
	ccfg := cfg.clusterConfig(nodeID)
	if err := ccfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}

	// 5. One metrics registry per node (not the global one), so that
	// several nodes can live in one test process.
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	// 6. The Raft node and its state machine: all metadata lives there, so
	// everything after depends on it.
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

	// 7. Wait until the node can commit writes: the admin account below is
	// a write, and /readyz would say "not ready" until then anyway.
	waitStart := time.Now()
	logger.Info("waiting for the cluster to be ready", "timeout", readyTimeout.String())
	waitCtx, cancelWait := context.WithTimeout(ctx, readyTimeout)
	err = node.WaitReady(waitCtx)
	cancelWait()
	if err != nil {
		if ctx.Err() != nil {
			logger.Info("stopped before the cluster was ready")
			return nil
		}
		return fmt.Errorf("cluster not ready after %s: %w", readyTimeout, err)
	}
	logger.Info("cluster ready", "waited", time.Since(waitStart).Round(time.Millisecond).String())

	// 8. The admin account must exist before clients can push.
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
	if err := admin.Run(ctx); err != nil {
		return err
	}

	// 9. The registry: blob store, uploads and the OCI API over the node's
	// state, with every access decision made by one Authorizer.
	auth := registry.NewAdminAuth(node, cfg.AnonymousPull, api.Realm)
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

	// 10. One mux for every HTTP endpoint, wrapped whole in the middleware
	// so that each request gets an id, an access log line and metrics.
	mux := http.NewServeMux()
	mux.Handle("/v2/", reg.Handler())
	mux.Handle(api.Prefix, api.New(reg, node, api.Info{Version: version, NodeID: nodeID}, logger))
	mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{Registry: metrics}))
	mux.HandleFunc("/healthz", healthz)
	mux.Handle("/readyz", readyz(node))
	handler := registry.Middleware(mux, logger.With("component", "http"), metrics)

	// 11. Listen before announcing readiness, so the address is known
	// (addr ":0" picks a free port) and a busy port fails the start.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	// 12. Background work (scheduled GC, purge of idle uploads) runs until
	// runCtx ends; it is stopped after the server has drained.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		if rerr := reg.Run(runCtx); rerr != nil {
			logger.Error("registry background work", "error", rerr)
		}
	})
	defer func() {
		stopRun()
		wg.Wait()
	}()

	logger.Info("berth ready", "addr", ln.Addr().String(), "raft_addr", cfg.RaftAddr, "data", cfg.Data)
	if m.OnReady != nil {
		m.OnReady(ln.Addr())
	}

	// Serve until SIGTERM/SIGINT (ctx) or a server failure.
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "timeout", shutdownTimeout.String())
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	}

	// Reverse order: stop taking requests and let those in flight finish,
	// then (deferred) the background work, the registry and the node.
	shutCtx, cancelShut := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancelShut()
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

// healthz answers 200 while the process runs.
func healthz(w http.ResponseWriter, _ *http.Request) {
	writeStatus(w, http.StatusOK, "ok")
}

// readiness is what /readyz asks.
type readiness interface {
	Ready() bool
}

// readyz answers 200 when the node can serve reads and writes, 503 otherwise
// (a load balancer then sends traffic elsewhere).
func readyz(n readiness) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !n.Ready() {
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
