package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// A project's policies: its quota, its tag immutability rules, its tag
// retention policy and runs.
//
// Rules are changed by read-modify-write of the project's list, which
// h.policyMu serializes on this node; two nodes changing the same
// project's rules at the same instant may lose one change (the state
// has no per-rule command yet).

// QuotaView is a project's quota with its usage.
type QuotaView struct {
	Project string       `json:"project"`
	Quota   policy.Quota `json:"quota"`
	Usage   policy.Usage `json:"usage"`
}

// QuotaRequest is the body of PUT /projects/{project}/quota: bytes and
// artifacts, -1 unlimited; a limit left out keeps its value.
type QuotaRequest struct {
	Storage *int64 `json:"storage,omitempty"`
	Count   *int64 `json:"count,omitempty"`
}

// listQuotas answers GET /quotas (administrators): every project's quota
// and usage, a page at a time, with the total in X-Total-Count.
func (h *Handler) listQuotas(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	if err := requireAdmin(p); err != nil {
		h.fail(w, r, err)
		return
	}
	page, size, err := pageParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	shown := newWindow[policy.Project](page, size)
	err = h.eachProject(r.Context(), func(proj policy.Project) bool { shown.add(proj); return true })
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]QuotaView, 0, len(shown.items))
	for _, proj := range shown.items {
		v, err := h.quotaView(r, proj)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out = append(out, v)
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(shown.total))
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) quotaView(r *http.Request, proj policy.Project) (QuotaView, error) {
	u, err := h.store.ProjectUsage(r.Context(), proj.Name)
	return QuotaView{Project: proj.Name, Quota: proj.Quota, Usage: u}, err
}

