package api

import (
	"slices"
	"time"
)

// Routes returns the "METHOD /path" patterns h serves.
func Routes(h *Handler) []string {
	return append(slices.Clone(fixedRoutes), h.routes...)
}

// SetCredentialTTL changes how long h caches good credentials: a long
// suite must not pay a bcrypt check again when its cache entries expire.
func SetCredentialTTL(h *Handler, d time.Duration) {
	h.creds.ttl = d
}
