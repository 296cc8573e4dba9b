package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Harbor's projects, their summary, members and quotas.

// HarborProject is Harbor's Project as a caller sees it.
type HarborProject struct {
	ProjectID          uint64                `json:"project_id"`
	OwnerID            uint64                `json:"owner_id"`
	Name               string                `json:"name"`
	CreationTime       string                `json:"creation_time"`
	UpdateTime         string                `json:"update_time"`
	Deleted            bool                  `json:"deleted"`
	OwnerName          string                `json:"owner_name"`
	Togglable          bool                  `json:"togglable"`
	CurrentUserRoleID  int                   `json:"current_user_role_id"`
	CurrentUserRoleIDs []int                 `json:"current_user_role_ids"`
	RepoCount          int                   `json:"repo_count"`
	ChartCount         int                   `json:"chart_count"`
	Metadata           HarborProjectMetadata `json:"metadata"`
}

// HarborProjectMetadata is a project's metadata as Harbor shows it: its
// values are strings. Berth neither scans nor checks signatures at pull,
// so those switches are "false".
type HarborProjectMetadata struct {
	Public             string `json:"public"`
	EnableContentTrust string `json:"enable_content_trust"`
	PreventVul         string `json:"prevent_vul"`
	AutoScan           string `json:"auto_scan"`
}

// HarborProjectRequest is Harbor's ProjectReq, the body of POST and PUT
// /projects. Every field Harbor defines is accepted, so that its clients
// work; what berth does not have is refused where ignoring it would do
// less than asked (a pull-time check: content trust, preventing
// vulnerable images; a proxy cache) and ignored where it asks for nothing
// berth would enforce (scanning, a CVE allowlist).
type HarborProjectRequest struct {
	ProjectName string `json:"project_name"`
	// Public is Harbor's deprecated flag; metadata.public wins.
	Public   *bool                         `json:"public,omitempty"`
	Metadata *HarborProjectMetadataRequest `json:"metadata,omitempty"`
	// StorageLimit and CountLimit (bytes, artifacts; -1 unlimited) are an
	// administrator's, at creation; an update ignores them, as Harbor's
	// (quotas change through PUT /quotas/{id}).
	StorageLimit *int64          `json:"storage_limit,omitempty"`
	CountLimit   *int64          `json:"count_limit,omitempty"`
	RegistryID   *int64          `json:"registry_id,omitempty"`
	CVEAllowlist json.RawMessage `json:"cve_allowlist,omitempty"`
}

// HarborProjectMetadataRequest is the metadata of a HarborProjectRequest.
type HarborProjectMetadataRequest struct {
	Public                   string          `json:"public,omitempty"`
	EnableContentTrust       string          `json:"enable_content_trust,omitempty"`
	EnableContentTrustCosign string          `json:"enable_content_trust_cosign,omitempty"`
	PreventVul               string          `json:"prevent_vul,omitempty"`
	Severity                 string          `json:"severity,omitempty"`
	AutoScan                 string          `json:"auto_scan,omitempty"`
	AutoSBOMGeneration       string          `json:"auto_sbom_generation,omitempty"`
	ReuseSysCVEAllowlist     string          `json:"reuse_sys_cve_allowlist,omitempty"`
	RetentionID              string          `json:"retention_id,omitempty"`
	ProxySpeedKB             json.RawMessage `json:"proxy_speed_kb,omitempty"`
}

