package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/replicate"
)

// Replication is the replication engine as the management API drives it;
// *replicate.Engine implements it.
type Replication interface {
	ListEndpoints(ctx context.Context) ([]replicate.EndpointView, error)
	GetEndpoint(ctx context.Context, name string) (replicate.EndpointView, error)
	PutEndpoint(ctx context.Context, spec replicate.EndpointSpec) (replicate.EndpointView, error)
	RemoveEndpoint(ctx context.Context, name string) error
	CheckEndpoint(ctx context.Context, name string) (replicate.Health, error)
	ListRules(ctx context.Context) ([]policy.Rule, error)
	GetRule(ctx context.Context, name string) (policy.Rule, error)
	PutRule(ctx context.Context, r policy.Rule) (policy.Rule, error)
	RemoveRule(ctx context.Context, name string) error
	SetRuleEnabled(ctx context.Context, name string, enabled bool) (policy.Rule, error)
	RunRule(ctx context.Context, name string) (uint64, error)
	Executions(ctx context.Context, rule string, before uint64, n int) ([]policy.Execution, error)
	Execution(ctx context.Context, id uint64) (policy.Execution, error)
	Tasks(ctx context.Context, exec uint64, status string, after uint64, n int) ([]policy.Task, error)
	StopExecution(ctx context.Context, id uint64) error
	Status(ctx context.Context, repo, ref string) (replicate.ArtifactStatus, error)
	Promote(ctx context.Context, req replicate.PromoteRequest) (replicate.PromoteResult, error)
}

var _ Replication = (*replicate.Engine)(nil)

// Paging of lists.
const (
	defaultLimit = 50
	maxLimit     = 500
)

// RunResponse is the answer of POST /api/v1/policies/{name}/run.
type RunResponse struct {
	Execution uint64 `json:"execution"`
}

// WithReplication adds the replication endpoints and returns h.
func (h *Handler) WithReplication(r Replication) *Handler {
	h.repl = r
	mux := http.NewServeMux()
	route := func(pattern string, fn http.HandlerFunc) { h.route(mux, pattern, h.adminOnly(fn)) }
	route("GET /api/v1/endpoints", h.listEndpoints)
	route("POST /api/v1/endpoints", h.putEndpoint(true))
	route("GET /api/v1/endpoints/{name}", h.getEndpoint)
	route("PUT /api/v1/endpoints/{name}", h.putEndpoint(false))
	route("DELETE /api/v1/endpoints/{name}", h.deleteEndpoint)
	route("POST /api/v1/endpoints/{name}/check", h.checkEndpoint)
	route("GET /api/v1/policies", h.listRules)
	route("POST /api/v1/policies", h.putRule(true))
	route("GET /api/v1/policies/{name}", h.getRule)
	route("PUT /api/v1/policies/{name}", h.putRule(false))
	route("DELETE /api/v1/policies/{name}", h.deleteRule)
	route("POST /api/v1/policies/{name}/enable", h.enableRule(true))
	route("POST /api/v1/policies/{name}/disable", h.enableRule(false))
	route("POST /api/v1/policies/{name}/run", h.runRule)
	route("GET /api/v1/executions", h.listExecutions)
	route("GET /api/v1/executions/{id}", h.getExecution)
	route("GET /api/v1/executions/{id}/tasks", h.listTasks)
	route("POST /api/v1/executions/{id}/stop", h.stopExecution)
	route("GET /api/v1/replication/status", h.replicationStatus)
	route("POST /api/v1/promote", h.promote)
	h.replMux = mux
	return h
}

// serveReplication answers the replication paths; it reports false for a
// path that is not one of them.
func (h *Handler) serveReplication(w http.ResponseWriter, r *http.Request) bool {
	if h.replMux == nil {
		return false
	}
	_, pattern := h.replMux.Handler(r)
	if pattern == "" {
		return false
	}
	h.replMux.ServeHTTP(w, r)
	return true
}

// replError answers an error of the engine: validation 400, not found 404,
// refused 409, unreachable endpoint 422, no quorum 503; anything else is a
// 500 whose cause is logged, not shown.
func (h *Handler) replError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, policy.ErrInvalid), errors.Is(err, oci.ErrNameInvalid), errors.Is(err, oci.ErrTagInvalid), errors.Is(err, oci.ErrDigestInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, oci.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, oci.ErrDenied), errors.Is(err, errExists):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, replicate.ErrUnreachable):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, oci.ErrUnavailable):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "the cluster cannot take writes now; retry")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away.
	default:
		h.logger.ErrorContext(r.Context(), "replication request", "path", r.URL.Path, "error", err,
			"request_id", registry.RequestID(r.Context()))
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

