package retention

import (
	"slices"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// A plan is what a run does in one repository. Candidates are the
// artifacts that stand on their own; the policy decides on them. The
// others depend on another artifact of the repository, their holder:
//   - an accessory on its subject: an OCI referrer (Subject set), or a
//     manifest whose tags are all cosign tags (sha256-<hex>.sig, .att,
//     .sbom, or the referrers fallback tag sha256-<hex>);
//   - a child on every index of the repository that lists it.
//
// A dependent goes when all its holders go, unless it is immutable; what
// stays keeps its own dependents. Deletions are ordered so that no step
// leaves a dangling reference: an accessory before its subject, an index
// before its children.
type plan struct {
	// decisions has one decision per artifact of the repository, in the
	// order they were listed.
	decisions []policy.RetentionDecision
	// order lists the digests to delete, in the order to delete them.
	order []oci.Digest
	// after maps a digest of order to those that must be gone first.
	after map[oci.Digest][]oci.Digest
}

// hold is one artifact holding another.
type hold struct {
	by    oci.Digest
	index bool // by is an index listing it (else: its subject)
}

// accessorySubjects returns the subjects an artifact is an accessory of:
// its Subject, or, for a manifest whose tags are all accessory tags, the
// digests those tags name. None: it is not an accessory.
func accessorySubjects(a policy.Artifact) []oci.Digest {
	if a.Subject != "" {
		return []oci.Digest{a.Subject}
	}
	var out []oci.Digest
	for _, t := range a.Tags {
		d, ok := policy.AccessoryOf(t)
		if !ok {
			return nil
		}
		out = append(out, d)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// makePlan decides, at now, on the artifacts of repository rel (relative
// to its project) under p; children lists the children of the indexes
// among arts. It reports false when no rule of p applies to rel: then the
// repository is left alone.
func makePlan(p policy.RetentionPolicy, rel string, arts []policy.Artifact, children map[oci.Digest][]oci.Digest, now int64) (plan, bool) {
	present := make(map[oci.Digest]bool, len(arts))
	for _, a := range arts {
		present[a.Digest] = true
	}
	holders := map[oci.Digest][]hold{}
	addHold := func(of oci.Digest, h hold) {
		if of == h.by || !present[h.by] || slices.Contains(holders[of], h) {
			return
		}
		holders[of] = append(holders[of], h)
	}
	for _, a := range arts {
		for _, c := range children[a.Digest] {
			if present[c] {
				addHold(c, hold{by: a.Digest, index: true})
			}
		}
	}
	subjects := map[oci.Digest][]oci.Digest{}
	var cands, deps []policy.Artifact
	for _, a := range arts {
		subs := accessorySubjects(a)
		for _, s := range subs {
			addHold(a.Digest, hold{by: s})
		}
		subjects[a.Digest] = subs
		if len(subs) > 0 || len(holders[a.Digest]) > 0 {
			deps = append(deps, a)
		} else {
			cands = append(cands, a)
		}
	}
	decided := p.Evaluate(rel, cands, now)
	if decided == nil {
		return plan{}, false
	}

	del := map[oci.Digest]bool{}
	byDigest := make(map[oci.Digest]policy.RetentionDecision, len(arts))
	for _, d := range decided {
		byDigest[d.Digest] = d
		if !d.Retain {
			del[d.Digest] = true
		}
	}
	// A dependent goes once all its holders go; repeat until nothing more
	// does (accessories of accessories, children of a deleted accessory).
	for changed := true; changed; {
		changed = false
		for _, a := range deps {
			hs := holders[a.Digest]
			if del[a.Digest] || a.Immutable || len(hs) == 0 {
				continue
			}
			if !slices.ContainsFunc(hs, func(h hold) bool { return !del[h.by] }) {
				del[a.Digest] = true
				changed = true
			}
		}
	}
	for _, a := range deps {
		byDigest[a.Digest] = dependentDecision(a, holders[a.Digest], subjects[a.Digest], del)
	}

	pl := plan{after: map[oci.Digest][]oci.Digest{}}
	for _, a := range arts {
		pl.decisions = append(pl.decisions, byDigest[a.Digest])
	}
	for _, a := range deps {
		if !del[a.Digest] {
			continue
		}
		for _, h := range holders[a.Digest] {
			if h.index {
				pl.after[a.Digest] = append(pl.after[a.Digest], h.by)
			} else {
				pl.after[h.by] = append(pl.after[h.by], a.Digest)
			}
		}
	}
	for d := range pl.after {
		slices.Sort(pl.after[d])
	}
	// Depth first: before a digest, what must go before it. Candidates
	// first, so that each one's accessories come just before it.
	const (
		visiting = 1
		visited  = 2
	)
	mark := map[oci.Digest]int{}
	var visit func(oci.Digest)
	visit = func(d oci.Digest) {
		if mark[d] != 0 {
			return // done, or a cycle (tags naming each other): deleting may then fail
		}
		mark[d] = visiting
		for _, b := range pl.after[d] {
			visit(b)
		}
		mark[d] = visited
		pl.order = append(pl.order, d)
	}
	for _, list := range [][]policy.Artifact{cands, deps} {
		for _, a := range list {
			if del[a.Digest] {
				visit(a.Digest)
			}
		}
	}
	return pl, true
}

// dependentDecision is the decision on an accessory or child a, once del
// holds everything that goes.
func dependentDecision(a policy.Artifact, hs []hold, subjects []oci.Digest, del map[oci.Digest]bool) policy.RetentionDecision {
	d := policy.RetentionDecision{Artifact: a, Retain: !del[a.Digest]}
	describe := func(h hold, verb string) string {
		if h.index {
			return verb + " index " + string(h.by)
		}
		return verb + " subject " + string(h.by)
	}
	switch {
	case !d.Retain:
		d.Reason = describe(hs[0], "goes with its")
	case a.Immutable:
		d.Reason = "immutable"
	case len(hs) == 0:
		d.Reason = "accessory of " + string(subjects[0]) + ", which is not in the repository"
	default:
		i := slices.IndexFunc(hs, func(h hold) bool { return !del[h.by] })
		d.Reason = describe(hs[i], "stays with its")
	}
	return d
}
