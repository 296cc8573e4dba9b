package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/policy"
)

// Users. Their admin flag is never mass-assignable: registration sets it
// only for an administrator, profile updates cannot name it (nor the
// password, nor another user), and only PUT /users/{user}/sysadmin
// changes it.

// reservedUserNames cannot be registered: they would hide an endpoint.
var reservedUserNames = []string{"current"}

// CurrentUser is the answer of GET /users/current.
type CurrentUser struct {
	Kind  string `json:"kind"` // user or robot
	Name  string `json:"name"`
	Admin bool   `json:"admin"`
	// User is the caller's profile (users), Robot its account (robots).
	User  *policy.User  `json:"user,omitempty"`
	Robot *policy.Robot `json:"robot,omitempty"`
	// Memberships are the projects a user is a member of, with its role.
	Memberships []policy.Member `json:"memberships"`
}

func (h *Handler) currentUser(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	if p.IsAnonymous() {
		h.fail(w, r, errUnauthenticated)
		return
	}
	out := CurrentUser{Kind: p.Kind, Name: p.Name, Admin: p.Admin, Memberships: []policy.Member{}}
	switch p.Kind {
	case policy.PrincipalUser:
		u, err := h.store.User(ctx, p.Name)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		ms, err := h.store.Memberships(ctx, p.Name)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out.User, out.Memberships = &u, ms
	case policy.PrincipalRobot:
		// The authenticator read the robot for this request.
		out.Robot = p.Robot
	}
	writeJSON(w, http.StatusOK, out)
}

// selfOrAdmin lets a user at its own account, and an administrator at
// any.
func selfOrAdmin(p policy.Principal, user string) error {
	switch {
	case p.IsAnonymous():
		return errUnauthenticated
	case p.Kind == policy.PrincipalUser && (p.Admin || p.Name == user):
		return nil
	}
	return forbidden("only %s and system administrators may do this", clip(user, maxNameInMessage))
}

// usersBatch is how many users one read of the state returns.
const usersBatch = 500

