package policy

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/berth-registry/berth/oci"
)

// retNow is the time retention tests evaluate at.
const retNow = int64(1_800_000_000_000_000_000)

// art is an artifact named name (its digest derives from the name),
// pushed and pulled daysAgo days before retNow (pulled < 0: never).
func art(name string, pushedDaysAgo, pulledDaysAgo float64, tags ...string) Artifact {
	a := Artifact{
		Repo:   "proj/app",
		Digest: oci.DigestOf([]byte(name)),
		Tags:   tags,
		Pushed: retNow - int64(pushedDaysAgo*float64(day)),
	}
	if pulledDaysAgo >= 0 {
		a.Pulled = retNow - int64(pulledDaysAgo*float64(day))
	}
	return a
}

// names maps the digests of arts back to their names.
func names(arts []Artifact) map[oci.Digest]string {
	m := map[oci.Digest]string{}
	for _, a := range arts {
		for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "u1", "u2"} {
			if a.Digest == oci.DigestOf([]byte(n)) {
				m[a.Digest] = n
			}
		}
	}
	return m
}

// kept evaluates p over arts and returns the sorted names of the retained
// artifacts; nil decisions (no rule applies) come back as nil.
func kept(t *testing.T, p RetentionPolicy, rel string, arts []Artifact) []string {
	t.Helper()
	ds := p.Evaluate(rel, arts, retNow)
	if ds == nil {
		return nil
	}
	if len(ds) != len(arts) {
		t.Fatalf("Evaluate returned %d decisions for %d artifacts", len(ds), len(arts))
	}
	nm := names(arts)
	out := []string{}
	for i, d := range ds {
		if d.Digest != arts[i].Digest {
			t.Fatalf("decision %d is for %s, want the artifacts' order (%s)", i, d.Digest, arts[i].Digest)
		}
		if d.Reason == "" {
			t.Errorf("decision for %s has no reason", nm[d.Digest])
		}
		if d.Retain {
			out = append(out, nm[d.Digest])
		}
	}
	slices.Sort(out)
	return out
}

func rule(kind string, param int) RetentionRule {
	return RetentionRule{Kind: kind, Param: param, Repos: "**", Tags: "**"}
}

