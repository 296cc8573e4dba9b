package cluster

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// TestNodeReplicationStore drives the replication store through a node:
// config, the outbox of a push, a claim and its report, versions and
// tombstones, a large manual execution, and pruning.
func TestNodeReplicationStore(t *testing.T) {
	n := internalNode(t, t.TempDir(), freeLocalAddr(t))
	ctx := t.Context()

	id := n.ClusterID()
	if _, err := oci.ParseTagVersion("1." + id); err != nil || len(id) != 17 || id[0] != 'c' {
		t.Fatalf("cluster id %q: %v", id, err)
	}
	if err := n.PutEndpoint(ctx, policy.Endpoint{Name: "mirror", URL: "ftp://x", Type: policy.EndpointBerth}); !errors.Is(err, policy.ErrInvalid) {
		t.Fatalf("invalid endpoint: %v", err)
	}
	r := testRule()
	if err := n.PutRule(ctx, r); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("rule of a missing endpoint: %v", err)
	}
	if err := n.PutEndpoint(ctx, policy.Endpoint{Name: "mirror", URL: "https://mirror.example", Type: policy.EndpointBerth}); err != nil {
		t.Fatal(err)
	}
	if err := n.PutRule(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got, err := n.Rule(ctx, "ev"); err != nil || got.Created == 0 || got.Tags != "v*" {
		t.Fatalf("rule = %+v, %v", got, err)
	}

	rec, payload := manifest("app/web", "m1", []oci.Digest{blobDigest(1)}, nil, "")
	if err := n.LinkBlob(ctx, "app/web", blobDigest(1), 1); err != nil {
		t.Fatal(err)
	}
	if err := n.PutManifest(ctx, rec, payload, "v1", oci.TagVersion{}); err != nil {
		t.Fatal(err)
	}
	v, found, err := n.TagVersion(ctx, "app/web", "v1")
	if err != nil || !found || v.Origin != id || v.HLC == 0 {
		t.Fatalf("version = %s, %v, %v", v, found, err)
	}
	active, err := n.ActiveTasks(ctx)
	if err != nil || len(active) != 1 || active[0].Version != v || active[0].DestRepo != "mirror/web" {
		t.Fatalf("active tasks = %+v, %v", active, err)
	}

	now := time.Now()
	claimed, err := n.ClaimTasks(ctx, "n1", "claim-1", 10, now, time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].Status != policy.StatusRunning || claimed[0].Attempts != 1 {
		t.Fatalf("claimed %+v, %v", claimed, err)
	}
	if err := n.UpdateTasks(ctx, []policy.TaskUpdate{{ID: claimed[0].ID, Claim: "claim-1", Status: policy.StatusSucceeded, Bytes: 42}}, now); err != nil {
		t.Fatal(err)
	}
	if e, err := n.Execution(ctx, claimed[0].Execution); err != nil || e.Status != policy.ExecSucceeded || e.Bytes != 42 {
		t.Fatalf("execution = %+v, %v", e, err)
	}
	if lt, ok, err := n.LatestTask(ctx, "ev", "app/web", "v1"); err != nil || !ok || lt.Status != policy.StatusSucceeded {
		t.Fatalf("latest = %+v, %v, %v", lt, ok, err)
	}

	if err := n.DeleteTag(ctx, "app/web", "v1", oci.TagVersion{}, blobDigest(9)); !errors.Is(err, oci.ErrPreconditionFailed) {
		t.Fatalf("delete if another digest: %v", err)
	}
	if err := n.DeleteTag(ctx, "app/web", "v1", oci.TagVersion{}, rec.Digest); err != nil {
		t.Fatal(err)
	}
	tomb, found, _ := n.TagVersion(ctx, "app/web", "v1")
	if found || tomb.Compare(v) <= 0 {
		t.Fatalf("version after delete = %s, %v", tomb, found)
	}
	if ts, err := n.Tombstones(ctx, "app/web", "", 10); err != nil || len(ts) != 1 || ts[0].Version != tomb {
		t.Fatalf("tombstones = %+v, %v", ts, err)
	}
	if err := n.PutManifest(ctx, rec, payload, "v1", v); !errors.Is(err, oci.ErrSuperseded) {
		t.Fatalf("put older than the tombstone: %v", err)
	}

	// A manual run larger than one command.
	man := testRule()
	man.Name, man.Trigger = "man", policy.TriggerManual
	if err := n.PutRule(ctx, man); err != nil {
		t.Fatal(err)
	}
	var jobs []policy.Task
	for i := range 2*taskChunk + 7 {
		jobs = append(jobs, policy.Task{Kind: policy.TaskCopy, Repo: "app/web", Tag: fmt.Sprint("t", i), Digest: rec.Digest})
	}
	exec, err := n.StartExecution(ctx, "man", policy.TriggerManual, jobs, true, now)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := n.Execution(ctx, exec); err != nil || e.Total != len(jobs) || e.Status != policy.ExecRunning || e.Policy != "man" {
		t.Fatalf("execution = %+v, %v", e, err)
	}
	if ts, err := n.Tasks(ctx, exec, policy.StatusPending, 0, 3); err != nil || len(ts) != 3 || ts[0].Tag != "t0" || ts[0].DestRepo != "mirror/web" {
		t.Fatalf("tasks = %+v, %v", ts, err)
	}
	if _, err := n.StartExecution(ctx, "nope", policy.TriggerManual, nil, true, now); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("start of a missing rule: %v", err)
	}
	if err := n.DeleteEndpoint(ctx, "mirror"); !errors.Is(err, oci.ErrDenied) {
		t.Fatalf("delete of an endpoint in use: %v", err)
	}
	for _, name := range []string{"man", "ev"} {
		if err := n.DeleteRule(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if e, _ := n.Execution(ctx, exec); e.Status != policy.ExecStopped || e.Stopped != len(jobs) {
		t.Fatalf("execution of a deleted rule = %+v", e)
	}
	if err := n.DeleteEndpoint(ctx, "mirror"); err != nil {
		t.Fatal(err)
	}
	if err := n.PruneHistory(ctx, time.Now().Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if es, err := n.Executions(ctx, "", 0, 10); err != nil || len(es) != 0 {
		t.Fatalf("executions after pruning = %+v, %v", es, err)
	}
	if _, err := n.Execution(ctx, exec); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("pruned execution: %v", err)
	}
	if err := n.PurgeTombstones(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ts, _ := n.Tombstones(ctx, "app/web", "", 10); len(ts) != 0 {
		t.Fatalf("tombstones after purge = %+v", ts)
	}
}
