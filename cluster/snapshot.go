package cluster

import (
	"bytes"
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
type snapshot struct {
	once sync.Once
	tx   *bbolt.Tx
}

var _ raft.FSMSnapshot = (*snapshot)(nil)

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	defer s.Release()
	if _, err := s.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return nil
}

// Release ends the read transaction; it is safe to call more than once.
func (s *snapshot) Release() {
	s.once.Do(func() { _ = s.tx.Rollback() })
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
