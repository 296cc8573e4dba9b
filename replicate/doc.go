// Package replicate pushes artifacts and their signatures from this
// registry to other registries — other berth clusters or any OCI
// registry — as the policies in the state machine say.
//
// Every node runs an Engine. Tasks are made by the state machine (event
// policies, in the same apply as the push or delete: the outbox) or by the
// engine (manual runs, schedules, reconciliation); each node claims tasks
// with leases, copies them children first with a Copier through a Remote,
// and reports the results in batches. The leader alone reconciles, runs
// schedules and prunes history. See DESIGN.md.
package replicate