func TestEvaluateRuleKinds(t *testing.T) {
	// a..d tagged, pushed 1, 3, 10, 40 days ago; pulled 30, never, 2, 5
	// days ago; u1 untagged, pushed today, pulled today.
	arts := []Artifact{
		art("a", 1, 30, "v4"),
		art("b", 3, -1, "v3"),
		art("c", 10, 2, "v2"),
		art("d", 40, 5, "v1", "stable"),
		art("u1", 0, 0),
	}
	tests := []struct {
		name string
		rule RetentionRule
		want []string
	}{
		{"latest 2 pushed", rule(RetainLatestPushed, 2), []string{"a", "b"}},
		{"latest 0 pushed keeps none", rule(RetainLatestPushed, 0), []string{}},
		{"latest K beyond the count keeps all", rule(RetainLatestPushed, 10), []string{"a", "b", "c", "d"}},
		{"latest 2 pulled", rule(RetainLatestPulled, 2), []string{"c", "d"}},
		{"latest 3 pulled", rule(RetainLatestPulled, 3), []string{"a", "c", "d"}},
		{"never pulled only when fewer than N were", rule(RetainLatestPulled, 4), []string{"a", "b", "c", "d"}},
		{"pushed within 5 days", rule(RetainPushedWithin, 5), []string{"a", "b"}},
		{"pushed within 0 days", rule(RetainPushedWithin, 0), []string{}},
		{"pulled within 6 days", rule(RetainPulledWithin, 6), []string{"c", "d"}},
		{"pulled within: never pulled is not kept", rule(RetainPulledWithin, 100000), []string{"a", "c", "d"}},
		{"always", rule(RetainAlways, 0), []string{"a", "b", "c", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := kept(t, RetentionPolicy{Rules: []RetentionRule{tt.rule}}, "app", arts)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("kept %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEvaluateWithinBoundary(t *testing.T) {
	// Exactly N days ago is within N days; a nanosecond more is not.
	in := art("a", 0, -1, "x")
	in.Pushed = retNow - 7*day
	out := art("b", 0, -1, "y")
	out.Pushed = retNow - 7*day - 1
	got := kept(t, RetentionPolicy{Rules: []RetentionRule{rule(RetainPushedWithin, 7)}}, "app", []Artifact{in, out})
	if !slices.Equal(got, []string{"a"}) {
		t.Fatalf("kept %v, want [a]", got)
	}
}

// TestEvaluateLongestPeriod: a period as long as Validate allows means
// "keep what was ever pushed (pulled)", not an overflow that keeps nothing.
func TestEvaluateLongestPeriod(t *testing.T) {
	arts := []Artifact{art("a", 1, 1, "v1"), art("b", 5000, 5000, "v2")}
	for _, kind := range []string{RetainPushedWithin, RetainPulledWithin} {
		for _, n := range []int{106751, 106752, maxRetentionParam} {
			r := rule(kind, n)
			if err := r.Validate(); err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			got := kept(t, RetentionPolicy{Rules: []RetentionRule{r}}, "app", arts)
			if !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("%s: kept %v, want [a b]", r, got)
			}
		}
	}
}

func TestEvaluateRepoFilter(t *testing.T) {
	arts := []Artifact{art("a", 1, -1, "v1"), art("b", 2, -1, "v2")}
	tests := []struct {
		name string
		rule RetentionRule
		rel  string
		want []string // nil: the repository is not touched
	}{
		{"matching repository", RetentionRule{Kind: RetainLatestPushed, Param: 1, Repos: "team/*", Tags: "**"}, "team/app", []string{"a"}},
		{"single star stays in a component", RetentionRule{Kind: RetainLatestPushed, Param: 1, Repos: "team/*", Tags: "**"}, "team/app/x", nil},
		{"other repository untouched", RetentionRule{Kind: RetainLatestPushed, Param: 1, Repos: "team/**", Tags: "**"}, "other/app", nil},
		{"excluded repository untouched", RetentionRule{Kind: RetainLatestPushed, Param: 1, Repos: "tmp/**", ExcludeRepos: true, Tags: "**"}, "tmp/app", nil},
		{"repository outside the exclusion", RetentionRule{Kind: RetainLatestPushed, Param: 1, Repos: "tmp/**", ExcludeRepos: true, Tags: "**"}, "app", []string{"a"}},
		{"disabled rule untouched", RetentionRule{Kind: RetainLatestPushed, Param: 1, Repos: "**", Tags: "**", Disabled: true}, "app", nil},
		{"alternatives", RetentionRule{Kind: RetainAlways, Repos: "{web,api}", Tags: "**"}, "api", []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := kept(t, RetentionPolicy{Rules: []RetentionRule{tt.rule}}, tt.rel, arts)
			if tt.want == nil {
				if got != nil {
					t.Fatalf("kept %v, want the repository untouched (nil decisions)", got)
				}
				return
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("kept %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEvaluateNoRulesTouchNothing(t *testing.T) {
	arts := []Artifact{art("a", 1, -1, "v1")}
	if ds := (RetentionPolicy{}).Evaluate("app", arts, retNow); ds != nil {
		t.Fatalf("a policy without rules decided %v", ds)
	}
}

func TestEvaluateTagFilter(t *testing.T) {
	arts := []Artifact{
		art("a", 1, -1, "v1.2"),
		art("b", 2, -1, "v1.1", "latest"),
		art("c", 3, -1, "dev-7"),
		art("d", 4, -1, "latest-rc"),
		art("u1", 5, -1),
	}
	tests := []struct {
		name string
		rule RetentionRule
		want []string
	}{
		{"tags matching", RetentionRule{Kind: RetainAlways, Repos: "**", Tags: "v*"}, []string{"a", "b"}},
		{"any tag of the artifact matching", RetentionRule{Kind: RetainAlways, Repos: "**", Tags: "latest"}, []string{"b"}},
		// Harbor's "excluding": an artifact is selected when one of its
		// tags does not match.
		{"tags excluding", RetentionRule{Kind: RetainAlways, Repos: "**", Tags: "latest*", ExcludeTags: true}, []string{"a", "b", "c"}},
		{"count among the selected only", RetentionRule{Kind: RetainLatestPushed, Param: 1, Repos: "**", Tags: "v*"}, []string{"a"}},
		{"untagged not selected by default", RetentionRule{Kind: RetainAlways, Repos: "**", Tags: "**"}, []string{"a", "b", "c", "d"}},
		{"untagged selected", RetentionRule{Kind: RetainAlways, Repos: "**", Tags: "v*", Untagged: true}, []string{"a", "b", "u1"}},
		{"untagged selected with exclusion", RetentionRule{Kind: RetainAlways, Repos: "**", Tags: "**", ExcludeTags: true, Untagged: true}, []string{"u1"}},
		{"untagged counted with the tagged", RetentionRule{Kind: RetainLatestPushed, Param: 2, Repos: "**", Tags: "dev-*", Untagged: true}, []string{"c", "u1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := kept(t, RetentionPolicy{Rules: []RetentionRule{tt.rule}}, "app", arts)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("kept %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEvaluateRulesAreORed(t *testing.T) {
	arts := []Artifact{
		art("a", 1, -1, "v3"),
		art("b", 2, -1, "v2"),
		art("c", 3, -1, "release-1"),
		art("d", 50, -1, "v1"),
	}
	p := RetentionPolicy{Rules: []RetentionRule{
		{Kind: RetainLatestPushed, Param: 1, Repos: "**", Tags: "v*"},
		{Kind: RetainAlways, Repos: "**", Tags: "release-*"},
		{Kind: RetainPushedWithin, Param: 2, Repos: "**", Tags: "**"},
		{Kind: RetainAlways, Repos: "other", Tags: "**"}, // applies elsewhere
	}}
	got := kept(t, p, "app", arts)
	if want := []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
	// The reason is the first rule that keeps it.
	for _, d := range p.Evaluate("app", arts, retNow) {
		var want string
		switch d.Digest {
		case arts[0].Digest:
			want = p.Rules[0].String()
		case arts[1].Digest:
			want = p.Rules[2].String()
		case arts[2].Digest:
			want = p.Rules[1].String()
		default:
			if d.Retain || d.Reason == "" {
				t.Errorf("d: retain %v, reason %q", d.Retain, d.Reason)
			}
			continue
		}
		if d.Reason != want {
			t.Errorf("%s: reason %q, want %q", d.Digest, d.Reason, want)
		}
	}
}

func TestEvaluateTiesByDigest(t *testing.T) {
	// Four artifacts pushed at the same time: latest 2 keeps the two with
	// the smallest digests, whatever the order they are listed in.
	var arts []Artifact
	for _, n := range []string{"a", "b", "c", "d"} {
		a := art(n, 1, 1, "t-"+n)
		a.Pushed, a.Pulled = retNow-day, retNow-day
		arts = append(arts, a)
	}
	byDigest := slices.Clone(arts)
	slices.SortFunc(byDigest, func(x, y Artifact) int { return strings.Compare(string(x.Digest), string(y.Digest)) })
	nm := names(arts)
	want := []string{nm[byDigest[0].Digest], nm[byDigest[1].Digest]}
	slices.Sort(want)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kind := range []string{RetainLatestPushed, RetainLatestPulled} {
		for range 10 {
			rng.Shuffle(len(arts), func(i, j int) { arts[i], arts[j] = arts[j], arts[i] })
			got := kept(t, RetentionPolicy{Rules: []RetentionRule{rule(kind, 2)}}, "app", arts)
			if !slices.Equal(got, want) {
				t.Fatalf("%s over %v: kept %v, want %v", kind, arts, got, want)
			}
		}
	}
}

func TestEvaluateImmutableAlwaysKept(t *testing.T) {
	a := art("a", 1, -1, "v2")
	b := art("b", 100, -1, "v1")
	b.Immutable = true
	u := art("u1", 200, -1)
	u.Immutable = true // cannot happen from the state (no tag), but the flag wins
	p := RetentionPolicy{Rules: []RetentionRule{rule(RetainLatestPushed, 1)}}
	ds := p.Evaluate("app", []Artifact{a, b, u}, retNow)
	if len(ds) != 3 {
		t.Fatalf("%d decisions for 3 artifacts", len(ds))
	}
	for _, d := range ds {
		switch d.Digest {
		case a.Digest:
			if !d.Retain || d.Reason != p.Rules[0].String() {
				t.Errorf("a: retain %v reason %q", d.Retain, d.Reason)
			}
		case b.Digest, u.Digest:
			if !d.Retain || d.Reason != "immutable" {
				t.Errorf("%s: retain %v reason %q, want kept as immutable", d.Digest, d.Retain, d.Reason)
			}
		}
	}
	// Without artifacts there is nothing to decide.
	if ds := p.Evaluate("app", nil, retNow); len(ds) != 0 {
		t.Errorf("no artifacts: %v", ds)
	}
}

func TestRetentionPolicyValidate(t *testing.T) {
	ok := rule(RetainLatestPushed, 3)
	tests := []struct {
		name string
		p    RetentionPolicy
		ok   bool
	}{
		{"valid", RetentionPolicy{Rules: []RetentionRule{ok}, Schedule: "0 3 * * *"}, true},
		{"descriptor schedule", RetentionPolicy{Rules: []RetentionRule{ok}, Schedule: "@every 6h"}, true},
		{"no rules", RetentionPolicy{}, true},
		{"always without param", RetentionPolicy{Rules: []RetentionRule{rule(RetainAlways, 0)}}, true},
		{"unknown kind", RetentionPolicy{Rules: []RetentionRule{rule("keepSome", 1)}}, false},
		{"negative count", RetentionPolicy{Rules: []RetentionRule{rule(RetainLatestPulled, -1)}}, false},
		{"count too large", RetentionPolicy{Rules: []RetentionRule{rule(RetainPushedWithin, maxRetentionParam+1)}}, false},
		{"empty repo glob", RetentionPolicy{Rules: []RetentionRule{{Kind: RetainAlways, Tags: "**"}}}, false},
		{"bad tag glob", RetentionPolicy{Rules: []RetentionRule{{Kind: RetainAlways, Repos: "**", Tags: "[a"}}}, false},
		{"bad schedule", RetentionPolicy{Rules: []RetentionRule{ok}, Schedule: "every day"}, false},
		{"too many rules", RetentionPolicy{Rules: slices.Repeat([]RetentionRule{ok}, MaxRetentionRules+1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want it to wrap ErrInvalid", err)
			}
		})
	}
}

func TestRetentionRuleString(t *testing.T) {
	r := RetentionRule{Kind: RetainLatestPushed, Param: 3, Repos: "tmp/**", ExcludeRepos: true, Tags: "v*", Untagged: true}
	if got, want := r.String(), "latestPushedK(3) repos=!tmp/** tags=v* +untagged"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got, want := rule(RetainAlways, 0).String(), "always repos=** tags=**"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}
