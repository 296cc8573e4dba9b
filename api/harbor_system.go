package api

import (
	"net/http"

	"github.com/berth-registry/berth/policy"
)

// Harbor's system endpoints: what the server is, whether it is up, who
// the caller is.

// HarborSystemInfo is the answer of GET /api/v2.0/systeminfo (Harbor's
// GeneralInfo). HarborVersion names the API level berth speaks and berth's
// own version; the fields of features berth does not have say so.
type HarborSystemInfo struct {
	HarborVersion              string `json:"harbor_version"`
	AuthMode                   string `json:"auth_mode"`
	ProjectCreationRestriction string `json:"project_creation_restriction"`
	SelfRegistration           bool   `json:"self_registration"`
	HasCARoot                  bool   `json:"has_ca_root"`
	ReadOnly                   bool   `json:"read_only"`
	WithNotary                 bool   `json:"with_notary"`
	WithChartmuseum            bool   `json:"with_chartmuseum"`
	NotificationEnable         bool   `json:"notification_enable"`
	StorageProviderName        string `json:"registry_storage_provider_name"`
	// Berth's own: the product, its version and this node.
	Product      string `json:"product"`
	BerthVersion string `json:"berth_version"`
	NodeID       string `json:"node_id,omitempty"`
}

// harborAPILevel is the Harbor API version berth's subset follows.
const harborAPILevel = "v2.0.0"

func (h *Handler) harborSystemInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, HarborSystemInfo{
		HarborVersion:              harborAPILevel + "-berth." + h.info.Version,
		AuthMode:                   "db_auth",
		ProjectCreationRestriction: h.cfg.ProjectCreation,
		SelfRegistration:           h.cfg.SelfRegistration,
		StorageProviderName:        "filesystem",
		Product:                    "berth",
		BerthVersion:               h.info.Version,
		NodeID:                     h.info.NodeID,
	})
}

// HarborHealth is the answer of GET /api/v2.0/health.
type HarborHealth struct {
	Status     string                  `json:"status"`
	Components []HarborComponentHealth `json:"components"`
}

// HarborComponentHealth is one component of HarborHealth.
type HarborComponentHealth struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// harborHealth answers that this API is up: berth is one process, and the
// cluster's own health is at /readyz and GET /api/v1/cluster.
func (h *Handler) harborHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, HarborHealth{Status: "healthy",
		Components: []HarborComponentHealth{{Name: "core", Status: "healthy"}}})
}

// HarborUser is Harbor's UserResp. A robot is shown as one too (its id
// is the robot's), since Harbor's clients ask who they are this way.
type HarborUser struct {
	UserID          uint64 `json:"user_id"`
	Username        string `json:"username"`
	Email           string `json:"email,omitempty"`
	RealName        string `json:"realname,omitempty"`
	Comment         string `json:"comment,omitempty"`
	SysadminFlag    bool   `json:"sysadmin_flag"`
	AdminRoleInAuth bool   `json:"admin_role_in_auth"`
	CreationTime    string `json:"creation_time"`
	UpdateTime      string `json:"update_time"`
}

func (h *Handler) harborCurrentUser(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	switch p.Kind {
	case policy.PrincipalUser:
		u, err := h.store.User(ctx, p.Name)
		if err != nil {
			h.harborFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, HarborUser{
			UserID: u.ID, Username: u.Name, Email: u.Email, RealName: u.RealName, Comment: u.Comment,
			SysadminFlag: p.Admin, CreationTime: harborTime(u.Created), UpdateTime: harborTime(u.Updated),
		})
	case policy.PrincipalRobot:
		// The authenticator read the robot for this request.
		rb := p.Robot
		writeJSON(w, http.StatusOK, HarborUser{
			UserID: rb.ID, Username: rb.Name, Comment: rb.Description,
			CreationTime: harborTime(rb.Created), UpdateTime: harborTime(rb.Updated),
		})
	default:
		h.harborFail(w, r, errUnauthenticated)
	}
}
