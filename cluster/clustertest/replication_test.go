package clustertest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// TestReplicationThroughFollowers: replication writes forwarded to the
// leader keep their verdicts (invalid, superseded, precondition failed),
// an event rule made through one follower turns a push through another
// into a task, and a claim through a third returns it.
func TestReplicationThroughFollowers(t *testing.T) {
	c := clustertest.New(t, 3)
	ctx := t.Context()
	f := c.Others(c.Leader(t))
	a, b := c.Node(f[0]), c.Node(f[1])
	if id := a.ClusterID(); id != b.ClusterID() || id == "" {
		t.Fatalf("cluster ids %q and %q", id, b.ClusterID())
	}
	if err := retry(t, func() error { return a.PutEndpoint(ctx, policy.Endpoint{Name: "Bad"}) }); !errors.Is(err, policy.ErrInvalid) {
		t.Fatalf("invalid endpoint through a follower: %v", err)
	}
	ep := policy.Endpoint{Name: "mirror", URL: "https://mirror.example", Type: policy.EndpointBerth}
	if err := retry(t, func() error { return a.PutEndpoint(ctx, ep) }); err != nil {
		t.Fatal(err)
	}
	rule := policy.Rule{Name: "ev", Endpoint: "mirror", Trigger: policy.TriggerEvent, Enabled: true, Delete: true}
	if err := retry(t, func() error { return a.PutRule(ctx, rule) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Rule(ctx, "ev"); err != nil {
		t.Fatalf("rule made through %s, read through %s: %v", a.ID(), b.ID(), err)
	}

	rec := push(t, c, f[1], "team/app", "v1")
	v, found, err := b.TagVersion(ctx, "team/app", "v1")
	if err != nil || !found || v.Origin != b.ClusterID() {
		t.Fatalf("version = %s, %v, %v", v, found, err)
	}
	_, payload := image("team/app", "v1", blob("%s:%s", "team/app", "v1"))
	old := oci.TagVersion{HLC: v.HLC - 1, Origin: "zz"}
	if err := retry(t, func() error { return a.PutManifest(ctx, rec, payload, "v1", old) }); !errors.Is(err, oci.ErrSuperseded) {
		t.Fatalf("older replicated put through a follower: %v", err)
	}
	if err := retry(t, func() error { return a.DeleteTag(ctx, "team/app", "v1", oci.TagVersion{}, blob("other")) }); !errors.Is(err, oci.ErrPreconditionFailed) {
		t.Fatalf("conditional delete through a follower: %v", err)
	}

	ld := c.Node(c.Leader(t))
	var claimed []policy.Task
	if err := retry(t, func() (err error) {
		claimed, err = a.ClaimTasks(ctx, a.ID(), "claim-a", 5, time.Now(), time.Minute)
		return err
	}); err != nil || len(claimed) != 1 || claimed[0].Tag != "v1" || claimed[0].Owner != a.ID() {
		t.Fatalf("claim through %s: %+v, %v", a.ID(), claimed, err)
	}
	if err := retry(t, func() error {
		return b.UpdateTasks(ctx, []policy.TaskUpdate{{ID: claimed[0].ID, Claim: "claim-a", Status: policy.StatusSucceeded}}, time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	if e, err := ld.Execution(ctx, claimed[0].Execution); err != nil || e.Status != policy.ExecSucceeded {
		t.Fatalf("execution on the leader = %+v, %v", e, err)
	}
	c.WaitConverged(t, convergeWithin)
}
