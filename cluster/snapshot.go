package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// snapshot is a read transaction on the state file. Persist streams the
// file as that transaction sees it, so applies may continue meanwhile.
//
// An open snapshot keeps bbolt from closing the file, and Raft may hold one
// while it waits for its main loop (takeSnapshot asks it for the
// configuration) — the loop that, on a follower installing a snapshot from
// the leader, waits for Restore, which must close the file. So Restore (and
// close) abandon the open snapshots first: their Persist then fails, and
// Raft takes another one later.
type snapshot struct {
	mu   sync.Mutex
	done bool
	tx   *bbolt.Tx
	f    *fsm
}

var _ raft.FSMSnapshot = (*snapshot)(nil)

// errSnapshotAbandoned: the state was replaced (or closed) before the
// snapshot was persisted.
var errSnapshotAbandoned = errors.New("snapshot abandoned: the state was restored or closed meanwhile")

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		sink.Cancel()
		return errSnapshotAbandoned
	}
	defer s.releaseLocked()
	if _, err := s.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return nil
}

// Release ends the read transaction; it is safe to call more than once. A
// Persist in progress finishes first.
func (s *snapshot) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *snapshot) releaseLocked() {
	if s.done {
		return
	}
	s.done = true
	_ = s.tx.Rollback()
	s.f.snapMu.Lock()
	delete(s.f.snaps, s)
	s.f.snapMu.Unlock()
}

// abandonSnapshots releases every snapshot not yet persisted (see
// snapshot).
func (f *fsm) abandonSnapshots() {
	f.snapMu.Lock()
	open := make([]*snapshot, 0, len(f.snaps))
	for s := range f.snaps {
		open = append(open, s)
	}
	f.snapMu.Unlock()
	for _, s := range open {
		s.Release()
	}
}

// writeFileSync writes r to a new file at path and fsyncs it.
func writeFileSync(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		removeQuiet(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		removeQuiet(path)
		return err
	}
	if err := f.Close(); err != nil {
		removeQuiet(path)
		return err
	}
	return nil
}

// renameSync renames from over to and fsyncs the directory, so the rename
// survives a crash.
func renameSync(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(to))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func removeQuiet(path string) { _ = os.Remove(path) }

// writeFileAtomic replaces path with b durably: a temp file beside it,
// fsynced, renamed over path, the directory fsynced.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, bytes.NewReader(b)); err != nil {
		return err
	}
	if err := renameSync(tmp, path); err != nil {
		removeQuiet(tmp)
		return err
	}
	return nil
}