var errExists = errors.New("already exists")

// decode reads a bounded JSON body into v, refusing unknown fields and
// anything after the value.
func decode(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return decodeBody(body, v)
}

// decodeOptional is decode for a body that may be empty.
func decodeOptional(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil || len(bytes.TrimSpace(body)) == 0 {
		return err
	}
	return decodeBody(body, v)
}

// readBody reads a body of at most maxBodySize bytes.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodySize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read body", policy.ErrInvalid)
	}
	if len(body) > maxBodySize {
		return nil, fmt.Errorf("%w: body larger than %d bytes", policy.ErrInvalid, maxBodySize)
	}
	return body, nil
}

func decodeBody(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", policy.ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: body: data after the JSON value", policy.ErrInvalid)
	}
	return nil
}

// queryUint reads an unsigned query parameter (0 when absent).
func queryUint(r *http.Request, key string) (uint64, error) {
	s := r.URL.Query().Get(key)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q is not a number", policy.ErrInvalid, key, s)
	}
	return v, nil
}

// limit reads ?limit=, defaultLimit when absent, at most maxLimit.
func limit(r *http.Request) (int, error) {
	n, err := queryUint(r, "limit")
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return defaultLimit, nil
	case n > maxLimit:
		return maxLimit, nil
	}
	return int(n), nil
}

func pathID(r *http.Request) (uint64, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: execution id %q", policy.ErrInvalid, r.PathValue("id"))
	}
	return id, nil
}

func (h *Handler) listEndpoints(w http.ResponseWriter, r *http.Request) {
	eps, err := h.repl.ListEndpoints(r.Context())
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, eps)
}

func (h *Handler) getEndpoint(w http.ResponseWriter, r *http.Request) {
	ep, err := h.repl.GetEndpoint(r.Context(), r.PathValue("name"))
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ep)
}

// putEndpoint creates (POST: refused when the name exists) or replaces
// (PUT /endpoints/{name}) an endpoint.
func (h *Handler) putEndpoint(create bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var spec replicate.EndpointSpec
		if err := decode(r, &spec); err != nil {
			h.replError(w, r, err)
			return
		}
		if !create {
			if spec.Name != "" && spec.Name != r.PathValue("name") {
				h.replError(w, r, fmt.Errorf("%w: the body names %q, the path %q", policy.ErrInvalid, spec.Name, r.PathValue("name")))
				return
			}
			spec.Name = r.PathValue("name")
		} else if _, err := h.repl.GetEndpoint(r.Context(), spec.Name); err == nil {
			h.replError(w, r, fmt.Errorf("endpoint %s %w (PUT /api/v1/endpoints/%s replaces it)", spec.Name, errExists, spec.Name))
			return
		}
		ep, err := h.repl.PutEndpoint(r.Context(), spec)
		if err != nil {
			h.replError(w, r, err)
			return
		}
		status := http.StatusOK
		if create {
			status = http.StatusCreated
		}
		writeJSON(w, status, ep)
	}
}

func (h *Handler) deleteEndpoint(w http.ResponseWriter, r *http.Request) {
	if err := h.repl.RemoveEndpoint(r.Context(), r.PathValue("name")); err != nil {
		h.replError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) checkEndpoint(w http.ResponseWriter, r *http.Request) {
	health, err := h.repl.CheckEndpoint(r.Context(), r.PathValue("name"))
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, health)
}

func (h *Handler) listRules(w http.ResponseWriter, r *http.Request) {
	rules, err := h.repl.ListRules(r.Context())
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rules)
}

func (h *Handler) getRule(w http.ResponseWriter, r *http.Request) {
	rule, err := h.repl.GetRule(r.Context(), r.PathValue("name"))
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rule)
}

// ruleSpec is what a client may set of a policy; the times are the
// server's.
type ruleSpec struct {
	Name         string `json:"name"`
	Endpoint     string `json:"endpoint"`
	Repos        string `json:"repos,omitempty"`
	Tags         string `json:"tags,omitempty"`
	ExcludeRepos string `json:"exclude_repos,omitempty"`
	ExcludeTags  string `json:"exclude_tags,omitempty"`
	OnlySigned   bool   `json:"only_signed,omitempty"`
	DestPrefix   string `json:"dest_prefix,omitempty"`
	Flatten      int    `json:"flatten,omitempty"`
	Trigger      string `json:"trigger"`
	Cron         string `json:"cron,omitempty"`
	Delete       bool   `json:"delete,omitempty"`
	Override     bool   `json:"override,omitempty"`
	Bandwidth    int64  `json:"bandwidth,omitempty"`
	Concurrency  int    `json:"concurrency,omitempty"`
	Enabled      *bool  `json:"enabled,omitempty"` // default true
}

