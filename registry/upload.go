package registry

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/berth-registry/berth/oci"
)

// Errors of blob storage and upload sessions. The OCI error table maps them:
// ErrUploadUnknown → BLOB_UPLOAD_UNKNOWN (404), ErrRangeInvalid → 416 with
// the session's current Range, ErrBlobTooLarge → SIZE_INVALID / 413.
var (
	// ErrUploadUnknown: no open upload session has this id in this
	// repository (or the id is not a well-formed session id).
	ErrUploadUnknown = errors.New("blob upload unknown")
	// ErrRangeInvalid: a chunk does not start at the session's offset, or a
	// Content-Range header is malformed.
	ErrRangeInvalid = errors.New("requested range not satisfiable")
	// ErrBlobTooLarge: a blob exceeds the configured maximum blob size.
	ErrBlobTooLarge = errors.New("blob too large")
)

// UploadState is what a client may know about an upload session: Offset is
// the number of bytes received and durably recorded.
type UploadState struct {
	ID, Repo         string
	Offset           int64
	Started, Updated time.Time
}

// Uploads keeps resumable upload sessions on disk, as flat files in one
// directory: <dir>/<uuid>.json holds the acknowledged offset and the sha256
// state at that offset, <dir>/<uuid> the bytes received. The data file is
// created by the first chunk, so a session that never gets one (a POST then
// a PUT with the whole blob, how clients push small blobs) costs one file
// create and one unlink, and no directory.
//
// Invariants:
//   - <uuid>.json is replaced atomically (temp, fsync, rename, fsync of the
//     uploads directory) and only after the bytes it counts are fsynced in
//     the data file, so the recorded offset never exceeds what is durable.
//     The directory fsync also makes the data file's own entry durable.
//   - a new session (offset 0) is written but not fsynced: it survives a
//     process crash (the page cache does), and a power loss can only lose a
//     session that holds no acknowledged byte, which recovery then removes
//     or the client restarts (see DESIGN.md, "Upload durability").
//   - the bytes up to the recorded offset are durable in data, so finishing
//     without a final chunk needs no further data fsync.
//   - a chunk is all or nothing: a failed Append (client gone, too large,
//     ctx ended, I/O error) leaves the session at its previous offset.
//   - after a crash, OpenUploads truncates data back to the recorded offset;
//     bytes that were never acknowledged are never reported.
//   - a session's data reaches the BlobStore only verified and fsynced, by
//     BlobStore.Ingest, so open sessions never hold anything GC could sweep.
type Uploads struct {
	dir   string
	blobs *BlobStore
	max   int64
	// prefix, when set, replaces the first uploadTagLen characters of new
	// session ids: in a cluster it names the node that holds the session.
	prefix string

	mu       sync.Mutex
	sessions map[string]*session
}

// session is one open upload. busy (a one-slot semaphore) serialises the
// operations that touch data; mu guards the fields below it, so that Get
// answers at once even while a long PATCH streams.
type session struct {
	data  string // <uploads>/<uuid>; absent until the first chunk
	state string // <uploads>/<uuid>.json
	busy  chan struct{}

	mu        sync.Mutex
	st        UploadState
	hashState []byte // sha256 state after exactly st.Offset bytes; nil when unknown
	gone      bool
}

// uploadRecord is the on-disk form of a session (<uuid>.json).
type uploadRecord struct {
	Version    int       `json:"version"`
	ID         string    `json:"id"`
	Repo       string    `json:"repo"`
	Offset     int64     `json:"offset"`
	Started    time.Time `json:"started"`
	Updated    time.Time `json:"updated"`
	HashOffset int64     `json:"hash_offset"`
	HashState  []byte    `json:"sha256_state,omitempty"`
}

const (
	uploadRecordVersion = 1
	uploadStateSuffix   = ".json"
)

func newSession(dir, id string) *session {
	p := filepath.Join(dir, id)
	return &session{data: p, state: p + uploadStateSuffix, busy: make(chan struct{}, 1)}
}

