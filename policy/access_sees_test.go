package policy

import "testing"

func TestSees(t *testing.T) {
	robotOf := func(ns string) Principal {
		return Principal{Kind: PrincipalRobot, Name: "robot$x", Robot: &Robot{Permissions: []RobotPermission{
			{Namespace: ns, Access: []Access{{ResRepository, ActPull}}},
		}}}
	}
	private := ProjectAccess{Name: "p", Exists: true}
	for _, tt := range []struct {
		name string
		p    Principal
		pa   ProjectAccess
		want bool
	}{
		{"anonymous, private", Anonymous, private, false},
		{"anonymous, public", Anonymous, ProjectAccess{Name: "p", Exists: true, Public: true}, true},
		{"outsider, private", Principal{Kind: PrincipalUser, Name: "u"}, private, false},
		{"limited guest", Principal{Kind: PrincipalUser, Name: "u"}, ProjectAccess{Name: "p", Exists: true, Role: RoleLimitedGuest}, true},
		{"admin", Principal{Kind: PrincipalUser, Name: "a", Admin: true}, private, true},
		{"admin, missing project", Principal{Kind: PrincipalUser, Name: "a", Admin: true}, ProjectAccess{Name: "p"}, false},
		{"robot named there", robotOf("p"), private, true},
		{"robot of every project", robotOf(AllProjects), private, true},
		{"robot of another project", robotOf("q"), private, false},
		{"robot, missing project", robotOf("p"), ProjectAccess{Name: "p"}, false},
	} {
		if got := Sees(tt.p, tt.pa); got != tt.want {
			t.Errorf("%s: Sees = %t, want %t", tt.name, got, tt.want)
		}
	}
}
