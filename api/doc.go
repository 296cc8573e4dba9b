// Package api is berth's management REST API under /api/v1/: JSON in and
// out, described by an OpenAPI 3 document (GET /api/v1/openapi.json), used
// by the berth CLI and the UI; and, under /api/v2.0/, a Harbor-compatible
// subset in Harbor's shapes for tooling written for Harbor (harbor.go). It holds no state of its own: it calls the
// access state, the registry and the replication engine through small
// interfaces declared here (Store, GCRunner, Cluster, Replication,
// Authenticator, RetentionRunner), so it never imports cluster.
//
// Every request is authenticated (basic auth of a user or robot, a bearer
// token, or anonymous) and every decision goes through policy.Allowed;
// see DESIGN.md for the endpoints, the rules and why.
//
// Every error is a JSON object {"error": "..."} with the matching status;
// under /api/v2.0/ it is Harbor's {"errors": [{"code", "message"}]}.
package api