// OpenUploads opens (creating if needed) the uploads directory dir, whose
// finished uploads go into blobs, and recovers the sessions a previous run
// left: each is truncated back to its recorded offset; sessions without a
// readable state or with less data than recorded are removed, as is anything
// else in dir. maxBlobSize <= 0 means DefaultMaxBlobSize. dir should be on
// the same filesystem as the blob store, so that finishing is a rename.
func OpenUploads(dir string, blobs *BlobStore, maxBlobSize int64) (*Uploads, error) {
	if blobs == nil {
		return nil, errors.New("open uploads: no blob store")
	}
	if maxBlobSize <= 0 {
		maxBlobSize = DefaultMaxBlobSize
	}
	u := &Uploads{dir: dir, blobs: blobs, max: maxBlobSize, sessions: map[string]*session{}}
	if err := mkdirDurable(dir); err != nil {
		return nil, fmt.Errorf("open uploads: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open uploads: %w", err)
	}
	// First the state files: they decide which sessions exist.
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), uploadStateSuffix)
		if !ok || !e.Type().IsRegular() || !validUploadID(id) {
			continue
		}
		s, err := recoverSession(dir, id)
		if err != nil {
			return nil, fmt.Errorf("open uploads: recover session %s: %w", id, err)
		}
		if s != nil {
			u.sessions[id] = s
		}
	}
	// Then everything else that no live session owns: data without a state
	// (Create crashed, or the state was untrusted), temp files of an
	// interrupted state write, the directories of the old layout, strays.
	removed := false
	for _, e := range entries {
		n := e.Name()
		id := strings.TrimSuffix(n, uploadStateSuffix)
		if s := u.sessions[id]; s != nil && e.Type().IsRegular() {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return nil, fmt.Errorf("open uploads: %w", err)
		}
		removed = true
	}
	// Sessions that Create wrote without fsync and a crash left behind are
	// made durable once here, so their first chunk need not.
	if removed || len(u.sessions) > 0 {
		if err := syncDir(dir); err != nil {
			return nil, fmt.Errorf("open uploads: %w", err)
		}
	}
	return u, nil
}

