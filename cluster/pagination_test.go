package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/hashicorp/raft"
)

// expectPage is the reference: names sorted, strictly after last, at most
// n; n <= 0 asks for nothing.
func expectPage(all []string, last string, n int) []string {
	s := slices.Clone(all)
	slices.Sort(s)
	out := []string{}
	if n <= 0 {
		return out
	}
	for _, v := range s {
		if len(out) == n {
			break
		}
		if v > last {
			out = append(out, v)
		}
	}
	return out
}

func TestTagsPagination(t *testing.T) {
	h := newHarness(t)
	rec, p := manifest("app", "m", []oci.Digest{blobDigest(1)}, nil, "")
	h.mustApply(putCmd(rec, p, ""))

	// 3000 tags in shuffled order, in one batch, plus neighbouring repos
	// whose names extend "app" and must never leak into its pages.
	const total = 3000
	rng := rand.New(rand.NewPCG(1, 2))
	var tags []string
	for i := 0; i < total; i++ {
		tags = append(tags, fmt.Sprintf("v%d", i))
	}
	tags = append(tags, "A", "Z9", "_x", "latest", "v1.0-rc", "v1.0_rc")
	rng.Shuffle(len(tags), func(i, j int) { tags[i], tags[j] = tags[j], tags[i] })
	var logs []*raft.Log
	for _, tag := range tags {
		h.idx++
		logs = append(logs, &raft.Log{Index: h.idx, Type: raft.LogCommand, Data: encode(t, putCmd(rec, p, tag))})
	}
	for _, repo := range []string{"app-x", "app/x", "appx", "ap"} {
		r, p := manifest(repo, "m", nil, nil, "")
		h.idx++
		logs = append(logs, &raft.Log{Index: h.idx, Type: raft.LogCommand, Data: encode(t, putCmd(r, p, "zzz"))})
	}
	for i, r := range h.f.ApplyBatch(logs) {
		if r != nil {
			t.Fatalf("entry %d: %v", i, r)
		}
	}

	for _, tc := range []struct {
		last string
		n    int
	}{
		{"", 10}, {"", 0}, {"", -1}, {"", total + 100},
		{"A", 5}, {"v1", 3}, {"v1.0", 3}, {"v1.0-rc", 2}, {"v999", 1000},
		{"v2999", 10}, {"v9", 10}, {"zzz", 10}, {"~", 5}, {"0", 1},
	} {
		t.Run(fmt.Sprintf("last=%q,n=%d", tc.last, tc.n), func(t *testing.T) {
			got, err := h.f.tags("app", tc.last, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if want := expectPage(tags, tc.last, tc.n); !slices.Equal(got, want) {
				t.Fatalf("got %d tags %q, want %d %q", len(got), head(got), len(want), head(want))
			}
		})
	}

	// Walking the pages yields every tag once, in order.
	var walked []string
	for last := ""; ; {
		page, err := h.f.tags("app", last, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		walked = append(walked, page...)
		last = page[len(page)-1]
	}
	if want := expectPage(tags, "", len(tags)+1); !slices.Equal(walked, want) {
		t.Fatalf("walked %d tags, want %d", len(walked), len(want))
	}
	if got, err := h.f.tags("missing", "", 10); !errors.Is(err, oci.ErrNotFound) || len(got) != 0 {
		t.Fatalf("tags of a missing repo = %#v, %v; want oci.ErrNotFound", got, err)
	}
}

func TestRepositoriesPagination(t *testing.T) {
	h := newHarness(t)
	repos := []string{"a", "a-b", "a/b", "a/b/c", "ab", "b", "lib/alpine", "lib/busybox", "z.z"}
	for _, r := range repos {
		rec, p := manifest(r, "m", nil, nil, "")
		h.mustApply(putCmd(rec, p, "t"))
	}
	for _, tc := range []struct {
		last string
		n    int
	}{
		{"", 100}, {"", 3}, {"a", 2}, {"a/b", 100}, {"aa", 5}, {"lib/", 1}, {"z.z", 5}, {"", 0},
	} {
		got, err := h.f.repositories(tc.last, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if want := expectPage(repos, tc.last, tc.n); !slices.Equal(got, want) {
			t.Errorf("repositories(%q, %d) = %q, want %q", tc.last, tc.n, got, want)
		}
	}
}

// BenchmarkTagsPage shows a page costs the same at any repository size.
func BenchmarkTagsPage(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			h := newHarness(b)
			rec, p := manifest("app", "m", nil, nil, "")
			var logs []*raft.Log
			for i := 0; i < size; i++ {
				h.idx++
				logs = append(logs, &raft.Log{Index: h.idx, Type: raft.LogCommand, Data: encode(b, putCmd(rec, p, fmt.Sprintf("t%06d", i)))})
			}
			h.f.ApplyBatch(logs)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := h.f.tags("app", fmt.Sprintf("t%06d", size/2), 100); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// head shortens a list for a failure message.
func head(s []string) []string { return s[:min(len(s), 8)] }