// public returns the public flag req asks for (set is false when it asks
// for none), after refusing what berth cannot do.
func (req HarborProjectRequest) public() (public, set bool, err error) {
	if req.RegistryID != nil && *req.RegistryID != 0 {
		return false, false, invalid("registry_id: berth has no proxy-cache projects")
	}
	if req.Public != nil {
		public, set = *req.Public, true
	}
	m := req.Metadata
	if m == nil {
		return public, set, nil
	}
	for _, f := range []struct{ name, value string }{
		{"enable_content_trust", m.EnableContentTrust},
		{"enable_content_trust_cosign", m.EnableContentTrustCosign},
		{"prevent_vul", m.PreventVul},
	} {
		if on, err := strconv.ParseBool(f.value); f.value != "" && (err != nil || on) {
			return false, false, invalid(fmt.Sprintf("metadata.%s: berth does not check this at pull; only \"false\"", f.name))
		}
	}
	if m.Public != "" {
		v, err := strconv.ParseBool(m.Public)
		if err != nil {
			return false, false, invalid(fmt.Sprintf(`metadata.public %q: want "true" or "false"`, clip(m.Public, 32)))
		}
		public, set = v, true
	}
	return public, set, nil
}

// harborProjects remembers, for one request, what views of several
// projects share: the owners' ids.
type harborProjects struct {
	h      *Handler
	p      policy.Principal
	owners map[string]uint64
}

func (h *Handler) harborProjects(p policy.Principal) *harborProjects {
	return &harborProjects{h: h, p: p, owners: map[string]uint64{}}
}

// view shows proj to the caller, whose access to it is pa. The repository
// count is shown to those who may list the repositories.
func (v *harborProjects) view(ctx context.Context, pa policy.ProjectAccess, proj policy.Project) (HarborProject, error) {
	owner, ok := v.owners[proj.Owner]
	if !ok && proj.Owner != "" {
		if u, err := v.h.store.User(ctx, proj.Owner); err == nil {
			owner = u.ID
		} else if !errors.Is(err, oci.ErrNotFound) {
			return HarborProject{}, err
		}
		v.owners[proj.Owner] = owner
	}
	out := HarborProject{
		ProjectID: proj.ID, OwnerID: owner, OwnerName: proj.Owner, Name: proj.Name,
		CreationTime: harborTime(proj.Created), UpdateTime: harborTime(proj.Updated),
		Togglable: true, CurrentUserRoleIDs: []int{},
		Metadata: HarborProjectMetadata{Public: strconv.FormatBool(proj.Public),
			EnableContentTrust: "false", PreventVul: "false", AutoScan: "false"},
	}
	if id := pa.Role.RoleID(); id != 0 {
		out.CurrentUserRoleID, out.CurrentUserRoleIDs = id, []int{id}
	}
	if policy.Allowed(v.p, pa, policy.ResRepository, policy.ActList) {
		n, err := v.h.countRepositories(ctx, proj.Name)
		if err != nil {
			return HarborProject{}, err
		}
		out.RepoCount = n
	}
	return out, nil
}

// reposBatch is how many repository names one read of the state returns.
const reposBatch = 1000

// eachRepository calls fn with every repository of project (full names,
// in order).
func (h *Handler) eachRepository(ctx context.Context, project string, fn func(string)) error {
	return eachBatch(reposBatch, func(last string, n int) ([]string, error) {
		return h.store.ProjectRepositories(ctx, project, last, n)
	}, func(name string) string { return strings.TrimPrefix(name, project+"/") }, func(name string) bool { fn(name); return true })
}

func (h *Handler) countRepositories(ctx context.Context, project string) (int, error) {
	n := 0
	err := h.eachRepository(ctx, project, func(string) { n++ })
	return n, err
}