func (s ruleSpec) rule() policy.Rule {
	enabled := s.Enabled == nil || *s.Enabled
	return policy.Rule{
		Name: s.Name, Endpoint: s.Endpoint, Repos: s.Repos, Tags: s.Tags,
		ExcludeRepos: s.ExcludeRepos, ExcludeTags: s.ExcludeTags, OnlySigned: s.OnlySigned,
		DestPrefix: s.DestPrefix, Flatten: s.Flatten, Trigger: s.Trigger, Cron: s.Cron,
		Delete: s.Delete, Override: s.Override, Bandwidth: s.Bandwidth, Concurrency: s.Concurrency,
		Enabled: enabled,
	}
}

// putRule creates (POST) or replaces (PUT /policies/{name}) a policy.
func (h *Handler) putRule(create bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var spec ruleSpec
		if err := decode(r, &spec); err != nil {
			h.replError(w, r, err)
			return
		}
		if !create {
			if spec.Name != "" && spec.Name != r.PathValue("name") {
				h.replError(w, r, fmt.Errorf("%w: the body names %q, the path %q", policy.ErrInvalid, spec.Name, r.PathValue("name")))
				return
			}
			spec.Name = r.PathValue("name")
		} else if _, err := h.repl.GetRule(r.Context(), spec.Name); err == nil {
			h.replError(w, r, fmt.Errorf("policy %s %w (PUT /api/v1/policies/%s replaces it)", spec.Name, errExists, spec.Name))
			return
		}
		rule, err := h.repl.PutRule(r.Context(), spec.rule())
		if err != nil {
			h.replError(w, r, err)
			return
		}
		status := http.StatusOK
		if create {
			status = http.StatusCreated
		}
		writeJSON(w, status, rule)
	}
}

func (h *Handler) deleteRule(w http.ResponseWriter, r *http.Request) {
	if err := h.repl.RemoveRule(r.Context(), r.PathValue("name")); err != nil {
		h.replError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) enableRule(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rule, err := h.repl.SetRuleEnabled(r.Context(), r.PathValue("name"), enabled)
		if err != nil {
			h.replError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, rule)
	}
}

func (h *Handler) runRule(w http.ResponseWriter, r *http.Request) {
	id, err := h.repl.RunRule(r.Context(), r.PathValue("name"))
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, RunResponse{Execution: id})
}

func (h *Handler) listExecutions(w http.ResponseWriter, r *http.Request) {
	before, err := queryUint(r, "before")
	if err != nil {
		h.replError(w, r, err)
		return
	}
	n, err := limit(r)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	execs, err := h.repl.Executions(r.Context(), r.URL.Query().Get("policy"), before, n)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, execs)
}

func (h *Handler) getExecution(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	ex, err := h.repl.Execution(r.Context(), id)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ex)
}

func (h *Handler) listTasks(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	after, err := queryUint(r, "after")
	if err != nil {
		h.replError(w, r, err)
		return
	}
	n, err := limit(r)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	tasks, err := h.repl.Tasks(r.Context(), id, r.URL.Query().Get("status"), after, n)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tasks)
}

func (h *Handler) stopExecution(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	if err := h.repl.StopExecution(r.Context(), id); err != nil {
		h.replError(w, r, err)
		return
	}
	ex, err := h.repl.Execution(r.Context(), id)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ex)
}

func (h *Handler) replicationStatus(w http.ResponseWriter, r *http.Request) {
	repo, ref := r.URL.Query().Get("repo"), r.URL.Query().Get("ref")
	if repo == "" || ref == "" {
		h.replError(w, r, fmt.Errorf("%w: give ?repo=REPO&ref=TAG_OR_DIGEST", policy.ErrInvalid))
		return
	}
	st, err := h.repl.Status(r.Context(), repo, ref)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *Handler) promote(w http.ResponseWriter, r *http.Request) {
	var req replicate.PromoteRequest
	if err := decode(r, &req); err != nil {
		h.replError(w, r, err)
		return
	}
	res, err := h.repl.Promote(r.Context(), req)
	if err != nil {
		h.replError(w, r, err)
		return
	}
	h.logger.InfoContext(r.Context(), "promoted", "user", principalFrom(r.Context()).Name, "source", req.SourceRepo+"@"+string(req.Digest),
		"dest", req.DestRepo+":"+req.DestTag, "endpoint", req.Endpoint, "request_id", registry.RequestID(r.Context()))
	writeJSON(w, http.StatusOK, res)
}