// listUsers answers GET /users (administrators): a page of the users
// whose name holds ?username=, with the total in X-Total-Count.
func (h *Handler) listUsers(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	if err := requireAdmin(p); err != nil {
		h.fail(w, r, err)
		return
	}
	page, size, err := pageParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	filter := r.URL.Query().Get("username")
	shown := newWindow[policy.User](page, size)
	err = eachBatch(usersBatch, func(last string, n int) ([]policy.User, error) {
		return h.store.Users(r.Context(), last, n)
	}, func(u policy.User) string { return u.Name }, func(u policy.User) bool {
		if strings.Contains(u.Name, filter) {
			shown.add(u)
		}
		return true
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(shown.total))
	writeJSON(w, http.StatusOK, shown.items)
}

// UserRequest is the body of POST /users. SysAdmin may be named by a
// system administrator only; in a self-registration it is refused (400).
type UserRequest struct {
	Name     string `json:"username"`
	Password string `json:"password"`
	Email    string `json:"email,omitempty"`
	RealName string `json:"realname,omitempty"`
	Comment  string `json:"comment,omitempty"`
	SysAdmin *bool  `json:"sysadmin_flag,omitempty"`
}

// createUser answers POST /users: an administrator creates a user (an
// administrator too, with sysadmin_flag); with Config.SelfRegistration
// anyone but a robot registers one, never an administrator.
func (h *Handler) createUser(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	isAdmin := p.Kind == policy.PrincipalUser && p.Admin
	if !isAdmin {
		switch {
		case !h.cfg.SelfRegistration && p.IsAnonymous():
			h.fail(w, r, errUnauthenticated)
			return
		case !h.cfg.SelfRegistration:
			h.fail(w, r, forbidden("self-registration is off: system administrators create users"))
			return
		case p.Kind == policy.PrincipalRobot:
			h.fail(w, r, forbidden("a robot account cannot register users"))
			return
		}
	}
	var req UserRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.SysAdmin != nil && !isAdmin {
		h.fail(w, r, invalid("sysadmin_flag: a registration cannot set it"))
		return
	}
	for _, n := range reservedUserNames {
		if req.Name == n {
			h.fail(w, r, invalid("user name "+n+" is reserved"))
			return
		}
	}
	admin := isAdmin && req.SysAdmin != nil && *req.SysAdmin
	u := policy.User{Name: req.Name, Email: req.Email, RealName: req.RealName, Comment: req.Comment}
	if err := checkNUL(req.Name, req.Email); err != nil {
		h.fail(w, r, err)
		return
	}
	created, err := h.store.CreateUser(r.Context(), u, req.Password, admin)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", Prefix+"users/"+created.Name)
	writeJSON(w, http.StatusCreated, created)
}

func (h *Handler) getUser(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	name := r.PathValue("user")
	if err := selfOrAdmin(p, name); err != nil {
		h.fail(w, r, err)
		return
	}
	u, err := h.store.User(r.Context(), name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// ProfileRequest is the body of PUT /users/{user}: the profile only.
// Fields left out keep their value; any other field (sysadmin_flag,
// password, username) is refused.
type ProfileRequest struct {
	Email    *string `json:"email,omitempty"`
	RealName *string `json:"realname,omitempty"`
	Comment  *string `json:"comment,omitempty"`
}

func (h *Handler) updateUser(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	name := r.PathValue("user")
	if err := selfOrAdmin(p, name); err != nil {
		h.fail(w, r, err)
		return
	}
	var req ProfileRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	u, err := h.store.User(r.Context(), name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Email != nil {
		u.Email = *req.Email
	}
	if req.RealName != nil {
		u.RealName = *req.RealName
	}
	if req.Comment != nil {
		u.Comment = *req.Comment
	}
	if err := checkNUL(u.Email); err != nil {
		h.fail(w, r, err)
		return
	}
	u, err = h.store.UpdateUser(r.Context(), u)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// PasswordRequest is the body of PUT /users/{user}/password. A user
// changing its own password gives the old one; an administrator changing
// another's does not.
type PasswordRequest struct {
	OldPassword string `json:"old_password,omitempty"`
	NewPassword string `json:"new_password"`
}

func (h *Handler) setPassword(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	ctx := r.Context()
	name := r.PathValue("user")
	if err := selfOrAdmin(p, name); err != nil {
		h.fail(w, r, err)
		return
	}
	var req PasswordRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if p.Name == name {
		if req.OldPassword == "" {
			h.fail(w, r, invalid("old_password: give the current password"))
			return
		}
		_, ok, err := h.store.Authenticate(ctx, name, req.OldPassword)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if !ok {
			h.store.RecordEvent(policy.AuditEvent{
				Actor: name, Addr: clientAddr(r), Op: policy.AuditLoginFailed,
				Resource: policy.AuditAccount, Target: name, Detail: "password change with a wrong old password",
			})
			h.fail(w, r, forbidden("old_password is not the current password"))
			return
		}
	}
	if err := h.store.SetPassword(ctx, name, req.NewPassword); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// SysadminRequest is the body of PUT /users/{user}/sysadmin.
type SysadminRequest struct {
	SysAdmin *bool `json:"sysadmin_flag"`
}

func (h *Handler) setSysadmin(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	if err := requireAdmin(p); err != nil {
		h.fail(w, r, err)
		return
	}
	var req SysadminRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.SysAdmin == nil {
		h.fail(w, r, invalid(`give {"sysadmin_flag": true|false}`))
		return
	}
	name := r.PathValue("user")
	if err := h.store.SetAdmin(r.Context(), name, *req.SysAdmin); err != nil {
		h.fail(w, r, err)
		return
	}
	u, err := h.store.User(r.Context(), name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	if err := requireAdmin(p); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.store.DeleteUser(r.Context(), r.PathValue("user")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// checkNUL refuses strings the state's keys cannot hold (it would refuse
// them as a bad command, a 500).
func checkNUL(ss ...string) error {
	for _, s := range ss {
		if strings.ContainsRune(s, 0) {
			return invalid("a field holds a NUL byte")
		}
	}
	return nil
}
