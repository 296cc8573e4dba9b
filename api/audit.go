package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/berth-registry/berth/policy"
)

// The audit log and the token service's signing keys.

// listAudit answers GET /audit: the newest events first, filtered by
// ?user= (the actor), project=, operation=, resource_type=, resource= (a
// prefix of the target), since= and until= (RFC 3339 or unix seconds), a
// page of ?limit= events before the event id ?before=. The whole log is
// for administrators; with ?project= it is that project's, for whoever
// may list its log. A full page links to the next with Link rel="next".
func (h *Handler) listAudit(w http.ResponseWriter, r *http.Request, p policy.Principal) {
	q := r.URL.Query()
	project := q.Get("project")
	if project == "" {
		if err := requireAdmin(p); err != nil {
			h.fail(w, r, err)
			return
		}
	} else if _, err := h.authorize(r.Context(), p, project, policy.ResLog, policy.ActList); err != nil {
		h.fail(w, r, err)
		return
	}
	f := policy.AuditFilter{
		Actor: q.Get("user"), Project: project, Op: q.Get("operation"),
		Resource: q.Get("resource_type"), Target: q.Get("resource"),
	}
	var err error
	if f.Since, err = queryTime(r, "since"); err != nil {
		h.fail(w, r, err)
		return
	}
	if f.Until, err = queryTime(r, "until"); err != nil {
		h.fail(w, r, err)
		return
	}
	if f.Before, err = queryUint(r, "before"); err != nil {
		h.fail(w, r, err)
		return
	}
	if f.Limit, err = limit(r); err != nil {
		h.fail(w, r, err)
		return
	}
	events, err := h.store.Audit(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(events) == f.Limit && len(events) > 0 {
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("before", strconv.FormatUint(events[len(events)-1].ID, 10))
		w.Header().Set("Link", fmt.Sprintf("<%saudit?%s>; rel=\"next\"", Prefix, next.Encode()))
	}
	writeJSON(w, http.StatusOK, events)
}

// queryTime reads a time from the query as unix nanoseconds (0 when
// absent): RFC 3339, or unix seconds.
func queryTime(r *http.Request, key string) (int64, error) {
	s := r.URL.Query().Get(key)
	if s == "" {
		return 0, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UnixNano(), nil
	}
	if sec, err := strconv.ParseInt(s, 10, 64); err == nil && sec > 0 && sec < 1<<33 {
		return time.Unix(sec, 0).UnixNano(), nil
	}
	return 0, fmt.Errorf("%w: %s %q: want an RFC 3339 time or unix seconds", policy.ErrInvalid, key, clip(s, 64))
}

// TokenKey describes a signing key of the token service (never the key).
type TokenKey = policy.SigningKey

// listTokenKeys answers GET /system/token-keys: the keys the cluster
// keeps, newest first; the current one signs new tokens, the ones before
// it still verify the tokens they signed.
func (h *Handler) listTokenKeys(w http.ResponseWriter, r *http.Request, _ policy.Principal) {
	keys, err := h.store.TokenKeys(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, keys)
}

// rotateTokenKey answers POST /system/token-keys/rotate: a new key signs
// from now on.
func (h *Handler) rotateTokenKey(w http.ResponseWriter, r *http.Request, _ policy.Principal) {
	kid, err := h.store.RotateTokenKey(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, TokenKey{Kid: kid, Current: true})
}
