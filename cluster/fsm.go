package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// fsm is the state machine: a bbolt file that every node changes only by
// applying the Raft log, in order, deterministically.
type fsm struct {
	path   string
	logger *slog.Logger
	boot   string // kernel boot id (see statefile.go)
	noSync bool   // the file is not fsynced per apply, and guarded

	// mu guards db, which Restore swaps. Apply, Snapshot and Restore run on
	// raft's FSM goroutine; reads run anywhere and take mu.RLock.
	mu sync.RWMutex
	db *bbolt.DB

	applied atomic.Uint64 // index of the last entry applied (or skipped as applied)

	// notifyMu guards notify, a channel closed (and replaced) whenever
	// applied moves, so that waiters need not poll.
	notifyMu sync.Mutex
	notify   chan struct{}

	// applyBytes counts the command bytes applied since the last snapshot,
	// and lastSnapshot is when that was (unix nanoseconds), for the size and
	// age triggers of snapshots.
	applyBytes   atomic.Int64
	lastSnapshot atomic.Int64
	// onApplied, when set, is called after each batch commits with the
	// blobs that the batch's manifests reference (for blob repair). It runs
	// on raft's FSM goroutine and must not block.
	onApplied func(blobs []oci.Digest)

	// snaps are the snapshots not yet persisted or released.
	snapMu sync.Mutex
	snaps  map[*snapshot]struct{}
}

// appliedCh returns a channel that is closed once applied next moves.
func (f *fsm) appliedCh() <-chan struct{} {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	if f.notify == nil {
		f.notify = make(chan struct{})
	}
	return f.notify
}

// setApplied records the applied index and wakes the waiters.
func (f *fsm) setApplied(idx uint64) {
	f.applied.Store(idx)
	f.notifyMu.Lock()
	if f.notify != nil {
		close(f.notify)
		f.notify = nil
	}
	f.notifyMu.Unlock()
}

// initialMmapSize is the state file's initial memory map.
const initialMmapSize = 1 << 30

// storageError marks a failure of bbolt itself inside apply, as opposed to a
// command that is rejected. It aborts the whole batch.
type storageError struct{ err error }

func (e *storageError) Error() string { return "state storage: " + e.err.Error() }
func (e *storageError) Unwrap() error { return e.err }

// openDB opens a state file; noSync skips bbolt's fsyncs (see statefile.go).
func openDB(path string, noSync bool) (*bbolt.DB, error) {
	// A bbolt write that must grow the memory map waits for every open read
	// transaction, and a snapshot keeps one open while it streams. A large
	// initial map (address space, not memory) keeps applies from stalling
	// behind a snapshot until the file outgrows it.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, InitialMmapSize: initialMmapSize, NoSync: noSync})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init state %s: %w", path, err)
	}
	return db, nil
}

// openFSM opens (or creates) the state file at path. Unless the platform
// has no boot id, the file is written without fsync and guarded (see
// statefile.go): one that cannot be trusted is set aside and starts empty,
// and Raft restores it from the snapshot and the log.
func openFSM(path string, logger *slog.Logger) (*fsm, error) {
	boot := bootID()
	if ok, why := trustState(path, boot); !ok {
		if err := setAside(path, logger, why); err != nil {
			return nil, err
		}
	}
	noSync := boot != ""
	db, err := openDB(path, noSync)
	if err != nil {
		return nil, err
	}
	if noSync {
		if err := writeGuard(path, boot, false); err != nil {
			db.Close()
			return nil, fmt.Errorf("state guard: %w", err)
		}
	}
	f := &fsm{path: path, logger: logger, db: db, boot: boot, noSync: noSync}
	idx, _, err := f.appliedMeta()
	if err != nil {
		db.Close()
		return nil, err
	}
	f.applied.Store(idx)
	return f, nil
}

// close syncs and closes the state file and marks it cleanly closed.
func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		return nil
	}
	f.abandonSnapshots()
	var err error
	if f.noSync {
		err = f.db.Sync()
	}
	if cerr := f.db.Close(); err == nil {
		err = cerr
	}
	f.db = nil
	if err == nil && f.noSync {
		err = writeGuard(f.path, f.boot, true)
	}
	return err
}

