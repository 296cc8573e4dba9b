package registry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// faultState is the State of the API suite: a real Raft-backed cluster.Node
// (clustertest.SingleNode: raft-boltdb and bbolt in a temp dir), with
// hooks that make its reads or writes fail, as a lost quorum or a broken
// disk would. The suite thereby tests the handlers against the state
// machine users run, not against a model of it.
type faultState struct {
	State
	mu        sync.Mutex
	failWrite func() error
	failRead  func() error
	// linkAge makes every repository link look this much older to garbage
	// collection than it is (links carry the time they were made).
	linkAge time.Duration
}

var _ State = (*faultState)(nil)

// newNodeState starts a one-node cluster and waits until it can commit
// writes.
func newNodeState(t testing.TB) *faultState {
	t.Helper()
	return &faultState{State: clustertest.SingleNode(t)}
}

// setFaults replaces the write and read failure hooks (nil: no failure).
func (s *faultState) setFaults(write, read func() error) {
	s.mu.Lock()
	s.failWrite, s.failRead = write, read
	s.mu.Unlock()
}

func (s *faultState) fault(write bool) error {
	s.mu.Lock()
	f := s.failRead
	if write {
		f = s.failWrite
	}
	s.mu.Unlock()
	if f != nil {
		return f()
	}
	return nil
}

func (s *faultState) Manifest(ctx context.Context, repo string, d oci.Digest) (oci.Record, []byte, error) {
	if err := s.fault(false); err != nil {
		return oci.Record{}, nil, err
	}
	return s.State.Manifest(ctx, repo, d)
}

func (s *faultState) Tag(ctx context.Context, repo, tag string) (oci.Digest, error) {
	if err := s.fault(false); err != nil {
		return "", err
	}
	return s.State.Tag(ctx, repo, tag)
}

func (s *faultState) BlobLinked(ctx context.Context, repo string, d oci.Digest) (bool, error) {
	if err := s.fault(false); err != nil {
		return false, err
	}
	return s.State.BlobLinked(ctx, repo, d)
}

func (s *faultState) Tags(ctx context.Context, repo, last string, n int) ([]string, error) {
	if err := s.fault(false); err != nil {
		return nil, err
	}
	return s.State.Tags(ctx, repo, last, n)
}

func (s *faultState) Repositories(ctx context.Context, last string, n int) ([]string, error) {
	if err := s.fault(false); err != nil {
		return nil, err
	}
	return s.State.Repositories(ctx, last, n)
}

func (s *faultState) Referrers(ctx context.Context, repo string, subject oci.Digest) ([]oci.Descriptor, error) {
	if err := s.fault(false); err != nil {
		return nil, err
	}
	return s.State.Referrers(ctx, repo, subject)
}

func (s *faultState) PutManifest(ctx context.Context, rec oci.Record, payload []byte, tag string, v oci.TagVersion) error {
	if err := s.fault(true); err != nil {
		return err
	}
	return s.State.PutManifest(ctx, rec, payload, tag, v)
}

func (s *faultState) DeleteManifest(ctx context.Context, repo string, d oci.Digest) error {
	if err := s.fault(true); err != nil {
		return err
	}
	return s.State.DeleteManifest(ctx, repo, d)
}

func (s *faultState) DeleteTag(ctx context.Context, repo, tag string, v oci.TagVersion, ifDigest oci.Digest) error {
	if err := s.fault(true); err != nil {
		return err
	}
	return s.State.DeleteTag(ctx, repo, tag, v, ifDigest)
}

func (s *faultState) LinkBlob(ctx context.Context, repo string, d oci.Digest, size int64) error {
	if err := s.fault(true); err != nil {
		return err
	}
	return s.State.LinkBlob(ctx, repo, d, size)
}

func (s *faultState) UnlinkBlob(ctx context.Context, repo string, d oci.Digest) error {
	if err := s.fault(true); err != nil {
		return err
	}
	return s.State.UnlinkBlob(ctx, repo, d)
}

func (s *faultState) UnlinkBlobs(ctx context.Context, ds []oci.Digest, before time.Time) error {
	if err := s.fault(true); err != nil {
		return err
	}
	if !before.IsZero() {
		before = before.Add(s.linkAge)
	}
	return s.State.UnlinkBlobs(ctx, ds, before)
}

func (s *faultState) LiveBlobs(ctx context.Context, since time.Time) (map[oci.Digest]struct{}, error) {
	if err := s.fault(false); err != nil {
		return nil, err
	}
	if !since.IsZero() {
		since = since.Add(s.linkAge)
	}
	return s.State.LiveBlobs(ctx, since)
}

// hasTag reports whether repo has tag in the committed state.
func (s *faultState) hasTag(t testing.TB, repo, tag string) bool {
	t.Helper()
	_, err := s.State.Tag(context.Background(), repo, tag)
	return err == nil
}

// errUnavailableState is the error a state returns without a leader.
var errUnavailableState = fmt.Errorf("propose: no leader: %w", oci.ErrUnavailable)

// errWithPath is an internal error whose text must never reach a client.
var errWithPath = fmt.Errorf("open %s: input/output error", strings.Repeat("/secret/path", 2))

// RecordPull forwards to the state when it counts pulls (a *cluster.Node).
func (s *faultState) RecordPull(repo string, d oci.Digest, actor policy.Actor) {
	if p, ok := s.State.(PullRecorder); ok {
		p.RecordPull(repo, d, actor)
	}
}

// CheckQuota forwards to the state when it knows quotas (a *cluster.Node).
func (s *faultState) CheckQuota(ctx context.Context, repo string) error {
	if g, ok := s.State.(QuotaGate); ok {
		return g.CheckQuota(ctx, repo)
	}
	return nil
}