// harborListProjects answers GET /projects: the projects the caller may
// see, filtered by ?name= (a substring), ?public=, ?owner= or their
// equivalents in ?q=, a page of them, with X-Total-Count and Link.
func (h *Handler) harborListProjects(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	page, size, terms, err := harborListQuery(r, "name", "public", "owner")
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	qs := r.URL.Query()
	if s := qs.Get("name"); s != "" {
		terms["name"] = queryTerm{value: s, fuzzy: true}
	}
	if s := qs.Get("public"); s != "" {
		terms["public"] = queryTerm{value: s}
	}
	if s := qs.Get("owner"); s != "" {
		terms["owner"] = queryTerm{value: s}
	}
	if t, ok := terms["public"]; ok {
		b, err := strconv.ParseBool(t.value)
		if err != nil || t.fuzzy {
			h.harborFail(w, r, invalid(fmt.Sprintf("public %q is not a boolean", clip(t.value, 32))))
			return
		}
		terms["public"] = queryTerm{value: strconv.FormatBool(b)}
	}
	match := func(key, value string) bool { t, ok := terms[key]; return !ok || t.matches(value) }
	shown := newWindow[seenProject](page, size)
	err = h.eachVisibleProject(ctx, p, func(m seenProject) {
		if match("name", m.proj.Name) && match("public", strconv.FormatBool(m.proj.Public)) && match("owner", m.proj.Owner) {
			shown.add(m)
		}
	})
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	views := h.harborProjects(p)
	out := []HarborProject{}
	for _, m := range shown.items {
		v, err := views.view(ctx, m.pa, m.proj)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		out = append(out, v)
	}
	setPaging(w, r, shown.total, page, size)
	writeJSON(w, http.StatusOK, out)
}

