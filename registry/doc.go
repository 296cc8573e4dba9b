// Package registry serves the OCI Distribution API v1.1 (/v2/) over a
// content-addressed blob store, resumable upload sessions and the metadata
// state machine.
//
// A Registry is built with New from a Config, a State (the last applied Raft
// state, implemented by cluster) and an Authorizer: NewAccessAuth for
// projects, roles, robots and Docker token auth (its TokenHandler is the
// token service, mounted at TokenPath), NewAdminAuth for the single-admin
// setup. Handler serves the API; Run collects garbage and purges idle
// uploads on a schedule; GC runs one collection on demand.
// Middleware, which cmd wraps around its whole ServeMux, gives every request
// an id, an access log line and its metrics.
//
// Every request is parsed by route template, checked against the
// Authorizer in one place, and answered with errors from one table (see
// errors.go). Blob files are shared by all repositories; what a repository
// may see is decided by the state's links. Reads never wait for Raft; writes
// go through it, and answer 503 with Retry-After when there is no quorum.
//
// DESIGN.md in this directory lists the invariants and what the package
// does not do.
package registry