func (h *Handler) getQuota(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	proj, err := h.store.Project(r.Context(), pa.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	v, err := h.quotaView(r, proj)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// putQuota answers PUT /projects/{project}/quota: administrators only
// (project admins may read their quota, not raise it).
func (h *Handler) putQuota(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	pa, err := h.authorizeAdmin(r.Context(), p, r.PathValue("project"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var req QuotaRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Storage == nil && req.Count == nil {
		h.fail(w, r, invalid(`give {"storage": BYTES, "count": ARTIFACTS}, -1 for unlimited`))
		return
	}
	proj, err := h.setQuota(r.Context(), pa.Name, func(q *policy.Quota) error {
		if req.Storage != nil {
			q.Storage = *req.Storage
		}
		if req.Count != nil {
			q.Count = *req.Count
		}
		return nil
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	v, err := h.quotaView(r, proj)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// setQuota changes project's quota with set: the limits set leaves alone
// keep their value. The read, the change and the write are one under
// policyMu; the result is validated before it is written.
func (h *Handler) setQuota(ctx context.Context, project string, set func(*policy.Quota) error) (policy.Project, error) {
	h.policyMu.Lock()
	defer h.policyMu.Unlock()
	proj, err := h.store.Project(ctx, project)
	if err != nil {
		return policy.Project{}, err
	}
	if err := set(&proj.Quota); err != nil {
		return policy.Project{}, err
	}
	if err := proj.Quota.Validate(); err != nil {
		return policy.Project{}, err
	}
	return h.store.UpdateProject(ctx, policy.Project{Name: project, Quota: proj.Quota}, "quota")
}

// --- immutability rules

// ImmutableRuleRequest is a tag immutability rule as a client gives it;
// the server numbers it.
type ImmutableRuleRequest struct {
	Repos        string `json:"repos"`
	Tags         string `json:"tags"`
	ExcludeRepos bool   `json:"exclude_repos,omitempty"`
	ExcludeTags  bool   `json:"exclude_tags,omitempty"`
	Disabled     bool   `json:"disabled,omitempty"`
}

func (q ImmutableRuleRequest) rule(id uint64) policy.ImmutableRule {
	return policy.ImmutableRule{
		ID: id, Repos: q.Repos, Tags: q.Tags, ExcludeRepos: q.ExcludeRepos, ExcludeTags: q.ExcludeTags, Disabled: q.Disabled,
	}
}

func (h *Handler) listImmutable(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	proj, err := h.store.Project(r.Context(), pa.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rules := proj.Immutable
	if rules == nil {
		rules = []policy.ImmutableRule{}
	}
	writeJSON(w, http.StatusOK, rules)
}

func (h *Handler) createImmutable(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	var req ImmutableRuleRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	rule := req.rule(0)
	if err := rule.Validate(); err != nil {
		h.fail(w, r, err)
		return
	}
	h.policyMu.Lock()
	defer h.policyMu.Unlock()
	proj, err := h.store.Project(r.Context(), pa.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	before := map[uint64]bool{}
	for _, x := range proj.Immutable {
		before[x.ID] = true
	}
	rules := append(slices.Clone(proj.Immutable), rule)
	if len(rules) > policy.MaxImmutableRules {
		h.fail(w, r, invalid(fmt.Sprintf("a project may have at most %d immutability rules", policy.MaxImmutableRules)))
		return
	}
	proj, err = h.store.UpdateProjectIf(r.Context(), policy.Project{Name: pa.Name, Immutable: rules}, proj.Updated, "immutable")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	for _, x := range proj.Immutable {
		if !before[x.ID] {
			w.Header().Set("Location", fmt.Sprintf("%sprojects/%s/immutable/%d", Prefix, pa.Name, x.ID))
			writeJSON(w, http.StatusCreated, x)
			return
		}
	}
	h.fail(w, r, fmt.Errorf("project %s: the new immutability rule is not in the state", pa.Name))
}

// changeImmutable replaces (with) or removes (nil) rule {id}.
func (h *Handler) changeImmutable(w http.ResponseWriter, r *http.Request, project string, with *ImmutableRuleRequest) {
	id, err := pathUint(r, "id")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.policyMu.Lock()
	defer h.policyMu.Unlock()
	proj, err := h.store.Project(r.Context(), project)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	i := slices.IndexFunc(proj.Immutable, func(x policy.ImmutableRule) bool { return x.ID == id })
	if i < 0 {
		h.fail(w, r, fmt.Errorf("immutability rule %d of project %s: %w", id, project, oci.ErrNotFound))
		return
	}
	rules := slices.Clone(proj.Immutable)
	if with != nil {
		rules[i] = with.rule(id)
	} else {
		rules = slices.Delete(rules, i, i+1)
	}
	if _, err := h.store.UpdateProjectIf(r.Context(), policy.Project{Name: project, Immutable: rules}, proj.Updated, "immutable"); err != nil {
		h.fail(w, r, err)
		return
	}
	if with == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, rules[i])
}

func (h *Handler) updateImmutable(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	var req ImmutableRuleRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := req.rule(1).Validate(); err != nil {
		h.fail(w, r, err)
		return
	}
	h.changeImmutable(w, r, pa.Name, &req)
}

func (h *Handler) deleteImmutable(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	h.changeImmutable(w, r, pa.Name, nil)
}

// --- retention

func (h *Handler) getRetention(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	proj, err := h.store.Project(r.Context(), pa.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	pol := policy.RetentionPolicy{Rules: []policy.RetentionRule{}}
	if proj.Retention != nil {
		pol = *proj.Retention
	}
	writeJSON(w, http.StatusOK, pol)
}

// putRetention replaces the project's retention policy; one without rules
// and schedule removes it.
func (h *Handler) putRetention(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	var pol policy.RetentionPolicy
	if err := decode(r, &pol); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := pol.Validate(); err != nil {
		h.fail(w, r, err)
		return
	}
	in := policy.Project{Name: pa.Name}
	if len(pol.Rules) > 0 || pol.Schedule != "" {
		in.Retention = &pol
	}
	if _, err := h.store.UpdateProject(r.Context(), in, "retention"); err != nil {
		h.fail(w, r, err)
		return
	}
	if pol.Rules == nil {
		pol.Rules = []policy.RetentionRule{}
	}
	writeJSON(w, http.StatusOK, pol)
}

// RetentionRunRequest is the optional body of POST
// /projects/{project}/retention/run.
type RetentionRunRequest struct {
	DryRun bool `json:"dry_run"`
}

// runRetention starts a run of the project's retention policy: 202 with
// the run as it started. A dry run (in the body or ?dry_run=true) lists
// what would go and deletes nothing.
func (h *Handler) runRetention(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	if h.retention == nil {
		writeError(w, http.StatusNotImplemented, "retention runs are not available on this server")
		return
	}
	dry, _, err := queryBool(r, "dry_run")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var req RetentionRunRequest
	if err := decodeOptional(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	run, err := h.retention.RunRetention(r.Context(), pa.Name, dry || req.DryRun)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if run.ID != 0 {
		w.Header().Set("Location", fmt.Sprintf("%sprojects/%s/retention/runs/%d", Prefix, pa.Name, run.ID))
	}
	writeJSON(w, http.StatusAccepted, run)
}

func (h *Handler) listRetentionRuns(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	n, err := limit(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	runs, err := h.store.RetentionRuns(r.Context(), pa.Name, n)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, runs)
}

func (h *Handler) getRetentionRun(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	id, err := pathUint(r, "id")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	run, err := h.store.RetentionRun(r.Context(), pa.Name, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}
