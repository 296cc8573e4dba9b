package clustertest_test

import (
	"testing"

	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/policy"
)

func TestSingleNode(t *testing.T) {
	n := clustertest.SingleNode(t)
	if !n.Ready() || !n.IsLeader() {
		t.Fatalf("ready %v, leader %v", n.Ready(), n.IsLeader())
	}
	if _, err := n.CreateProject(t.Context(), policy.Project{Name: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Project(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
}