// harborHeadProject answers HEAD /projects?project_name=: 200 when the
// project exists and the caller may see it, else 404 (a name taken by a
// project the caller may not see shows at creation, as a conflict).
func (h *Handler) harborHeadProject(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	if p.IsAnonymous() {
		h.harborFail(w, r, errUnauthenticated)
		return
	}
	name := r.URL.Query().Get("project_name")
	if name == "" {
		h.harborFail(w, r, invalid("project_name is required"))
		return
	}
	pa, err := h.projectAccess(r.Context(), p, name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if !policy.Sees(p, pa) {
		h.harborFail(w, r, projectNotFound(name))
		return
	}
	harborNoContent(w, http.StatusOK)
}

// harborCreateProject answers POST /projects: as POST /api/v1/projects
// (who may create, the creator becomes its project admin, limits are an
// administrator's), with Harbor's body; 201 with the new project's
// Location (its id, or its name with X-Resource-Name-In-Location: true).
func (h *Handler) harborCreateProject(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	if err := h.mayCreateProject(p); err != nil {
		h.harborFail(w, r, err)
		return
	}
	var req HarborProjectRequest
	if err := decode(r, &req); err != nil {
		h.harborFail(w, r, err)
		return
	}
	public, _, err := req.public()
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	quota := policy.NoQuota
	if req.StorageLimit != nil {
		quota.Storage = *req.StorageLimit
	}
	if req.CountLimit != nil {
		quota.Count = *req.CountLimit
	}
	if quota != policy.NoQuota && !p.Admin {
		h.harborFail(w, r, forbidden("only system administrators set quotas"))
		return
	}
	proj, err := h.createOwnedProject(r.Context(), p, policy.Project{Name: req.ProjectName, Public: public, Quota: quota})
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	loc := strconv.FormatUint(proj.ID, 10)
	if v, err := strconv.ParseBool(r.Header.Get("X-Resource-Name-In-Location")); err == nil && v {
		loc = proj.Name
	}
	w.Header().Set("Location", harborV2+"/projects/"+loc)
	harborNoContent(w, http.StatusCreated)
}

func (h *Handler) harborGetProject(w http.ResponseWriter, r *http.Request, p policy.Principal, pa policy.ProjectAccess) {
	proj, err := h.store.Project(r.Context(), pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	v, err := h.harborProjects(p).view(r.Context(), pa, proj)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// harborUpdateProject answers PUT /projects/{p}: its public flag is what
// berth lets change; a different project_name (a rename) is refused.
func (h *Handler) harborUpdateProject(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	var req HarborProjectRequest
	if err := decode(r, &req); err != nil {
		h.harborFail(w, r, err)
		return
	}
	if req.ProjectName != "" && req.ProjectName != pa.Name {
		h.harborFail(w, r, invalid("project_name: a project cannot be renamed"))
		return
	}
	public, set, err := req.public()
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if set && public != pa.Public {
		if _, err := h.store.UpdateProject(r.Context(), policy.Project{Name: pa.Name, Public: public}, "public"); err != nil {
			h.harborFail(w, r, err)
			return
		}
	}
	harborNoContent(w, http.StatusOK)
}

// harborDeleteProject deletes an empty project; one that still holds
// repositories is 412, as Harbor answers.
func (h *Handler) harborDeleteProject(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	err := h.store.DeleteProject(r.Context(), pa.Name)
	switch {
	case errors.Is(err, oci.ErrDenied):
		writeHarborError(w, http.StatusPreconditionFailed, err.Error())
	case err != nil:
		h.harborFail(w, r, err)
	default:
		harborNoContent(w, http.StatusOK)
	}
}

// HarborProjectSummary is Harbor's ProjectSummary: each part shown only to
// whom may read it (the repository count: repository:list; the member
// counts: member:list; the quota: quota:read).
type HarborProjectSummary struct {
	RepoCount         int                 `json:"repo_count"`
	ChartCount        int                 `json:"chart_count"`
	ProjectAdminCount int                 `json:"project_admin_count,omitempty"`
	MaintainerCount   int                 `json:"maintainer_count,omitempty"`
	DeveloperCount    int                 `json:"developer_count,omitempty"`
	GuestCount        int                 `json:"guest_count,omitempty"`
	LimitedGuestCount int                 `json:"limited_guest_count,omitempty"`
	Quota             *HarborSummaryQuota `json:"quota,omitempty"`
}

// HarborSummaryQuota is a quota's hard limits and usage, by resource.
type HarborSummaryQuota struct {
	Hard map[string]int64 `json:"hard"`
	Used map[string]int64 `json:"used"`
}

// resourceLists are a quota and its usage as Harbor's ResourceLists:
// storage always, the artifact count (a berth limit Harbor no longer has)
// when it is limited.
func resourceLists(q policy.Quota, u policy.Usage) (hard, used map[string]int64) {
	hard, used = map[string]int64{"storage": q.Storage}, map[string]int64{"storage": u.Storage}
	if q.Count != policy.Unlimited {
		hard["count"], used["count"] = q.Count, u.Count
	}
	return hard, used
}

func (h *Handler) harborProjectSummary(w http.ResponseWriter, r *http.Request, p policy.Principal, pa policy.ProjectAccess) {
	ctx := r.Context()
	var out HarborProjectSummary
	if policy.Allowed(p, pa, policy.ResRepository, policy.ActList) {
		n, err := h.countRepositories(ctx, pa.Name)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		out.RepoCount = n
	}
	if policy.Allowed(p, pa, policy.ResMember, policy.ActList) {
		ms, err := h.store.ProjectMembers(ctx, pa.Name)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		for _, m := range ms {
			switch m.Role {
			case policy.RoleProjectAdmin:
				out.ProjectAdminCount++
			case policy.RoleMaintainer:
				out.MaintainerCount++
			case policy.RoleDeveloper:
				out.DeveloperCount++
			case policy.RoleGuest:
				out.GuestCount++
			case policy.RoleLimitedGuest:
				out.LimitedGuestCount++
			}
		}
	}
	if policy.Allowed(p, pa, policy.ResQuota, policy.ActRead) {
		proj, err := h.store.Project(ctx, pa.Name)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		u, err := h.store.ProjectUsage(ctx, pa.Name)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		hard, used := resourceLists(proj.Quota, u)
		out.Quota = &HarborSummaryQuota{Hard: hard, Used: used}
	}
	writeJSON(w, http.StatusOK, out)
}

// --- members

// HarborMember is Harbor's ProjectMemberEntity. A member's id is its
// user's id: berth numbers users, not memberships.
type HarborMember struct {
	ID         uint64 `json:"id"`
	ProjectID  uint64 `json:"project_id"`
	EntityName string `json:"entity_name"`
	RoleName   string `json:"role_name"`
	RoleID     int    `json:"role_id"`
	EntityID   uint64 `json:"entity_id"`
	EntityType string `json:"entity_type"`
}

// HarborMemberRequest is Harbor's ProjectMember, the body of POST
// /projects/{p}/members: a user by id or name, and Harbor's role id
// (1 project admin, 2 developer, 3 guest, 4 maintainer, 5 limited guest).
// Berth has no groups: a non-empty member_group is refused.
type HarborMemberRequest struct {
	RoleID      int               `json:"role_id"`
	MemberUser  *HarborUserEntity `json:"member_user,omitempty"`
	MemberGroup *HarborUserGroup  `json:"member_group,omitempty"`
}

// HarborUserEntity names a user by id or name.
type HarborUserEntity struct {
	UserID   uint64 `json:"user_id,omitempty"`
	Username string `json:"username,omitempty"`
}

// HarborUserGroup is Harbor's UserGroup; berth has none.
type HarborUserGroup struct {
	ID          int64  `json:"id,omitempty"`
	GroupName   string `json:"group_name,omitempty"`
	GroupType   int    `json:"group_type,omitempty"`
	LDAPGroupDN string `json:"ldap_group_dn,omitempty"`
}

// harborRole is the role of Harbor's role id.
func harborRole(id int) (policy.Role, error) {
	if id < 1 || id > 5 {
		return "", invalid(fmt.Sprintf("role_id %d: want 1 (project admin), 2 (developer), 3 (guest), 4 (maintainer) or 5 (limited guest)", id))
	}
	return policy.ParseRole(strconv.Itoa(id))
}

// decodeMember reads the body of POST and PUT /projects/{p}/members and
// the role it names. A member_group is refused: berth has no groups.
func decodeMember(r *http.Request) (HarborMemberRequest, policy.Role, error) {
	var req HarborMemberRequest
	if err := decode(r, &req); err != nil {
		return req, "", err
	}
	if g := req.MemberGroup; g != nil && *g != (HarborUserGroup{}) {
		return req, "", invalid("member_group: berth has no user groups")
	}
	role, err := harborRole(req.RoleID)
	return req, role, err
}

func harborMember(projectID uint64, m policy.Member) HarborMember {
	return HarborMember{
		ID: m.UserID, ProjectID: projectID, EntityName: m.User, EntityID: m.UserID, EntityType: "u",
		RoleName: string(m.Role), RoleID: m.Role.RoleID(),
	}
}

// projectID returns the id of project.
func (h *Handler) projectID(ctx context.Context, project string) (uint64, error) {
	proj, err := h.store.Project(ctx, project)
	return proj.ID, err
}

func (h *Handler) harborListMembers(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	ctx := r.Context()
	page, size, err := harborPage(r)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	pid, err := h.projectID(ctx, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	ms, err := h.store.ProjectMembers(ctx, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	filter := r.URL.Query().Get("entityname")
	ms = slices.DeleteFunc(ms, func(m policy.Member) bool { return !strings.Contains(m.User, filter) })
	out := []HarborMember{}
	for _, m := range pageOf(ms, page, size) {
		out = append(out, harborMember(pid, m))
	}
	setPaging(w, r, len(ms), page, size)
	writeJSON(w, http.StatusOK, out)
}

// member returns the member of project whose user id the path's {mid}
// is (not found when that user is no member).
func (h *Handler) member(r *http.Request, project string) (policy.Member, error) {
	mid, err := pathUint(r, "mid")
	if err != nil {
		return policy.Member{}, err
	}
	ms, err := h.store.ProjectMembers(r.Context(), project)
	if err != nil {
		return policy.Member{}, err
	}
	for _, m := range ms {
		if m.UserID == mid {
			return m, nil
		}
	}
	return policy.Member{}, fmt.Errorf("member %d of project %s: %w", mid, project, oci.ErrNotFound)
}

func (h *Handler) harborGetMember(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	m, err := h.member(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	pid, err := h.projectID(r.Context(), pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, harborMember(pid, m))
}

// harborAddMember answers POST /projects/{p}/members: 201 with the
// member's Location; an unknown user is 404, a member already 409.
func (h *Handler) harborAddMember(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	ctx := r.Context()
	req, role, err := decodeMember(r)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if req.MemberUser == nil || (req.MemberUser.Username == "" && req.MemberUser.UserID == 0) {
		h.harborFail(w, r, invalid("member_user: give its username or user_id"))
		return
	}
	var user policy.User
	if u := req.MemberUser; u.UserID != 0 {
		if user, err = h.store.UserByID(ctx, u.UserID); err == nil && u.Username != "" && u.Username != user.Name {
			err = invalid("member_user: user_id and username name different users")
		}
	} else if err = policy.ValidateUserName(u.Username); err == nil {
		user, err = h.store.User(ctx, u.Username)
	}
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if err := h.store.PutMember(ctx, policy.Member{Project: pa.Name, User: user.Name, Role: role}, true); err != nil {
		h.harborFail(w, r, err)
		return
	}
	w.Header().Set("Location", r.URL.EscapedPath()+"/"+strconv.FormatUint(user.ID, 10))
	harborNoContent(w, http.StatusCreated)
}

// harborUpdateMember answers PUT /projects/{p}/members/{mid}: Harbor's
// RoleRequest, {role_id}. Clients that send the whole ProjectMember (the
// terraform provider) may: a member_user must then be the member.
func (h *Handler) harborUpdateMember(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	req, role, err := decodeMember(r)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	m, err := h.member(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if u := req.MemberUser; u != nil && ((u.Username != "" && u.Username != m.User) || (u.UserID != 0 && u.UserID != m.UserID)) {
		h.harborFail(w, r, invalid("member_user: the path names another member"))
		return
	}
	m.Role = role
	if err := h.store.PutMember(r.Context(), m, false); err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusOK)
}

func (h *Handler) harborDeleteMember(w http.ResponseWriter, r *http.Request, _ policy.Principal, pa policy.ProjectAccess) {
	m, err := h.member(r, pa.Name)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	if err := h.store.DeleteMember(r.Context(), pa.Name, m.User); err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusOK)
}

// --- quotas

// HarborQuota is Harbor's Quota of a project; its id is the project's.
type HarborQuota struct {
	ID           uint64           `json:"id"`
	Ref          HarborQuotaRef   `json:"ref"`
	Hard         map[string]int64 `json:"hard"`
	Used         map[string]int64 `json:"used"`
	CreationTime string           `json:"creation_time"`
	UpdateTime   string           `json:"update_time"`
}

// HarborQuotaRef is the project a quota is of.
type HarborQuotaRef struct {
	ID        uint64 `json:"id"`
	Name      string `json:"name"`
	OwnerName string `json:"owner_name"`
}

// HarborQuotaUpdate is Harbor's QuotaUpdateReq: new hard limits by
// resource ("storage" in bytes, and berth's "count" of artifacts; -1
// unlimited); a resource left out keeps its limit.
type HarborQuotaUpdate struct {
	Hard map[string]int64 `json:"hard"`
}

func (h *Handler) harborQuota(ctx context.Context, proj policy.Project) (HarborQuota, error) {
	u, err := h.store.ProjectUsage(ctx, proj.Name)
	if err != nil {
		return HarborQuota{}, err
	}
	hard, used := resourceLists(proj.Quota, u)
	return HarborQuota{
		ID: proj.ID, Ref: HarborQuotaRef{ID: proj.ID, Name: proj.Name, OwnerName: proj.Owner},
		Hard: hard, Used: used, CreationTime: harborTime(proj.Created), UpdateTime: harborTime(proj.Updated),
	}, nil
}

// quotaProject returns the project whose id the path's {id} (or the
// query's reference_id) is, once the quota decision about it allows p; not
// found under that id when it does not exist or p may not see it.
func (h *Handler) quotaProject(r *http.Request, p policy.Principal, rawID string, admin bool) (policy.Project, error) {
	ctx := r.Context()
	if p.IsAnonymous() {
		return policy.Project{}, errUnauthenticated
	}
	id, err := strconv.ParseUint(rawID, 10, 64)
	if err != nil || id == 0 {
		return policy.Project{}, invalid(fmt.Sprintf("quota id %q is not a positive number", clip(rawID, 32)))
	}
	proj, err := h.store.ProjectByID(ctx, id)
	if err == nil {
		if admin {
			_, err = h.authorizeAdmin(ctx, p, proj.Name)
		} else {
			_, err = h.authorize(ctx, p, proj.Name, policy.ResQuota, policy.ActRead)
		}
	}
	if errors.Is(err, oci.ErrNotFound) {
		err = fmt.Errorf("quota %d: %w", id, oci.ErrNotFound)
	}
	return proj, err
}

// harborListQuotas answers GET /quotas: every project's quota for an
// administrator; with ?reference_id= (a project id) that project's, for
// whoever may read its quota.
func (h *Handler) harborListQuotas(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	q := r.URL.Query()
	if ref := q.Get("reference"); ref != "" && ref != "project" {
		// Berth has project quotas only.
		setPaging(w, r, 0, 1, harborPageSize)
		writeJSON(w, http.StatusOK, []HarborQuota{})
		return
	}
	if rid := q.Get("reference_id"); rid != "" {
		v, err := h.readableQuota(r, p, rid)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		setPaging(w, r, 1, 1, harborPageSize)
		writeJSON(w, http.StatusOK, []HarborQuota{v})
		return
	}
	if err := requireAdmin(p); err != nil {
		h.harborFail(w, r, err)
		return
	}
	page, size, err := harborPage(r)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	shown := newWindow[policy.Project](page, size)
	if err := h.eachProject(ctx, func(proj policy.Project) bool { shown.add(proj); return true }); err != nil {
		h.harborFail(w, r, err)
		return
	}
	out := []HarborQuota{}
	for _, proj := range shown.items {
		v, err := h.harborQuota(ctx, proj)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		out = append(out, v)
	}
	setPaging(w, r, shown.total, page, size)
	writeJSON(w, http.StatusOK, out)
}

// readableQuota returns the quota of the project whose id is rawID, if
// p may read it (see quotaProject).
func (h *Handler) readableQuota(r *http.Request, p policy.Principal, rawID string) (HarborQuota, error) {
	proj, err := h.quotaProject(r, p, rawID, false)
	if err != nil {
		return HarborQuota{}, err
	}
	return h.harborQuota(r.Context(), proj)
}

func (h *Handler) harborGetQuota(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	v, err := h.readableQuota(r, p, r.PathValue("id"))
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// harborPutQuota answers PUT /quotas/{id}: administrators only, as PUT
// /api/v1/projects/{p}/quota.
func (h *Handler) harborPutQuota(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	proj, err := h.quotaProject(r, p, r.PathValue("id"), true)
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	var req HarborQuotaUpdate
	if err := decode(r, &req); err != nil {
		h.harborFail(w, r, err)
		return
	}
	if len(req.Hard) == 0 {
		h.harborFail(w, r, invalid(`give {"hard": {"storage": BYTES}}, -1 for unlimited`))
		return
	}
	_, err = h.setQuota(r.Context(), proj.Name, func(q *policy.Quota) error {
		for res, limit := range req.Hard {
			switch res {
			case "storage":
				q.Storage = limit
			case "count":
				q.Count = limit
			default:
				return invalid(fmt.Sprintf("hard.%s: berth limits storage and count only", clip(res, 64)))
			}
		}
		return nil
	})
	if err != nil {
		h.harborFail(w, r, err)
		return
	}
	harborNoContent(w, http.StatusOK)
}