// recoverSession loads session id of the uploads directory dir, truncating
// its data to the recorded offset. It returns nil, nil when the session
// cannot be trusted and should be removed (its state does not parse, or its
// data is short); OpenUploads then removes its files.
func recoverSession(dir, id string) (*session, error) {
	s := newSession(dir, id)
	b, err := os.ReadFile(s.state)
	if err != nil {
		return nil, err
	}
	var rec uploadRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.ID != id || rec.Offset < 0 {
		return nil, nil
	}
	s.st = UploadState{
		ID: rec.ID, Repo: rec.Repo, Offset: rec.Offset,
		Started: rec.Started, Updated: rec.Updated,
	}
	if rec.HashOffset == rec.Offset && validSHA256State(rec.HashState) {
		s.hashState = rec.HashState
	}
	f, err := os.OpenFile(s.data, os.O_WRONLY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && rec.Offset == 0 {
			return s, nil // no chunk yet: the data file comes with the first
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // acknowledged bytes are missing: unusable
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch {
	case fi.Size() < rec.Offset:
		return nil, nil // acknowledged bytes are missing: unusable
	case fi.Size() > rec.Offset:
		// Bytes written but never acknowledged (a crash between the data
		// write and the state write): forget them.
		if err := f.Truncate(rec.Offset); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Create opens a new session for repo. It writes the session's state file
// only (the data file comes with the first chunk) and does not fsync it: a new session
// holds no acknowledged byte, so it must survive a process crash (the page
// cache does) but not a power loss (the client starts again). The first
// chunk makes it durable.
func (u *Uploads) Create(repo string, now time.Time) (UploadState, error) {
	id := uuid.NewString()
	if u.prefix != "" {
		id = u.prefix + id[uploadTagLen:]
	}
	s := newSession(u.dir, id)
	st := UploadState{ID: id, Repo: repo, Started: now, Updated: now}
	h := sha256.New()
	hs, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err == nil {
		err = createUploadState(s.state, st, hs)
	}
	if err != nil {
		return UploadState{}, fmt.Errorf("create upload: %w", err)
	}
	s.st, s.hashState = st, hs
	u.mu.Lock()
	u.sessions[id] = s
	u.mu.Unlock()
	return st, nil
}

// uploadTagLen is the length of the node tag that starts a session id in
// a cluster: the first group of the UUID's hex digits.
const uploadTagLen = 8

// SetIDPrefix makes new session ids start with tag (uploadTagLen lowercase
// hex digits), so that any node of a cluster can tell which node holds a
// session. Call it before the first Create.
func (u *Uploads) SetIDPrefix(tag string) {
	if len(tag) == uploadTagLen && validUploadID(tag+"-0000-0000-0000-000000000000") {
		u.prefix = tag
	}
}

// Get returns the state of session id of repo. It does not wait for a chunk
// being received: it reports the last recorded offset.
func (u *Uploads) Get(repo, id string) (UploadState, error) {
	s, err := u.lookup(repo, id)
	if err != nil {
		return UploadState{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return UploadState{}, ErrUploadUnknown
	}
	return s.st, nil
}

// Append writes the bytes of r at the session's offset. start is the first
// byte's offset as the client's Content-Range says, or -1 for a streamed
// chunk; a start other than the current offset fails with ErrRangeInvalid.
// Appends to one session are serialised: a second one waits for the first
// and then sees its offset. The chunk is fsynced before its new offset is
// recorded and returned; on any error the session keeps its previous offset.
func (u *Uploads) Append(ctx context.Context, repo, id string, r io.Reader, start int64, now time.Time) (UploadState, error) {
	s, err := u.lookup(repo, id)
	if err != nil {
		return UploadState{}, err
	}
	if err := s.acquire(ctx); err != nil {
		return UploadState{}, err
	}
	defer s.release()
	st, hs, ok := s.snapshot()
	if !ok {
		return UploadState{}, ErrUploadUnknown
	}
	if start >= 0 && start != st.Offset {
		return st, fmt.Errorf("%w: chunk starts at %d, upload is at %d", ErrRangeInvalid, start, st.Offset)
	}
	n, nextHS, err := u.writeChunk(ctx, s, st.Offset, hs, r)
	if err != nil {
		return st, fmt.Errorf("append to upload %s: %w", id, err)
	}
	next := st
	next.Offset += n
	next.Updated = now
	renamed, err := writeUploadState(u.dir, s.state, next, nextHS)
	if err != nil && !renamed {
		truncateData(s.data, st.Offset)
		return st, fmt.Errorf("append to upload %s: %w", id, err)
	}
	// Once the state file is replaced the new offset is what a restart sees, so
	// memory follows even if the directory fsync failed.
	s.mu.Lock()
	s.st, s.hashState = next, nextHS
	s.mu.Unlock()
	if err != nil {
		return next, fmt.Errorf("append to upload %s: %w", id, err)
	}
	return next, nil
}

// Finish appends final (which may be nil), checks that the session's
// content hashes to d, moves it into the blob store and closes the session.
// It returns the blob's size.
//
// A digest mismatch wraps oci.ErrDigestInvalid and removes the session, as
// distribution does: the client sent every byte it meant to, so nothing is
// left to resume, and the disk space comes back at once. Any other failure
// (too large, ctx ended, I/O) leaves the session as it was before the call,
// so the client can retry.
//
// sha256 uploads verify from the hash state kept since the first byte (also
// across restarts); sha512 uploads, or sessions whose state was lost, are
// rehashed from disk.
func (u *Uploads) Finish(ctx context.Context, repo, id string, d oci.Digest, final io.Reader, now time.Time) (size int64, err error) {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return 0, err
	}
	s, err := u.lookup(repo, id)
	if err != nil {
		return 0, err
	}
	if err := s.acquire(ctx); err != nil {
		return 0, err
	}
	defer s.release()
	st, hs, ok := s.snapshot()
	if !ok {
		return 0, ErrUploadUnknown
	}
	if final == nil {
		final = strings.NewReader("")
	}
	if st.Offset == 0 {
		// Nothing acknowledged yet (a POST then a PUT with the whole blob,
		// as clients push small blobs): the session's data holds nothing
		// worth keeping, so the body goes straight into the blob store,
		// which hashes, fsyncs, renames and fsyncs the directory once.
		size, err := u.blobs.Put(ctx, d, final, u.max)
		if err != nil {
			if errors.Is(err, oci.ErrDigestInvalid) {
				u.remove(s)
			}
			return 0, fmt.Errorf("finish upload %s: %w", id, err)
		}
		u.remove(s)
		return size, nil
	}
	// writeChunk also truncates any stray tail; it fsyncs only when it
	// changed the data, since the bytes up to st.Offset are durable.
	n, finalHS, err := u.writeChunk(ctx, s, st.Offset, hs, final)
	if err != nil {
		return 0, fmt.Errorf("finish upload %s: %w", id, err)
	}
	size = st.Offset + n
	data := s.data

	var got oci.Digest
	if d.Algorithm() == "sha256" && finalHS != nil {
		h, err := restoreSHA256(finalHS)
		if err != nil {
			truncateData(s.data, st.Offset)
			return 0, fmt.Errorf("finish upload %s: %w", id, err)
		}
		got = oci.DigestFromHash("sha256", h)
	} else {
		got, err = hashFile(ctx, data, d.Algorithm(), size)
		if err != nil {
			truncateData(s.data, st.Offset)
			return 0, fmt.Errorf("finish upload %s: %w", id, err)
		}
	}
	if got != d {
		u.remove(s)
		return 0, fmt.Errorf("finish upload %s: %w: content hashes to %s", id, oci.ErrDigestInvalid, got)
	}
	if err := u.blobs.Ingest(data, d); err != nil {
		if _, serr := os.Stat(data); serr == nil {
			truncateData(s.data, st.Offset) // still ours: roll back the final chunk
		} else {
			u.remove(s)
		}
		return 0, fmt.Errorf("finish upload %s: %w", id, err)
	}
	u.remove(s)
	return size, nil
}

// Cancel removes session id of repo and its data. It waits for a chunk
// being received to end.
func (u *Uploads) Cancel(repo, id string) error {
	s, err := u.lookup(repo, id)
	if err != nil {
		return err
	}
	if err := s.acquire(context.Background()); err != nil {
		return err
	}
	defer s.release()
	if _, _, ok := s.snapshot(); !ok {
		return ErrUploadUnknown
	}
	if err := u.remove(s); err != nil {
		return fmt.Errorf("cancel upload %s: %w", id, err)
	}
	return nil
}

// Purge removes the sessions last updated before olderThan, skipping any
// receiving a chunk right now, and returns how many it removed.
func (u *Uploads) Purge(olderThan time.Time) (int, error) {
	u.mu.Lock()
	all := make([]*session, 0, len(u.sessions))
	for _, s := range u.sessions {
		all = append(all, s)
	}
	u.mu.Unlock()
	purged := 0
	var errs []error
	for _, s := range all {
		select {
		case s.busy <- struct{}{}:
		default:
			continue // in use, so not idle
		}
		st, _, ok := s.snapshot()
		if ok && st.Updated.Before(olderThan) {
			if err := u.remove(s); err != nil {
				errs = append(errs, err)
			} else {
				purged++
			}
		}
		s.release()
	}
	if err := errors.Join(errs...); err != nil {
		return purged, fmt.Errorf("purge uploads: %w", err)
	}
	return purged, nil
}

// Open returns the number of open sessions.
func (u *Uploads) Open() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sessions)
}

// lookup finds session id and checks that it belongs to repo. An id that is
// not a canonical lowercase UUID is unknown before it comes near a path.
func (u *Uploads) lookup(repo, id string) (*session, error) {
	if !validUploadID(id) {
		return nil, ErrUploadUnknown
	}
	u.mu.Lock()
	s, ok := u.sessions[id]
	u.mu.Unlock()
	if !ok {
		return nil, ErrUploadUnknown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone || s.st.Repo != repo {
		return nil, ErrUploadUnknown
	}
	return s, nil
}

// remove forgets session s and deletes its files; the caller holds
// s.busy. The removal is not fsynced: a session that a power loss brings
// back is either incomplete (recovery removes it) or an idle session that
// Purge removes; neither is ever reported as a blob.
func (u *Uploads) remove(s *session) error {
	s.mu.Lock()
	s.gone = true
	id := s.st.ID
	s.mu.Unlock()
	u.mu.Lock()
	delete(u.sessions, id)
	u.mu.Unlock()
	err := os.Remove(s.state)
	if derr := os.Remove(s.data); derr != nil && !errors.Is(derr, fs.ErrNotExist) && err == nil {
		err = derr
	}
	return err
}

// writeChunk writes r to the session's data at off, hashing it on from hs
// when hs is known, and fsyncs. Data beyond off (a stray tail of a failed
// chunk) is cut first. On error the data is cut back to off. It returns the
// number of bytes written and the hash state after them (nil if unknown).
// When it neither cut nor wrote anything the data is as durable as before
// and it does not fsync.
func (u *Uploads) writeChunk(ctx context.Context, s *session, off int64, hs []byte, r io.Reader) (int64, []byte, error) {
	f, err := os.OpenFile(s.data, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	changed := fi.Size() != off
	if changed {
		if err := f.Truncate(off); err != nil {
			return 0, nil, err
		}
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, nil, err
	}
	var h sha256State
	var hw io.Writer // stays a nil interface when the hash is unknown
	if hs != nil {
		if rh, err := restoreSHA256(hs); err == nil {
			h, hw = rh, rh
		}
	}
	n, err := copyLimited(ctx, newWriteback(f), hw, r, u.max-off)
	if err == nil && (changed || n > 0 || off == 0) {
		err = f.Sync()
	}
	if err != nil {
		if terr := f.Truncate(off); terr == nil {
			f.Sync()
		}
		return 0, nil, err
	}
	if h == nil {
		return n, nil, nil
	}
	next, err := h.MarshalBinary()
	if err != nil {
		return n, nil, nil // verification will rehash the file
	}
	return n, next, nil
}

// acquire takes the session's data lock, giving up when ctx ends.
func (s *session) acquire(ctx context.Context) error {
	select {
	case s.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *session) release() { <-s.busy }

// snapshot returns the recorded state, and false once the session is gone.
func (s *session) snapshot() (UploadState, []byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st, s.hashState, !s.gone
}

// writeUploadState replaces the state file p in the uploads directory dir
// atomically. renamed reports whether the new state replaced the old one
// (an error after that is the directory fsync).
func writeUploadState(dir, p string, st UploadState, hs []byte) (renamed bool, err error) {
	b, err := json.Marshal(uploadRecord{
		Version: uploadRecordVersion,
		ID:      st.ID, Repo: st.Repo, Offset: st.Offset,
		Started: st.Started, Updated: st.Updated,
		HashOffset: st.Offset, HashState: hs,
	})
	if err != nil {
		return false, err
	}
	f, err := os.CreateTemp(dir, st.ID+"-*.tmp")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, syncDir(dir)
}

// createUploadState writes a new session's state file p without fsync (see
// Create). A crash while writing leaves a file recovery cannot parse, and
// recovery removes such a session, which no client was told about.
func createUploadState(p string, st UploadState, hs []byte) error {
	b, err := json.Marshal(uploadRecord{
		Version: uploadRecordVersion,
		ID:      st.ID, Repo: st.Repo, Offset: st.Offset,
		Started: st.Started, Updated: st.Updated,
		HashOffset: st.Offset, HashState: hs,
	})
	if err != nil {
		return err
	}
	return createFile(p, b)
}

// createFile creates p, which must not exist, holding b; it does not fsync.
func createFile(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if len(b) > 0 {
		_, err = f.Write(b)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// truncateData cuts a session's data back to off after a failed operation.
// It is best effort: the next chunk, Finish and recovery cut it again.
func truncateData(p string, off int64) {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if f.Truncate(off) == nil {
		f.Sync()
	}
}

// hashFile hashes the first size bytes of p with alg.
func hashFile(ctx context.Context, p, alg string, size int64) (oci.Digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := oci.NewHash(alg)
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	n, err := io.CopyBuffer(onlyWriter{h}, io.LimitReader(ctxReader{ctx, f}, size), *bp)
	if err != nil {
		return "", err
	}
	if n != size {
		return "", fmt.Errorf("upload data is %d bytes, expected %d", n, size)
	}
	return oci.DigestFromHash(alg, h), nil
}

// sha256State is a sha256 hash whose state can be saved.
type sha256State interface {
	hash.Hash
	encoding.BinaryMarshaler
}

// restoreSHA256 rebuilds a sha256 hash from its marshalled state.
func restoreSHA256(state []byte) (sha256State, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("restore sha256 state: %w", err)
	}
	return h.(sha256State), nil
}

func validSHA256State(state []byte) bool {
	if state == nil {
		return false
	}
	_, err := restoreSHA256(state)
	return err == nil
}

// validUploadID reports whether id is a canonical, lowercase UUID
// (8-4-4-4-12 hex digits), the only form Create hands out.
func validUploadID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}
