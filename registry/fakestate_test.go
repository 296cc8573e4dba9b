package registry

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/berth-registry/berth/oci"
)

// fakeState is an in-memory State for the API suite, with the semantics the
// state machine promises: not-found errors wrap oci.ErrNotFound, deleting a
// manifest an index lists is oci.ErrDenied, deleting a manifest deletes its
// tags. failWrite, when set, fails every write (a lost quorum); failRead
// fails every read.
type fakeState struct {
	mu        sync.Mutex
	repos     map[string]*fakeRepo
	failWrite func() error
	failRead  func() error
}

type fakeRepo struct {
	manifests map[oci.Digest]fakeManifest
	tags      map[string]oci.Digest
	links     map[oci.Digest]int64
}

type fakeManifest struct {
	rec     oci.Record
	payload []byte
}

var (
	_ State = (*fakeState)(nil)
)

func newFakeState() *fakeState {
	return &fakeState{repos: make(map[string]*fakeRepo)}
}

func (s *fakeState) repo(name string, create bool) *fakeRepo {
	r := s.repos[name]
	if r == nil && create {
		r = &fakeRepo{
			manifests: make(map[oci.Digest]fakeManifest),
			tags:      make(map[string]oci.Digest),
			links:     make(map[oci.Digest]int64),
		}
		s.repos[name] = r
	}
	return r
}

func (s *fakeState) read() error {
	if s.failRead != nil {
		return s.failRead()
	}
	return nil
}

func (s *fakeState) write() error {
	if s.failWrite != nil {
		return s.failWrite()
	}
	return nil
}

func (s *fakeState) Manifest(_ context.Context, repo string, d oci.Digest) (oci.Record, []byte, error) {
	if err := s.read(); err != nil {
		return oci.Record{}, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.repo(repo, false); r != nil {
		if m, ok := r.manifests[d]; ok {
			return m.rec, slices.Clone(m.payload), nil
		}
	}
	return oci.Record{}, nil, fmt.Errorf("manifest %s@%s: %w", repo, d, oci.ErrNotFound)
}

func (s *fakeState) Tag(_ context.Context, repo, tag string) (oci.Digest, error) {
	if err := s.read(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.repo(repo, false); r != nil {
		if d, ok := r.tags[tag]; ok {
			return d, nil
		}
	}
	return "", fmt.Errorf("tag %s:%s: %w", repo, tag, oci.ErrNotFound)
}

func (s *fakeState) BlobLinked(_ context.Context, repo string, d oci.Digest) (bool, error) {
	if err := s.read(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo, false)
	if r == nil {
		return false, nil
	}
	if _, ok := r.links[d]; ok {
		return true, nil
	}
	for _, m := range r.manifests {
		if slices.Contains(m.rec.Blobs, d) {
			return true, nil
		}
	}
	return false, nil
}

func page(all []string, last string, n int) []string {
	sort.Strings(all)
	i := sort.SearchStrings(all, last)
	for i < len(all) && all[i] <= last {
		i++
	}
	out := all[i:]
	if len(out) > n {
		out = out[:n]
	}
	return slices.Clone(out)
}

func (s *fakeState) Tags(_ context.Context, repo, last string, n int) ([]string, error) {
	if err := s.read(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo, false)
	if r == nil {
		return nil, fmt.Errorf("repository %s: %w", repo, oci.ErrNotFound)
	}
	var all []string
	for t := range r.tags {
		all = append(all, t)
	}
	return page(all, last, n), nil
}

func (s *fakeState) Repositories(_ context.Context, last string, n int) ([]string, error) {
	if err := s.read(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []string
	for name := range s.repos {
		all = append(all, name)
	}
	return page(all, last, n), nil
}

func (s *fakeState) Referrers(_ context.Context, repo string, subject oci.Digest) ([]oci.Descriptor, error) {
	if err := s.read(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []oci.Descriptor
	if r := s.repo(repo, false); r != nil {
		for _, m := range r.manifests {
			if m.rec.Subject == subject {
				out = append(out, m.rec.Descriptor())
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

func (s *fakeState) PutManifest(_ context.Context, rec oci.Record, payload []byte, tag string) error {
	if err := s.write(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(rec.Repo, true)
	r.manifests[rec.Digest] = fakeManifest{rec: rec, payload: slices.Clone(payload)}
	if tag != "" {
		r.tags[tag] = rec.Digest
	}
	return nil
}

func (s *fakeState) DeleteManifest(_ context.Context, repo string, d oci.Digest) error {
	if err := s.write(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo, false)
	if r == nil {
		return fmt.Errorf("manifest %s@%s: %w", repo, d, oci.ErrNotFound)
	}
	if _, ok := r.manifests[d]; !ok {
		return fmt.Errorf("manifest %s@%s: %w", repo, d, oci.ErrNotFound)
	}
	for _, m := range r.manifests {
		if slices.Contains(m.rec.Children, d) {
			return fmt.Errorf("%w: manifest %s is listed by index %s", oci.ErrDenied, d, m.rec.Digest)
		}
	}
	delete(r.manifests, d)
	for t, td := range r.tags {
		if td == d {
			delete(r.tags, t)
		}
	}
	return nil
}

func (s *fakeState) DeleteTag(_ context.Context, repo, tag string) error {
	if err := s.write(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo, false)
	if r == nil {
		return fmt.Errorf("tag %s:%s: %w", repo, tag, oci.ErrNotFound)
	}
	if _, ok := r.tags[tag]; !ok {
		return fmt.Errorf("tag %s:%s: %w", repo, tag, oci.ErrNotFound)
	}
	delete(r.tags, tag)
	return nil
}

func (s *fakeState) LinkBlob(_ context.Context, repo string, d oci.Digest, size int64) error {
	if err := s.write(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repo(repo, true).links[d] = size
	return nil
}

func (s *fakeState) UnlinkBlob(_ context.Context, repo string, d oci.Digest) error {
	if err := s.write(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo, false)
	if r == nil {
		return fmt.Errorf("blob %s@%s: %w", repo, d, oci.ErrNotFound)
	}
	delete(r.links, d)
	return nil
}

func (s *fakeState) ReferencedBlobs(context.Context) (map[oci.Digest]struct{}, error) {
	if err := s.read(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[oci.Digest]struct{})
	for _, r := range s.repos {
		for _, m := range r.manifests {
			for _, b := range m.rec.Blobs {
				out[b] = struct{}{}
			}
		}
	}
	return out, nil
}

func (s *fakeState) UnlinkBlobs(_ context.Context, ds []oci.Digest) error {
	if err := s.write(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.repos {
		for _, d := range ds {
			delete(r.links, d)
		}
	}
	return nil
}

// tagCount is for assertions.
func (s *fakeState) hasTag(repo, tag string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo, false)
	if r == nil {
		return false
	}
	_, ok := r.tags[tag]
	return ok
}

// errUnavailableState is the error a state returns without a leader.
var errUnavailableState = fmt.Errorf("propose: no leader: %w", oci.ErrUnavailable)

// pathError is an internal error whose text must never reach a client.
var errWithPath = fmt.Errorf("open %s: input/output error", strings.Repeat("/secret/path", 2))
