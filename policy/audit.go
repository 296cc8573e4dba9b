package policy

import (
	"context"
	"strings"
)

// The audit log: who did what, when, from which address. Changes record
// their event in the same state-machine command as the change itself, so
// neither exists without the other; pulls and failed logins are counted
// in batches.

// Audit operations.
const (
	AuditPush        = "push"
	AuditPull        = "pull"
	AuditDelete      = "delete"
	AuditLoginFailed = "login_failed"
	AuditCreate      = "create"
	AuditUpdate      = "update"
	AuditQuota       = "quota" // a quota warning or refusal
	AuditRetention   = "retention"
)

// Audit resource types.
const (
	AuditArtifact    = "artifact"
	AuditTag         = "tag"
	AuditProject     = "project"
	AuditMember      = "member"
	AuditUser        = "user"
	AuditRobot       = "robot"
	AuditImmutable   = "immutable_rule"
	AuditRetPolicy   = "retention_policy"
	AuditQuotaRes    = "quota"
	AuditTokenKey    = "token_key"
	AuditAccount     = "account" // login failures
	AuditEndpoint    = "replication_endpoint"
	AuditReplication = "replication_policy"
)

// Bounds of an event.
const (
	maxAuditField  = 512
	maxAuditDetail = 2048
)

// AuditEvent is one entry of the audit log.
type AuditEvent struct {
	ID   uint64 `json:"id"`
	Time int64  `json:"time"` // unix nanoseconds
	// Actor is who: a user name, a robot name, "anonymous", or "system"
	// for berth's own work (retention, replication).
	Actor string `json:"actor"`
	// Addr is the client's address.
	Addr string `json:"addr,omitempty"`
	// Op is what was done (AuditPush, AuditCreate, ...), Resource the kind
	// of thing it was done to, Target which one (repo:tag, repo@digest, a
	// name), Project its project ("" for system resources).
	Op       string `json:"operation"`
	Resource string `json:"resource_type"`
	Target   string `json:"resource"`
	Project  string `json:"project,omitempty"`
	// Count is how many times it happened in a batch (pulls, failed
	// logins); 1 otherwise.
	Count  int64  `json:"count,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Clip bounds e's fields, keeping it valid UTF-8 where it cuts.
func (e AuditEvent) Clip() AuditEvent {
	e.Actor = clip(e.Actor, maxAuditField)
	e.Addr = clip(e.Addr, maxAuditField)
	e.Op = clip(e.Op, maxAuditField)
	e.Resource = clip(e.Resource, maxAuditField)
	e.Target = clip(e.Target, maxAuditField)
	e.Project = clip(e.Project, maxAuditField)
	e.Detail = clip(e.Detail, maxAuditDetail)
	return e
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// A rune cut in half becomes invalid bytes, which go.
	return strings.ToValidUTF8(s[:n], "")
}

// AuditFilter selects events of the audit log. Zero fields select all.
type AuditFilter struct {
	Actor    string
	Project  string
	Op       string
	Resource string
	// Target matches a prefix of the event's target (a repository).
	Target string
	Since  int64 // unix nanoseconds, inclusive
	Until  int64 // exclusive; 0: no bound
	// Before pages: only events with a smaller id (0: from the newest).
	Before uint64
	Limit  int
}

// Match reports whether f selects e (paging aside).
func (f AuditFilter) Match(e AuditEvent) bool {
	switch {
	case f.Actor != "" && e.Actor != f.Actor,
		f.Project != "" && e.Project != f.Project,
		f.Op != "" && e.Op != f.Op,
		f.Resource != "" && e.Resource != f.Resource,
		f.Target != "" && !strings.HasPrefix(e.Target, f.Target),
		f.Since != 0 && e.Time < f.Since,
		f.Until != 0 && e.Time >= f.Until:
		return false
	}
	return true
}

// Actor is who makes a request, as the audit log records it.
type Actor struct {
	Name string // user or robot name; "anonymous"; "system"
	Addr string // client address
}

type actorKey struct{}

// WithActor returns ctx carrying a; writes made with it are recorded in
// the audit log as a's.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries, or "system" without an address.
func ActorFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok && a.Name != "" {
		return a
	}
	return Actor{Name: "system"}
}