// view runs fn in a read transaction of the current state.
func (f *fsm) view(fn func(tx *bbolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	return f.db.View(fn)
}

// appliedMeta reads the applied index and term stored in the state file.
func (f *fsm) appliedMeta() (index, term uint64, err error) {
	err = f.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		index = decodeUint(b.Get(metaAppliedIndex))
		term = decodeUint(b.Get(metaAppliedTerm))
		return nil
	})
	return index, term, err
}

// Apply applies one entry; see ApplyBatch.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in one bbolt transaction that also
// records the index and term of the last of them. Entries at or below the
// stored applied index were applied before (a restart replays the log) and
// are skipped; entries that are not commands only advance the index.
//
// Each response is nil or the error a rejected command got; a rejected
// command has written nothing. A failure of the storage itself cannot be
// rolled back for one entry only and would leave this node behind the log
// it acknowledged, so it panics: the node restarts and replays.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		for i := range resp {
			resp[i] = ErrClosed
		}
		return resp
	}
	if len(logs) == 0 || logs[len(logs)-1].Index <= f.applied.Load() {
		return resp // a replay of entries this file already holds
	}
	var last uint64
	var blobs []oci.Digest
	err := f.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		applied := decodeUint(meta.Get(metaAppliedIndex))
		var lastLog *raft.Log
		for i, l := range logs {
			if l.Index <= applied {
				continue
			}
			lastLog = l
			if l.Type != raft.LogCommand {
				continue
			}
			f.applyBytes.Add(int64(len(l.Data)))
			r := applyCommand(tx, l.Data, &blobs)
			var se *storageError
			if errors.As(r, &se) {
				return se
			}
			if r != nil {
				resp[i] = r
			}
		}
		if lastLog == nil {
			last = applied
			return nil
		}
		last = lastLog.Index
		if err := meta.Put(metaAppliedIndex, encodeUint(lastLog.Index)); err != nil {
			return err
		}
		return meta.Put(metaAppliedTerm, encodeUint(lastLog.Term))
	})
	if err != nil {
		panic(fmt.Sprintf("cluster: apply raft entries %d..%d to %s: %v", logs[0].Index, logs[len(logs)-1].Index, f.path, err))
	}
	f.setApplied(last)
	if f.onApplied != nil && len(blobs) > 0 {
		f.onApplied(blobs)
	}
	return resp
}

// Snapshot starts a read transaction; its Persist streams a consistent copy
// of the state file while applies go on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, ErrClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	f.applyBytes.Store(0)
	f.lastSnapshot.Store(time.Now().UnixNano())
	snap := &snapshot{tx: tx, f: f}
	f.snapMu.Lock()
	if f.snaps == nil {
		f.snaps = map[*snapshot]struct{}{}
	}
	f.snaps[snap] = struct{}{}
	f.snapMu.Unlock()
	return snap, nil
}

// Restore replaces the state file with a snapshot's copy: it writes the
// stream to a temporary file, fsyncs it, closes the current file, renames
// the copy over it and reopens it. The applied index becomes the one the
// snapshot recorded.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.path + ".restore"
	if err := writeFileSync(tmp, rc); err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	// Check the copy is a state file before dropping the current one.
	check, err := openDB(tmp, true)
	if err != nil {
		removeQuiet(tmp)
		return fmt.Errorf("restore state: %w", err)
	}
	if err := check.Close(); err != nil {
		removeQuiet(tmp)
		return fmt.Errorf("restore state: %w", err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.abandonSnapshots()
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			return fmt.Errorf("restore state: close current: %w", err)
		}
		f.db = nil
	}
	if err := renameSync(tmp, f.path); err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	db, err := openDB(f.path, f.noSync)
	if err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	f.db = db
	var idx uint64
	if err := db.View(func(tx *bbolt.Tx) error {
		idx = decodeUint(tx.Bucket(bucketMeta).Get(metaAppliedIndex))
		return nil
	}); err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	f.setApplied(idx)
	f.applyBytes.Store(0)
	f.logger.Info("state restored from snapshot", "applied_index", idx)
	return nil
}
