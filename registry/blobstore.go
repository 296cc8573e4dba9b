package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-registry/berth/oci"
)

// DefaultMaxBlobSize bounds one blob (an upload or a monolithic put) when the
// caller passes no limit of its own.
const DefaultMaxBlobSize int64 = 10 << 30

// copyBufferSize is the chunk size of every blob copy: large enough that
// write and hash calls are amortised, small enough to pool.
const copyBufferSize = 1 << 20

// blobAlgorithms are the digest algorithms the store has directories for.
var blobAlgorithms = []string{"sha256", "sha512"}

var copyBufPool = sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}

// BlobStore keeps content-addressed blobs on the local filesystem, under
// <dir>/<alg>/<hex[0:2]>/<hex>. A blob only ever appears there complete and
// verified: it is written to <dir>/tmp, hashed, fsynced, renamed into place,
// and its directory fsynced. Temp files left by a crash are removed when the
// store is opened, so one directory must be opened by one BlobStore at a time.
//
// Every operation that creates, refreshes or removes one blob holds a lock
// striped by digest, which makes "exists? then touch, else rename" and GC's
// "still old? then delete" atomic with respect to each other: a blob that a
// push has just re-uploaded or mounted is never swept from under it.
type BlobStore struct {
	dir string
	tmp string

	locks [256]sync.Mutex
	// fanout remembers the <alg>/<xx> directories known to exist (and to be
	// durable), so that a put does not mkdir and fsync them every time.
	fanout sync.Map

	count atomic.Int64
	bytes atomic.Int64
}

