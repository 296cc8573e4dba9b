// Package api is berth's management REST API under /api/v1/: JSON in and
// out, used by the berth CLI (and later the UI). It holds no state of its
// own; it calls the registry and the state machine through small interfaces
// declared here, so it never imports cluster.
//
// Endpoints:
//
//	POST /api/v1/gc           run garbage collection now (admin); dry_run in the
//	                          query (?dry_run=true) or the body {"dry_run": true}
//	GET  /api/v1/system/info  version and node id
//
// Every error is a JSON object {"error": "..."} with the matching status.
package api
