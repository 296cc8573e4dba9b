package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
)

// fakeGCState is a GCState whose answers the test scripts.
type fakeGCState struct {
	// referenced answers the n-th call (from 0) of LiveBlobs.
	referenced func(n int) (map[oci.Digest]struct{}, error)

	mu       sync.Mutex
	calls    int
	unlinked [][]oci.Digest
}

func (f *fakeGCState) LiveBlobs(ctx context.Context, since time.Time) (map[oci.Digest]struct{}, error) {
	f.mu.Lock()
	n := f.calls
	f.calls++
	f.mu.Unlock()
	if f.referenced == nil {
		return map[oci.Digest]struct{}{}, nil
	}
	return f.referenced(n)
}

func (f *fakeGCState) UnlinkBlobs(ctx context.Context, ds []oci.Digest, before time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds = slices.Clone(ds)
	slices.Sort(ds)
	f.unlinked = append(f.unlinked, ds)
	return nil
}

// sorted returns ds sorted, to compare with what UnlinkBlobs got.
func sorted(ds ...oci.Digest) []oci.Digest {
	slices.Sort(ds)
	return ds
}

var _ GCState = (*fakeGCState)(nil)

func refsOf(ds ...oci.Digest) map[oci.Digest]struct{} {
	m := map[oci.Digest]struct{}{}
	for _, d := range ds {
		m[d] = struct{}{}
	}
	return m
}

// ageBlob sets a blob's mtime to age ago.
func ageBlob(t *testing.T, dir string, d oci.Digest, age time.Duration) {
	t.Helper()
	when := time.Now().Add(-age)
	hx := d.Hex()
	if err := os.Chtimes(filepath.Join(dir, d.Algorithm(), hx[:2], hx), when, when); err != nil {
		t.Fatal(err)
	}
}