// OpenBlobStore opens (creating if needed) the blob store in dir, removes
// stale temp files and counts the blobs it holds.
func OpenBlobStore(dir string) (*BlobStore, error) {
	s := &BlobStore{dir: dir, tmp: filepath.Join(dir, "tmp")}
	if err := mkdirDurable(dir); err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	for _, alg := range blobAlgorithms {
		if err := mkdirDurable(filepath.Join(dir, alg)); err != nil {
			return nil, fmt.Errorf("open blob store: %w", err)
		}
	}
	// Anything in tmp belongs to a put or copy that never finished: it was
	// never visible as a blob, so it can go.
	if err := os.RemoveAll(s.tmp); err != nil {
		return nil, fmt.Errorf("open blob store: remove stale temp files: %w", err)
	}
	if err := mkdirDurable(s.tmp); err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	var count, size int64
	err := s.Walk(context.Background(), func(_ oci.Digest, n int64, _ time.Time) error {
		count++
		size += n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open blob store: count blobs: %w", err)
	}
	s.count.Store(count)
	s.bytes.Store(size)
	return s, nil
}

// Stat returns the size and modification time of a blob; the error wraps
// oci.ErrNotFound when the store does not have it.
func (s *BlobStore) Stat(d oci.Digest) (size int64, mod time.Time, err error) {
	p, err := s.path(d)
	if err != nil {
		return 0, time.Time{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, time.Time{}, blobError("stat", d, err)
	}
	return fi.Size(), fi.ModTime(), nil
}

// Open opens a blob for reading (an *os.File serves ranges through
// http.ServeContent) and returns its size. The caller closes the file. The
// error wraps oci.ErrNotFound when the store does not have the blob.
func (s *BlobStore) Open(d oci.Digest) (*os.File, int64, error) {
	p, err := s.path(d)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, blobError("open", d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, blobError("stat", d, err)
	}
	return f, fi.Size(), nil
}

// Put streams r into the store as blob d and returns its size. The content
// is hashed as it is written; if it does not hash to d the error wraps
// oci.ErrDigestInvalid and nothing is left behind. More than maxSize bytes
// (DefaultMaxBlobSize when maxSize <= 0) fail with ErrBlobTooLarge. Put
// returns only once the blob is durable. Putting a blob the store already
// has verifies the content, refreshes the blob's mtime and keeps the copy
// on disk.
func (s *BlobStore) Put(ctx context.Context, d oci.Digest, r io.Reader, maxSize int64) (int64, error) {
	if _, err := s.path(d); err != nil {
		return 0, err
	}
	if maxSize <= 0 {
		maxSize = DefaultMaxBlobSize
	}
	f, err := os.CreateTemp(s.tmp, "put-*")
	if err != nil {
		return 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()

	h := d.NewHash()
	n, err := copyLimited(ctx, newWriteback(f), h, r, maxSize)
	if err != nil {
		return 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	if got := oci.DigestFromHash(d.Algorithm(), h); got != d {
		return 0, fmt.Errorf("put blob %s: %w: content hashes to %s", d, oci.ErrDigestInvalid, got)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("put blob %s: sync: %w", d, err)
	}
	done = true
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("put blob %s: close: %w", d, err)
	}
	if err := s.commit(tmp, d, n); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	return n, nil
}

// Ingest moves a complete, verified and fsynced file at tmpPath into the
// store as blob d (a rename and a directory fsync; a copy when tmpPath is on
// another filesystem). When the store already has d, tmpPath is removed and
// the blob's mtime refreshed. Upload sessions finish through Ingest.
func (s *BlobStore) Ingest(tmpPath string, d oci.Digest) error {
	if _, err := s.path(d); err != nil {
		return err
	}
	fi, err := os.Stat(tmpPath)
	if err != nil {
		return fmt.Errorf("ingest blob %s: %w", d, err)
	}
	if err := s.commit(tmpPath, d, fi.Size()); err != nil {
		return fmt.Errorf("ingest blob %s: %w", d, err)
	}
	return nil
}

// Delete removes a blob; the error wraps oci.ErrNotFound when it is absent.
func (s *BlobStore) Delete(d oci.Digest) error {
	_, _, err := s.remove(d, time.Time{})
	return err
}

// Touch sets a blob's mtime to now, so that garbage collection's grace
// period starts again (a HEAD before a push or a cross-repository mount
// means a manifest referencing the blob is probably on its way).
func (s *BlobStore) Touch(d oci.Digest) error {
	p, err := s.path(d)
	if err != nil {
		return err
	}
	mu := s.lock(d)
	mu.Lock()
	defer mu.Unlock()
	if err := touchFile(p); err != nil {
		return blobError("touch", d, err)
	}
	return nil
}

// Walk calls fn for every blob in the store, in no particular order, until
// fn returns an error (which Walk returns) or ctx ends. Blobs put or deleted
// during the walk may or may not be seen.
func (s *BlobStore) Walk(ctx context.Context, fn func(d oci.Digest, size int64, mod time.Time) error) error {
	for _, alg := range blobAlgorithms {
		algDir := filepath.Join(s.dir, alg)
		fans, err := os.ReadDir(algDir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("walk blobs: %w", err)
		}
		for _, fan := range fans {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !fan.IsDir() || len(fan.Name()) != 2 {
				continue
			}
			entries, err := os.ReadDir(filepath.Join(algDir, fan.Name()))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return fmt.Errorf("walk blobs: %w", err)
			}
			for _, e := range entries {
				name := e.Name()
				if !e.Type().IsRegular() || len(name) < 2 || name[:2] != fan.Name() {
					continue
				}
				d, err := oci.ParseDigest(alg + ":" + name)
				if err != nil {
					continue // not a blob of ours; leave it alone
				}
				fi, err := e.Info()
				if err != nil {
					if errors.Is(err, fs.ErrNotExist) {
						continue // deleted since the directory was read
					}
					return fmt.Errorf("walk blobs: %w", err)
				}
				if err := fn(d, fi.Size(), fi.ModTime()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Stats returns the number of blobs and their total size. It is kept up to
// date by every put, ingest and delete, and counted once at open.
func (s *BlobStore) Stats() (count int64, bytes int64) {
	return s.count.Load(), s.bytes.Load()
}

// removeIfOlder deletes blob d if its mtime is still before cutoff,
// checking and deleting under the blob's lock. deleted reports whether the
// file is gone (it may be with an error, when the directory fsync failed);
// a blob refreshed since the caller looked is left alone.
func (s *BlobStore) removeIfOlder(d oci.Digest, cutoff time.Time) (freed int64, deleted bool, err error) {
	return s.remove(d, cutoff)
}

// remove deletes blob d, only if its mtime is before cutoff unless cutoff
// is zero, and returns its size and whether it removed the file.
func (s *BlobStore) remove(d oci.Digest, cutoff time.Time) (int64, bool, error) {
	p, err := s.path(d)
	if err != nil {
		return 0, false, err
	}
	mu := s.lock(d)
	mu.Lock()
	defer mu.Unlock()
	fi, err := os.Stat(p)
	if err != nil {
		return 0, false, blobError("delete", d, err)
	}
	if !cutoff.IsZero() && !fi.ModTime().Before(cutoff) {
		return 0, false, nil
	}
	if err := os.Remove(p); err != nil {
		return 0, false, blobError("delete", d, err)
	}
	s.count.Add(-1)
	s.bytes.Add(-fi.Size())
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fi.Size(), true, fmt.Errorf("delete blob %s: %w", d, err)
	}
	return fi.Size(), true, nil
}

// commit makes the durable file tmp visible as blob d. If d exists already,
// tmp is removed and d's mtime refreshed, both under d's lock so that a
// concurrent GC cannot delete d between the check and the refresh.
func (s *BlobStore) commit(tmp string, d oci.Digest, size int64) error {
	p, err := s.path(d)
	if err != nil {
		return err
	}
	mu := s.lock(d)
	mu.Lock()
	defer mu.Unlock()
	err = touchFile(p)
	if err == nil {
		if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove duplicate: %w", err)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := s.ensureFanout(filepath.Dir(p)); err != nil {
		return err
	}
	err = os.Rename(tmp, p)
	if errors.Is(err, syscall.EXDEV) {
		err = s.copyAcross(tmp, p)
	}
	if err != nil {
		return err
	}
	s.count.Add(1)
	s.bytes.Add(size)
	return syncDir(filepath.Dir(p))
}

// copyAcross is commit's fallback when tmp lives on another filesystem: copy
// it into the store's own temp directory, fsync, rename, then remove tmp.
func (s *BlobStore) copyAcross(tmp, p string) error {
	src, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.CreateTemp(s.tmp, "copy-*")
	if err != nil {
		return err
	}
	bp := copyBufPool.Get().(*[]byte)
	_, err = io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	copyBufPool.Put(bp)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(dst.Name(), p)
	}
	if err != nil {
		os.Remove(dst.Name())
		return err
	}
	return os.Remove(tmp)
}

// ensureFanout creates a blob's <alg>/<xx> directory, fsyncing its parent
// when it creates it, and remembers that it exists.
func (s *BlobStore) ensureFanout(dir string) error {
	if _, ok := s.fanout.Load(dir); ok {
		return nil
	}
	err := os.Mkdir(dir, 0o755)
	switch {
	case err == nil:
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrExist):
		return err
	}
	s.fanout.Store(dir, struct{}{})
	return nil
}

// path validates d and returns where the blob lives. Validating here means
// that no Digest built by hand can name a file outside the store.
func (s *BlobStore) path(d oci.Digest) (string, error) {
	if _, err := oci.ParseDigest(string(d)); err != nil {
		return "", err
	}
	hx := d.Hex()
	return filepath.Join(s.dir, d.Algorithm(), hx[:2], hx), nil
}

// lock returns the stripe lock of d (the first byte of its hex).
func (s *BlobStore) lock(d oci.Digest) *sync.Mutex {
	i, _ := strconv.ParseUint(d.Hex()[:2], 16, 8)
	return &s.locks[i]
}

// blobError wraps a filesystem error of blob d, mapping absence to
// oci.ErrNotFound. The path is left out so the message can reach a client.
func blobError(op string, d oci.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s blob %s: %w", op, d, oci.ErrNotFound)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s blob %s: %w", op, d, err)
}

// copyLimited copies r to w, and to h when h is not nil, in chunks of up
// to 1 MiB from a pooled buffer, stopping when ctx ends. It fails with
// ErrBlobTooLarge if r holds more than limit bytes. Each chunk is written to
// w and hashed at the same time, so a put costs the longer of the two, not
// their sum.
func copyLimited(ctx context.Context, w, h io.Writer, r io.Reader, limit int64) (int64, error) {
	if limit < 0 {
		limit = 0
	}
	read := limit
	if read < 1<<62 {
		read++ // one byte more than allowed reveals an oversize body
	}
	src := io.LimitReader(ctxReader{ctx, r}, read)
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		m, rerr := io.ReadFull(src, buf)
		if m > 0 {
			if n+int64(m) > limit {
				return n, fmt.Errorf("%w: more than %d bytes", ErrBlobTooLarge, limit)
			}
			if err := writeBoth(w, h, buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		}
	}
}

// writeBoth writes chunk to w and h, in parallel when both are set and the
// chunk is large enough to be worth a goroutine.
func writeBoth(w, h io.Writer, chunk []byte) error {
	if h == nil || len(chunk) < 64<<10 {
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		if h != nil {
			h.Write(chunk) // hashes never fail
		}
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(chunk)
		done <- err
	}()
	h.Write(chunk)
	return <-done
}

// ctxReader fails reads once ctx has ended, so a copy stops between chunks.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo so io.CopyBuffer uses the
// pooled buffer.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// touchFile sets p's access and modification times to now.
func touchFile(p string) error {
	now := time.Now()
	return os.Chtimes(p, now, now)
}

// syncDir fsyncs a directory, making the entries created, renamed or
// removed in it durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	return nil
}

// mkdirDurable creates dir if it is missing and fsyncs its parent.
func mkdirDurable(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		if err := mkdirDurable(filepath.Dir(dir)); err != nil {
			return err
		}
		err = os.Mkdir(dir, 0o755)
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(filepath.Dir(dir))
}
