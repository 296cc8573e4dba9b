package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/berth-registry/berth/registry"
)

// Prefix is the path every endpoint of this package starts with.
const Prefix = "/api/v1/"

// HarborPrefix is where the Harbor-compatible subset is served (see
// harbor.go); cmd mounts the same Handler at Prefix and at HarborPrefix.
const HarborPrefix = "/api/v2.0/"

// Realm is the HTTP basic auth realm of the management API.
const Realm = "berth"

// GCRunner runs one garbage collection; *registry.Registry implements it.
type GCRunner interface {
	GC(ctx context.Context, dryRun bool) (registry.GCResult, error)
}

var _ GCRunner = (*registry.Registry)(nil)

// Info describes this node for GET /api/v1/system/info.
type Info struct {
	Version string `json:"version"`
	NodeID  string `json:"node_id"`
}

// GCRequest is the optional body of POST /api/v1/gc.
type GCRequest struct {
	DryRun bool `json:"dry_run"`
}

// GCResponse is the answer of POST /api/v1/gc.
type GCResponse struct {
	Scanned         int     `json:"scanned"`
	Deleted         int     `json:"deleted"`
	BytesFreed      int64   `json:"bytes_freed"`
	DurationSeconds float64 `json:"duration_seconds"`
	DryRun          bool    `json:"dry_run"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// maxBodySize bounds request bodies; every request of this API is small.
const maxBodySize = 64 << 10

// Cluster is the node's cluster membership as the API shows and changes
// it; cmd adapts a *cluster.Node.
type Cluster interface {
	// ClusterStatus returns the cluster as this node sees it, ready to be
	// encoded as JSON; with hash every member hashes its applied state.
	ClusterStatus(ctx context.Context, hash bool) (any, error)
	// LeaveCluster takes this node out of the cluster for good; the node
	// then shuts down.
	LeaveCluster(ctx context.Context) error
}

// Handler serves the management API.
type Handler struct {
	gc        GCRunner
	store     Store
	cluster   Cluster
	repl      Replication
	replMux   *http.ServeMux
	mux       *http.ServeMux // the access endpoints
	harbor    *http.ServeMux // the Harbor-compatible endpoints
	routes    []string       // patterns of mux and replMux, for the OpenAPI test
	auth      Authenticator
	retention RetentionRunner
	cfg       Config
	policyMu  sync.Mutex // serializes read-modify-writes of project rules
	info      Info
	logger    *slog.Logger
}

// WithCluster adds the cluster endpoints (GET /api/v1/cluster, POST
// /api/v1/cluster/leave) and returns h.
func (h *Handler) WithCluster(c Cluster) *Handler {
	h.cluster = c
	return h
}

// New returns the management API handler. Mount it at Prefix and at
// HarborPrefix. store is the access state (cmd passes its *cluster.Node);
// requests are authenticated by the Authenticator of WithAuthenticator.
func New(gc GCRunner, store Store, info Info, logger *slog.Logger) *Handler {
	h := &Handler{
		gc: gc, store: store, info: info, cfg: DefaultConfig(),
		logger: logger.With("component", "api"),
	}
	h.mux = http.NewServeMux()
	h.accessRoutes()
	h.harbor = http.NewServeMux()
	h.harborRoutes()
	return h
}

// ServeHTTP routes a request to its endpoint.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, HarborPrefix) {
		h.serveHarbor(w, r)
		return
	}
	// Known paths name their route for the metrics; others keep the mount
	// pattern, so that raw paths never become label values.
	switch r.URL.Path {
	case Prefix + "gc":
		registry.SetRoute(r, Prefix+"gc")
		if !allow(w, r, http.MethodPost) {
			return
		}
		h.adminOnly(h.postGC)(w, r)
	case Prefix + "cluster":
		registry.SetRoute(r, Prefix+"cluster")
		if !h.hasCluster(w) || !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.adminOnly(h.getCluster)(w, r)
	case Prefix + "cluster/leave":
		registry.SetRoute(r, Prefix+"cluster/leave")
		if !h.hasCluster(w) || !allow(w, r, http.MethodPost) {
			return
		}
		h.adminOnly(h.postLeave)(w, r)
	case Prefix + "system/info":
		registry.SetRoute(r, Prefix+"system/info")
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.getInfo(w, r)
	default:
		if _, pattern := h.mux.Handler(r); pattern != "" {
			h.mux.ServeHTTP(w, r)
			return
		}
		if h.serveReplication(w, r) {
			return
		}
		h.noRoute(w, r)
	}
}

// fixedRoutes are the routes ServeHTTP matches by hand.
var fixedRoutes = []string{
	"POST " + Prefix + "gc",
	"GET " + Prefix + "cluster",
	"POST " + Prefix + "cluster/leave",
	"GET " + Prefix + "system/info",
}

// noRoute answers a request no route takes: 405 with Allow when the path
// is routed for other methods, else 404.
func (h *Handler) noRoute(w http.ResponseWriter, r *http.Request) {
	methods := routedMethods(r, []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete}, h.mux, h.replMux)
	if len(methods) == 0 {
		writeError(w, http.StatusNotFound, "no such endpoint")
		return
	}
	allow(w, r, methods...)
}

// allow answers 405 unless r's method is one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	return false
}

func challenge(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", Realm))
	writeError(w, http.StatusUnauthorized, msg)
}

func (h *Handler) postGC(w http.ResponseWriter, r *http.Request) {
	dryRun, err := gcDryRun(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	res, err := h.gc.GC(r.Context(), dryRun)
	if err != nil {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			// The client went away; nobody reads an answer.
			return
		}
		h.logger.ErrorContext(r.Context(), "garbage collection", "dry_run", dryRun, "error", err,
			"request_id", registry.RequestID(r.Context()))
		writeError(w, http.StatusInternalServerError, "garbage collection failed")
		return
	}
	h.logger.InfoContext(r.Context(), "garbage collection requested", "user", principalFrom(r.Context()).Name,
		"dry_run", res.DryRun, "request_id", registry.RequestID(r.Context()))
	writeJSON(w, http.StatusOK, GCResponse{
		Scanned:         res.Scanned,
		Deleted:         res.Deleted,
		BytesFreed:      res.BytesFreed,
		DurationSeconds: res.Duration.Seconds(),
		DryRun:          res.DryRun,
	})
}

// gcDryRun reads dry_run from the query and the optional JSON body; either
// one asking for a dry run is enough, since it is the safe choice.
func gcDryRun(r *http.Request) (bool, error) {
	dryRun := false
	if q := r.URL.Query().Get("dry_run"); q != "" {
		v, err := strconv.ParseBool(q)
		if err != nil {
			return false, fmt.Errorf("dry_run %q is not a boolean", q)
		}
		dryRun = v
	}
	body, err := readBody(r)
	if err != nil {
		return false, err
	}
	if len(body) > 0 {
		var req GCRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return false, errors.New("body must be a JSON object like {\"dry_run\": true}")
		}
		dryRun = dryRun || req.DryRun
	}
	return dryRun, nil
}

func (h *Handler) hasCluster(w http.ResponseWriter) bool {
	if h.cluster == nil {
		writeError(w, http.StatusNotFound, "no such endpoint")
		return false
	}
	return true
}

// getCluster answers GET /api/v1/cluster: the leader, this node's Raft
// state, and every member with its gossip state, suffrage, applied index,
// lag and blob repair backlog (and its state hash with ?hash=true).
func (h *Handler) getCluster(w http.ResponseWriter, r *http.Request) {
	hash := false
	if q := r.URL.Query().Get("hash"); q != "" {
		v, err := strconv.ParseBool(q)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("hash %q is not a boolean", q))
			return
		}
		hash = v
	}
	st, err := h.cluster.ClusterStatus(r.Context(), hash)
	if err != nil {
		h.logger.ErrorContext(r.Context(), "cluster status", "error", err, "request_id", registry.RequestID(r.Context()))
		writeError(w, http.StatusInternalServerError, "cluster status failed")
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// LeaveResponse is the answer of POST /api/v1/cluster/leave.
type LeaveResponse struct {
	NodeID string `json:"node_id"`
	Status string `json:"status"`
}

// postLeave answers POST /api/v1/cluster/leave: the node leaves the cluster
// (refused with 409 when the voters left would lose quorum) and then shuts
// down.
func (h *Handler) postLeave(w http.ResponseWriter, r *http.Request) {
	h.logger.InfoContext(r.Context(), "leaving the cluster on request", "user", principalFrom(r.Context()).Name, "request_id", registry.RequestID(r.Context()))
	if err := h.cluster.LeaveCluster(r.Context()); err != nil {
		h.logger.WarnContext(r.Context(), "leave the cluster", "error", err, "request_id", registry.RequestID(r.Context()))
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, LeaveResponse{NodeID: h.info.NodeID, Status: "left"})
}

func (h *Handler) getInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.info)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
