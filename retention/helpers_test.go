package retention_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/retention"
)

// t0 is the push time of the oldest test artifact; pushes are a minute
// apart.
var t0 = time.Now().Add(-24 * time.Hour).UnixNano()

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fixture is a real one-node cluster in this process, with helpers to
// fill it.
type fixture struct {
	t    *testing.T
	ctx  context.Context
	node *cluster.Node
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	n := clustertest.SingleNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return &fixture{t: t, ctx: ctx, node: n}
}

// runner returns a Runner over store (the node when nil) with its own
// metrics registry.
func (f *fixture) runner(store retention.Store, mod func(*retention.Config)) (*retention.Runner, *prometheus.Registry) {
	f.t.Helper()
	if store == nil {
		store = f.node
	}
	cfg := retention.DefaultConfig()
	cfg.Poll = 10 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	r, err := retention.New(cfg, store, quiet(), reg)
	if err != nil {
		f.t.Fatal(err)
	}
	return r, reg
}

// project creates project name with retention policy pol and
// immutability rules imm.
func (f *fixture) project(name string, pol *policy.RetentionPolicy, imm ...policy.ImmutableRule) {
	f.t.Helper()
	for i := range imm {
		imm[i].ID = uint64(i + 1)
	}
	p := policy.Project{Name: name, Quota: policy.NoQuota, Retention: pol, Immutable: imm, NextRuleID: uint64(len(imm) + 1)}
	if _, err := f.node.CreateProject(f.ctx, p); err != nil {
		f.t.Fatalf("create project %s: %v", name, err)
	}
}

// put stores a manifest made from seed in repo, pushed at created, with
// its config blob linked first as the registry does; the first of tags
// comes with the push, the others are added after. It returns the digest.
func (f *fixture) put(repo, seed string, created int64, mt string, subject oci.Digest, children []oci.Digest, tags ...string) oci.Digest {
	f.t.Helper()
	payload := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"seed":%q}`, mt, seed)
	rec := oci.Record{
		Repo: repo, Digest: oci.DigestOf(payload), MediaType: mt, Size: int64(len(payload)),
		Subject: subject, Children: children, Created: created,
	}
	if !oci.IsIndexMediaType(mt) {
		blob := oci.DigestOf([]byte("config " + seed))
		if err := f.node.LinkBlob(f.ctx, repo, blob, 100); err != nil {
			f.t.Fatalf("link blob: %v", err)
		}
		rec.Blobs = []oci.Digest{blob}
	}
	if len(tags) == 0 {
		tags = []string{""}
	}
	for _, tag := range tags {
		if err := f.node.PutManifest(f.ctx, rec, payload, tag, oci.TagVersion{}); err != nil {
			f.t.Fatalf("put %s:%s: %v", repo, tag, err)
		}
	}
	return rec.Digest
}

// image pushes an image manifest.
func (f *fixture) image(repo, seed string, created int64, tags ...string) oci.Digest {
	f.t.Helper()
	return f.put(repo, seed, created, oci.MediaTypeImageManifest, "", nil, tags...)
}

// signed pushes an image with a cosign signature tag and an OCI referrer
// (an SBOM), and returns the three digests.
func (f *fixture) signed(repo, seed string, created int64, tags ...string) [3]oci.Digest {
	f.t.Helper()
	d := f.image(repo, seed, created, tags...)
	s := f.image(repo, seed+" signature", created+1, policy.AccessoryTag(d, ".sig"))
	r := f.put(repo, seed+" sbom", created+2, oci.MediaTypeImageManifest, d, nil)
	return [3]oci.Digest{d, s, r}
}

// digests returns the manifests of repo.
func (f *fixture) digests(repo string) map[oci.Digest]bool {
	f.t.Helper()
	arts, err := f.node.Artifacts(f.ctx, repo)
	if errors.Is(err, oci.ErrNotFound) {
		return map[oci.Digest]bool{}
	}
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[oci.Digest]bool{}
	for _, a := range arts {
		out[a.Digest] = true
	}
	return out
}

// all returns the manifests of every repository named.
func (f *fixture) all(repos ...string) map[oci.Digest]bool {
	f.t.Helper()
	out := map[oci.Digest]bool{}
	for _, r := range repos {
		maps.Copy(out, f.digests(r))
	}
	return out
}

// deletedIn returns the digests a run decided to delete.
func deletedIn(run policy.RetentionRun) map[oci.Digest]bool {
	out := map[oci.Digest]bool{}
	for _, d := range run.Decisions {
		if !d.Retain {
			out[d.Digest] = true
		}
	}
	return out
}

// set makes a set of digests.
func set(ds ...oci.Digest) map[oci.Digest]bool {
	out := map[oci.Digest]bool{}
	for _, d := range ds {
		out[d] = true
	}
	return out
}

func sorted(m map[oci.Digest]bool) []oci.Digest {
	return slices.Sorted(maps.Keys(m))
}

// eventually polls cond every few milliseconds until it holds or the
// deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
