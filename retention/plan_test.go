package retention

import (
	"slices"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

const planNow = int64(1_800_000_000_000_000_000)

func dg(name string) oci.Digest { return oci.DigestOf([]byte(name)) }

// pa is an artifact named name, pushed age nanoseconds before planNow.
func pa(name string, age int64, tags ...string) policy.Artifact {
	return policy.Artifact{Repo: "p/app", Digest: dg(name), Tags: tags, Pushed: planNow - age,
		MediaType: oci.MediaTypeImageManifest}
}

// sig is the cosign signature of subject, found by its tag.
func sig(name, subject string, suffix string) policy.Artifact {
	return pa(name, 0, policy.AccessoryTag(dg(subject), suffix))
}

// ref is an OCI referrer of subject.
func ref(name, subject string) policy.Artifact {
	a := pa(name, 0)
	a.Subject = dg(subject)
	return a
}

func index(name string, age int64, tags ...string) policy.Artifact {
	a := pa(name, age, tags...)
	a.MediaType = oci.MediaTypeImageIndex
	return a
}

func latest(k int) policy.RetentionPolicy {
	return policy.RetentionPolicy{Rules: []policy.RetentionRule{{Kind: policy.RetainLatestPushed, Param: k, Repos: "**", Tags: "**"}}}
}

// checkPlan checks that pl deletes exactly want (names), in an order that
// keeps every constraint, and that its decisions agree.
func checkPlan(t *testing.T, arts []policy.Artifact, pl plan, want ...string) {
	t.Helper()
	var got []string
	pos := map[oci.Digest]int{}
	for i, d := range pl.order {
		got = append(got, nameOf(arts, d))
		pos[d] = i
	}
	g, w := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(g, w) {
		t.Fatalf("deletes %v, want %v", got, want)
	}
	for d, before := range pl.after {
		for _, b := range before {
			if pos[b] >= pos[d] {
				t.Errorf("%s is deleted before %s, which must go first", nameOf(arts, d), nameOf(arts, b))
			}
		}
	}
	if len(pl.decisions) != len(arts) {
		t.Fatalf("%d decisions for %d artifacts", len(pl.decisions), len(arts))
	}
	for i, d := range pl.decisions {
		if d.Digest != arts[i].Digest {
			t.Fatalf("decision %d is of %s, want %s", i, nameOf(arts, d.Digest), nameOf(arts, arts[i].Digest))
		}
		if _, del := pos[d.Digest]; del == d.Retain || d.Reason == "" {
			t.Errorf("%s: retain %v, reason %q, deleted %v", nameOf(arts, d.Digest), d.Retain, d.Reason, del)
		}
	}
}

func nameOf(arts []policy.Artifact, d oci.Digest) string {
	for _, n := range allNames {
		if dg(n) == d {
			return n
		}
	}
	return string(d)
}

var allNames = []string{"old", "mid", "new", "old.sig", "old.att", "old.ref", "old.ref.sig", "new.sig", "new.ref",
	"idx", "idx2", "c1", "c2", "c3", "c1.sig", "fallback", "orphan", "imm.ref", "imm.ref.sig", "a", "b"}

func TestPlanAccessoriesGoWithTheirSubject(t *testing.T) {
	arts := []policy.Artifact{
		pa("old", 3, "v1"),
		pa("new", 1, "v2"),
		sig("old.sig", "old", ".sig"),
		sig("old.att", "old", ".att"),
		ref("old.ref", "old"),
		sig("old.ref.sig", "old.ref", ".sig"), // a signature of the referrer
		sig("new.sig", "new", ".sig"),
		ref("new.ref", "new"),
	}
	// Accessories are pushed last (newest), yet latest 1 keeps "new":
	// they are not candidates.
	pl, ok := makePlan(latest(1), "app", arts, nil, planNow)
	if !ok {
		t.Fatal("the rule applies to app")
	}
	checkPlan(t, arts, pl, "old", "old.sig", "old.att", "old.ref", "old.ref.sig")
	if pl.order[len(pl.order)-1] != dg("old") {
		t.Errorf("the subject is not deleted last: %v", pl.order)
	}
}

func TestPlanLeavesARepositoryNoRuleSelects(t *testing.T) {
	p := policy.RetentionPolicy{Rules: []policy.RetentionRule{{Kind: policy.RetainAlways, Repos: "other/**", Tags: "**"}}}
	if _, ok := makePlan(p, "app", []policy.Artifact{pa("old", 1)}, nil, planNow); ok {
		t.Fatal("a plan for a repository no rule applies to")
	}
}

func TestPlanIndexChildren(t *testing.T) {
	arts := []policy.Artifact{
		index("idx", 3, "v1"),
		pa("c1", 5), pa("c2", 5), pa("c3", 5),
		sig("c1.sig", "c1", ".sig"),
		index("idx2", 1, "v2"),
		pa("new", 2, "v3"),
	}
	children := map[oci.Digest][]oci.Digest{
		dg("idx"):  {dg("c1"), dg("c2"), dg("c2")},
		dg("idx2"): {dg("c2"), dg("c3")},
	}
	// latest 2: idx2 and new stay; idx goes with c1 (and its signature);
	// c2 stays, idx2 lists it too; c3 stays with idx2.
	pl, _ := makePlan(latest(2), "app", arts, children, planNow)
	checkPlan(t, arts, pl, "idx", "c1", "c1.sig")
	if pl.order[0] != dg("idx") {
		t.Errorf("the index must go before its children: %v", pl.order)
	}
	for _, d := range pl.decisions {
		if d.Digest == dg("c2") && d.Reason != "stays with its index "+string(dg("idx2")) {
			t.Errorf("c2: reason %q", d.Reason)
		}
	}
	// Untagged children are no candidates: latest 0 with untagged takes
	// everything, children after their index.
	p := latest(0)
	p.Rules[0].Untagged = true
	pl, _ = makePlan(p, "app", arts, children, planNow)
	checkPlan(t, arts, pl, "idx", "idx2", "new", "c1", "c2", "c3", "c1.sig")
}

// TestPlanReferrersFallbackIndex: a registry without the referrers API
// keeps referrers in an index tagged sha256-<subject>; the referrers are
// its children. The index goes first, then the referrers, then the
// subject.
func TestPlanReferrersFallbackIndex(t *testing.T) {
	fb := index("fallback", 0, policy.AccessoryTag(dg("old"), ""))
	arts := []policy.Artifact{pa("old", 3, "v1"), pa("new", 1, "v2"), fb, ref("old.ref", "old")}
	children := map[oci.Digest][]oci.Digest{dg("fallback"): {dg("old.ref")}}
	pl, _ := makePlan(latest(1), "app", arts, children, planNow)
	checkPlan(t, arts, pl, "fallback", "old.ref", "old")
	if !slices.Equal(pl.order, []oci.Digest{dg("fallback"), dg("old.ref"), dg("old")}) {
		t.Errorf("order %v", pl.order)
	}
}

func TestPlanImmutableAndOrphanAccessoriesStay(t *testing.T) {
	immRef := ref("imm.ref", "old")
	immRef.Tags = []string{"keep-me"}
	immRef.Immutable = true
	arts := []policy.Artifact{
		pa("old", 3, "v1"),
		pa("new", 1, "v2"),
		immRef,
		sig("imm.ref.sig", "imm.ref", ".sig"),
		sig("old.sig", "old", ".sig"),
		sig("orphan", "gone", ".sig"), // its subject is not in the repository
	}
	pl, _ := makePlan(latest(1), "app", arts, nil, planNow)
	// old goes (its immutable referrer stays, with its own signature).
	checkPlan(t, arts, pl, "old", "old.sig")
	for _, d := range pl.decisions {
		switch d.Digest {
		case dg("imm.ref"):
			if d.Reason != "immutable" {
				t.Errorf("imm.ref: reason %q", d.Reason)
			}
		case dg("orphan"):
			if d.Reason != "accessory of "+string(dg("gone"))+", which is not in the repository" {
				t.Errorf("orphan: reason %q", d.Reason)
			}
		}
	}
}

func TestPlanTaggedReferrerIsStillAnAccessory(t *testing.T) {
	// A manifest with a normal tag besides cosign tags stands on its own;
	// a referrer is an accessory whatever its tags.
	mixed := pa("a", 0, policy.AccessoryTag(dg("old"), ".sig"), "latest")
	r := ref("b", "old")
	r.Tags = []string{"sbom"}
	arts := []policy.Artifact{pa("old", 3, "v1"), mixed, r}
	pl, _ := makePlan(latest(1), "app", arts, nil, planNow)
	checkPlan(t, arts, pl, "old", "b")
}
