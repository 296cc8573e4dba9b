package api_test

import (
	"errors"
	"testing"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/policy"
)

// TestGrantable: whoever gives a robot permissions must hold each of
// them. Today only project admins (who hold every assignable permission)
// and administrators may create robots, so the role matrix cannot reach
// a refusal; this checks the rule for every role and permission, against
// the hand-written matrix of the role matrix test (heldBy), not the
// policy table grantable decides with.
func TestGrantable(t *testing.T) {
	for _, role := range policy.Roles {
		p := policy.Principal{Kind: policy.PrincipalUser, Name: "u"}
		pa := policy.ProjectAccess{Name: "own", Exists: true, Role: role}
		for _, a := range policy.RobotAssignable {
			_, err := api.Grantable(p, pa, []policy.Access{a})
			if held := roleHolds(t, role, a.String()); held != (err == nil) || (err != nil && !errors.Is(err, api.ErrForbidden)) {
				t.Errorf("%s grants %s: %v (holds it: %t)", role, a, err, held)
			}
		}
		for _, a := range []policy.Access{{Resource: policy.ResRobot, Action: policy.ActCreate}, {Resource: policy.ResMember, Action: policy.ActCreate}} {
			if _, err := api.Grantable(p, pa, []policy.Access{a}); !errors.Is(err, policy.ErrInvalid) {
				t.Errorf("%s grants %s: %v, want invalid", role, a, err)
			}
		}
	}
	// A robot, even one with every permission, grants what its list has
	// and nothing else — and the handlers refuse robots besides.
	rb := &policy.Robot{Permissions: []policy.RobotPermission{{Namespace: "own", Access: []policy.Access{{Resource: policy.ResRepository, Action: policy.ActPull}}}}}
	p := policy.Principal{Kind: policy.PrincipalRobot, Name: "robot$own+r", Robot: rb}
	pa := policy.ProjectAccess{Name: "own", Exists: true}
	if _, err := api.Grantable(p, pa, []policy.Access{{Resource: policy.ResRepository, Action: policy.ActPush}}); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("a pull-only robot grants push: %v", err)
	}
	got, err := api.Grantable(p, pa, []policy.Access{{Resource: policy.ResRepository, Action: policy.ActPull}, {Resource: policy.ResRepository, Action: policy.ActPull}})
	if err != nil || len(got) != 1 {
		t.Errorf("duplicates: %v %v", got, err)
	}
}
