package api

import "slices"

// Routes returns the "METHOD /path" patterns h serves.
func Routes(h *Handler) []string {
	return append(slices.Clone(fixedRoutes), h.routes...)
}

// Grantable is grantable, and ErrForbidden errForbidden, for TestGrantable.
var (
	Grantable    = grantable
	ErrForbidden = errForbidden
)