func storeHas(t *testing.T, s *BlobStore, d oci.Digest) bool {
	t.Helper()
	_, _, err := s.Stat(d)
	if err != nil && !errors.Is(err, oci.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestGCSweep(t *testing.T) {
	s, dir := newTestBlobStore(t)
	old := storePut(t, s, []byte("old and unreferenced"))
	young := storePut(t, s, []byte("young and unreferenced"))
	referenced := storePut(t, s, []byte("old but referenced"))
	protected := storePut(t, s, []byte("old but protected"))
	for _, d := range []oci.Digest{old, referenced, protected} {
		ageBlob(t, dir, d, 2*time.Hour)
	}
	ageBlob(t, dir, young, 30*time.Minute)
	state := &fakeGCState{referenced: func(int) (map[oci.Digest]struct{}, error) { return refsOf(referenced), nil }}
	c := NewCollector(s, state, nil)
	release := c.Protect([]oci.Digest{protected})

	res, err := c.Run(context.Background(), GCConfig{Grace: time.Hour}, time.Now())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Scanned != 4 || res.Deleted != 1 || res.BytesFreed != int64(len("old and unreferenced")) || res.DryRun {
		t.Fatalf("Run = %+v", res)
	}
	if storeHas(t, s, old) {
		t.Fatal("old unreferenced blob kept")
	}
	for name, d := range map[string]oci.Digest{"young": young, "referenced": referenced, "protected": protected} {
		if !storeHas(t, s, d) {
			t.Fatalf("%s blob deleted", name)
		}
	}
	// Every candidate is unlinked before anything is deleted; the protected
	// blob's file stays, and the state keeps a link that is younger.
	if len(state.unlinked) != 1 || !slices.Equal(state.unlinked[0], sorted(old, protected)) {
		t.Fatalf("UnlinkBlobs calls %v, want one with the two candidates", state.unlinked)
	}
	if c, b := s.Stats(); c != 3 || b != int64(len("young and unreferenced")+len("old but referenced")+len("old but protected")) {
		t.Fatalf("Stats = %d, %d", c, b)
	}

	// Once released, the protected blob goes.
	release()
	release() // idempotent
	res, err = c.Run(context.Background(), GCConfig{Grace: time.Hour}, time.Now())
	if err != nil || res.Deleted != 1 || storeHas(t, s, protected) {
		t.Fatalf("Run after release = %+v, %v; protected blob exists: %v", res, err, storeHas(t, s, protected))
	}
}

func TestGCProtectionsNest(t *testing.T) {
	s, dir := newTestBlobStore(t)
	d := storePut(t, s, []byte("shared layer"))
	ageBlob(t, dir, d, 2*time.Hour)
	c := NewCollector(s, &fakeGCState{}, nil)
	r1 := c.Protect([]oci.Digest{d})
	r2 := c.Protect([]oci.Digest{d})
	r1()
	r1()
	if res, _ := c.Run(context.Background(), GCConfig{}, time.Now()); res.Deleted != 0 || !storeHas(t, s, d) {
		t.Fatalf("blob deleted while one protection remains: %+v", res)
	}
	r2()
	if res, _ := c.Run(context.Background(), GCConfig{}, time.Now()); res.Deleted != 1 {
		t.Fatalf("blob kept after every protection ended: %+v", res)
	}
}

func TestGCManifestCommittedDuringWalkSavesBlob(t *testing.T) {
	s, dir := newTestBlobStore(t)
	saved := storePut(t, s, []byte("referenced by a manifest committed mid-walk"))
	doomed := storePut(t, s, []byte("garbage"))
	ageBlob(t, dir, saved, 2*time.Hour)
	ageBlob(t, dir, doomed, 2*time.Hour)
	state := &fakeGCState{referenced: func(n int) (map[oci.Digest]struct{}, error) {
		if n == 0 {
			return refsOf(), nil // the mark, before the manifest commits
		}
		return refsOf(saved), nil
	}}
	c := NewCollector(s, state, nil)
	res, err := c.Run(context.Background(), GCConfig{Grace: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !storeHas(t, s, saved) {
		t.Fatal("blob of a manifest committed during the walk was deleted")
	}
	if storeHas(t, s, doomed) || res.Deleted != 1 {
		t.Fatalf("garbage kept: %+v", res)
	}
	if state.calls != 2 {
		t.Fatalf("LiveBlobs called %d times, want 2", state.calls)
	}
	if len(state.unlinked) != 1 || !slices.Equal(state.unlinked[0], sorted(saved, doomed)) {
		t.Fatalf("UnlinkBlobs calls %v, want one with both candidates", state.unlinked)
	}
}

func TestGCBlobRefreshedDuringRunIsKept(t *testing.T) {
	// A push re-uploads (or mounts, or HEADs) an old blob after the walk
	// chose it: the delete re-checks the mtime under the blob's lock.
	s, dir := newTestBlobStore(t)
	d := storePut(t, s, []byte("pushed again"))
	ageBlob(t, dir, d, 2*time.Hour)
	state := &fakeGCState{referenced: func(n int) (map[oci.Digest]struct{}, error) {
		if n == 1 {
			if err := s.Touch(d); err != nil {
				return nil, err
			}
		}
		return refsOf(), nil
	}}
	res, err := NewCollector(s, state, nil).Run(context.Background(), GCConfig{Grace: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 0 || !storeHas(t, s, d) {
		t.Fatalf("blob refreshed during the run was deleted: %+v", res)
	}
	// It was unlinked as a candidate (the state keeps links younger than
	// the cutoff), but its file was refreshed and stays.
	if len(state.unlinked) != 1 || !slices.Equal(state.unlinked[0], []oci.Digest{d}) {
		t.Fatalf("UnlinkBlobs calls %v, want one with [%s]", state.unlinked, d)
	}
}

func TestGCDryRun(t *testing.T) {
	s, dir := newTestBlobStore(t)
	var ds []oci.Digest
	for i := range 3 {
		d := storePut(t, s, fmt.Appendf(nil, "garbage %d", i))
		ageBlob(t, dir, d, 2*time.Hour)
		ds = append(ds, d)
	}
	state := &fakeGCState{}
	c := NewCollector(s, state, nil)
	release := c.Protect(ds[:1])
	defer release()
	res, err := c.Run(context.Background(), GCConfig{Grace: time.Hour, DryRun: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || res.Scanned != 3 || res.Deleted != 2 || res.BytesFreed != 2*int64(len("garbage 0")) {
		t.Fatalf("dry run = %+v", res)
	}
	for _, d := range ds {
		if !storeHas(t, s, d) {
			t.Fatal("dry run deleted a blob")
		}
	}
	if len(state.unlinked) != 0 {
		t.Fatalf("dry run unlinked %v", state.unlinked)
	}
}

func TestGCMarkFailureDeletesNothing(t *testing.T) {
	s, dir := newTestBlobStore(t)
	d := storePut(t, s, []byte("old"))
	ageBlob(t, dir, d, 2*time.Hour)
	boom := errors.New("state unavailable")
	for _, failAt := range []int{0, 1} {
		state := &fakeGCState{referenced: func(n int) (map[oci.Digest]struct{}, error) {
			if n == failAt {
				return nil, boom
			}
			return refsOf(), nil
		}}
		if _, err := NewCollector(s, state, nil).Run(context.Background(), GCConfig{}, time.Now()); !errors.Is(err, boom) {
			t.Fatalf("Run with LiveBlobs failing at call %d: %v", failAt, err)
		}
		if !storeHas(t, s, d) {
			t.Fatalf("blob deleted although mark %d failed", failAt)
		}
	}
}

func TestGCOneRunAtATime(t *testing.T) {
	s, _ := newTestBlobStore(t)
	entered := make(chan struct{})
	proceed := make(chan struct{})
	state := &fakeGCState{referenced: func(n int) (map[oci.Digest]struct{}, error) {
		if n == 0 {
			close(entered)
			<-proceed
		}
		return refsOf(), nil
	}}
	c := NewCollector(s, state, nil)
	done := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), GCConfig{}, time.Now())
		done <- err
	}()
	<-entered
	if _, err := c.Run(context.Background(), GCConfig{}, time.Now()); !errors.Is(err, ErrGCRunning) {
		t.Fatalf("second Run: %v, want ErrGCRunning", err)
	}
	close(proceed)
	if err := <-done; err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if _, err := c.Run(context.Background(), GCConfig{}, time.Now()); err != nil {
		t.Fatalf("Run after the first ended: %v", err)
	}
}

// TestGCRacesManifestPuts plays the manifest PUT handler against a running
// GC: Protect, then check presence; every blob found present must survive
// until the protection is released.
func TestGCRacesManifestPuts(t *testing.T) {
	s, dir := newTestBlobStore(t)
	var ds []oci.Digest
	for i := range 200 {
		d := storePut(t, s, fmt.Appendf(nil, "layer %d", i))
		ageBlob(t, dir, d, 2*time.Hour)
		ds = append(ds, d)
	}
	c := NewCollector(s, &fakeGCState{}, nil)
	var wg sync.WaitGroup
	var promised []oci.Digest
	var releases []func()
	wg.Go(func() {
		for _, d := range ds {
			release := c.Protect([]oci.Digest{d})
			if _, _, err := s.Stat(d); err == nil {
				promised = append(promised, d) // the manifest would be accepted
				releases = append(releases, release)
			} else {
				release()
			}
		}
	})
	res, err := c.Run(context.Background(), GCConfig{Grace: time.Hour}, time.Now())
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range promised {
		if !storeHas(t, s, d) {
			t.Fatalf("GC deleted %s after a manifest PUT found it present under protection", d)
		}
	}
	if res.Deleted+len(promised) != len(ds) {
		t.Fatalf("deleted %d, promised %d, of %d blobs", res.Deleted, len(promised), len(ds))
	}
	for _, release := range releases {
		release()
	}
}

func TestGCCanceled(t *testing.T) {
	s, dir := newTestBlobStore(t)
	d := storePut(t, s, []byte("old"))
	ageBlob(t, dir, d, 2*time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewCollector(s, &fakeGCState{}, nil).Run(ctx, GCConfig{}, time.Now()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	if !storeHas(t, s, d) {
		t.Fatal("canceled run deleted a blob")
	}
}
