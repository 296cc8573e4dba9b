// Package retention carries out the tag retention policies of projects:
// it decides with policy.RetentionPolicy.Evaluate which artifacts each
// repository keeps and deletes the rest, with their accessories
// (signatures, attestations, SBOMs, referrers) and the children of the
// indexes that go. Runs are manual (RunRetention, real or dry) or
// scheduled: on the leader, Run starts each project's run when its cron
// schedule is due. Every run is recorded in the state machine. See
// DESIGN.md.
package retention
