package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
)

func newTestBlobStore(t testing.TB) (*BlobStore, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := OpenBlobStore(dir)
	if err != nil {
		t.Fatalf("OpenBlobStore: %v", err)
	}
	return s, dir
}

func storeSHA256(b []byte) oci.Digest {
	sum := sha256.Sum256(b)
	return oci.Digest("sha256:" + hex.EncodeToString(sum[:]))
}

func storeSHA512(b []byte) oci.Digest {
	sum := sha512.Sum512(b)
	return oci.Digest("sha512:" + hex.EncodeToString(sum[:]))
}

func storePut(t testing.TB, s *BlobStore, content []byte) oci.Digest {
	t.Helper()
	d := storeSHA256(content)
	n, err := s.Put(context.Background(), d, bytes.NewReader(content), 0)
	if err != nil {
		t.Fatalf("Put %s: %v", d, err)
	}
	if n != int64(len(content)) {
		t.Fatalf("Put %s: size %d, want %d", d, n, len(content))
	}
	return d
}

func assertStoreStats(t *testing.T, s *BlobStore, count, size int64) {
	t.Helper()
	if c, b := s.Stats(); c != count || b != size {
		t.Fatalf("Stats() = %d blobs, %d bytes; want %d, %d", c, b, count, size)
	}
}

func assertDirEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	if len(entries) != 0 {
		t.Fatalf("%s holds %d entries, want none (first: %s)", dir, len(entries), entries[0].Name())
	}
}

func TestBlobStorePutStatOpenDelete(t *testing.T) {
	s, dir := newTestBlobStore(t)
	content := []byte("hello, berth")
	d := storePut(t, s, content)

	hx := d.Hex()
	if _, err := os.Stat(filepath.Join(dir, "sha256", hx[:2], hx)); err != nil {
		t.Fatalf("blob not at <dir>/sha256/<xx>/<hex>: %v", err)
	}
	size, mod, err := s.Stat(d)
	if err != nil || size != int64(len(content)) || mod.IsZero() {
		t.Fatalf("Stat = %d, %v, %v", size, mod, err)
	}
	f, n, err := s.Open(d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || n != int64(len(content)) || !bytes.Equal(got, content) {
		t.Fatalf("Open read %q (size %d), %v", got, n, err)
	}
	assertStoreStats(t, s, 1, int64(len(content)))
	assertDirEmpty(t, filepath.Join(dir, "tmp"))

	if err := s.Delete(d); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertStoreStats(t, s, 0, 0)
	if _, _, err := s.Stat(d); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("Stat after delete: %v, want ErrNotFound", err)
	}
	if _, _, err := s.Open(d); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("Open after delete: %v, want ErrNotFound", err)
	}
	if err := s.Delete(d); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("second Delete: %v, want ErrNotFound", err)
	}
}

func TestBlobStoreErrorsHideInternalPaths(t *testing.T) {
	s, dir := newTestBlobStore(t)
	_, _, err := s.Stat(storeSHA256([]byte("absent")))
	if !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("Stat: %v", err)
	}
	if bytes.Contains([]byte(err.Error()), []byte(dir)) {
		t.Fatalf("error %q names the store's path", err)
	}
}

func TestBlobStoreDigestMismatchLeavesNothing(t *testing.T) {
	s, dir := newTestBlobStore(t)
	d := storeSHA256([]byte("expected"))
	_, err := s.Put(context.Background(), d, bytes.NewReader([]byte("something else")), 0)
	if !errors.Is(err, oci.ErrDigestInvalid) {
		t.Fatalf("Put: %v, want ErrDigestInvalid", err)
	}
	if _, _, err := s.Stat(d); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("Stat: %v, want ErrNotFound", err)
	}
	assertDirEmpty(t, filepath.Join(dir, "tmp"))
	assertStoreStats(t, s, 0, 0)
}

func TestBlobStorePutTooLarge(t *testing.T) {
	s, dir := newTestBlobStore(t)
	content := bytes.Repeat([]byte("x"), 100)
	d := storeSHA256(content)
	if _, err := s.Put(context.Background(), d, bytes.NewReader(content), 99); !errors.Is(err, ErrBlobTooLarge) {
		t.Fatalf("Put of 100 bytes with limit 99: %v, want ErrBlobTooLarge", err)
	}
	assertDirEmpty(t, filepath.Join(dir, "tmp"))
	if n, err := s.Put(context.Background(), d, bytes.NewReader(content), 100); err != nil || n != 100 {
		t.Fatalf("Put of 100 bytes with limit 100: %d, %v", n, err)
	}
}

func TestBlobStorePutCanceled(t *testing.T) {
	s, dir := newTestBlobStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	content := []byte("never stored")
	if _, err := s.Put(ctx, storeSHA256(content), bytes.NewReader(content), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v, want context.Canceled", err)
	}
	assertDirEmpty(t, filepath.Join(dir, "tmp"))
	assertStoreStats(t, s, 0, 0)
}

func TestBlobStoreInvalidDigests(t *testing.T) {
	s, _ := newTestBlobStore(t)
	for _, d := range []oci.Digest{
		"", "sha256:../../../etc/passwd", "md5:d41d8cd98f00b204e9800998ecf8427e",
		oci.Digest("sha256:" + string(bytes.Repeat([]byte("A"), 64))),
		oci.Digest("sha256:" + string(bytes.Repeat([]byte("a"), 63)) + "/"),
	} {
		if _, _, err := s.Stat(d); !errors.Is(err, oci.ErrDigestInvalid) {
			t.Errorf("Stat(%q): %v, want ErrDigestInvalid", d, err)
		}
		if _, _, err := s.Open(d); !errors.Is(err, oci.ErrDigestInvalid) {
			t.Errorf("Open(%q): %v, want ErrDigestInvalid", d, err)
		}
		if _, err := s.Put(context.Background(), d, bytes.NewReader(nil), 0); !errors.Is(err, oci.ErrDigestInvalid) {
			t.Errorf("Put(%q): %v, want ErrDigestInvalid", d, err)
		}
		if err := s.Delete(d); !errors.Is(err, oci.ErrDigestInvalid) {
			t.Errorf("Delete(%q): %v, want ErrDigestInvalid", d, err)
		}
		if err := s.Touch(d); !errors.Is(err, oci.ErrDigestInvalid) {
			t.Errorf("Touch(%q): %v, want ErrDigestInvalid", d, err)
		}
	}
}

func TestBlobStoreConcurrentPutsOfOneDigest(t *testing.T) {
	s, dir := newTestBlobStore(t)
	content := bytes.Repeat([]byte("layer"), 50_000)
	d := storeSHA256(content)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := s.Put(context.Background(), d, bytes.NewReader(content), 0)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	assertStoreStats(t, s, 1, int64(len(content)))
	assertDirEmpty(t, filepath.Join(dir, "tmp"))
	f, _, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, content) {
		t.Fatal("stored content differs")
	}
}

func TestBlobStoreSHA512(t *testing.T) {
	s, _ := newTestBlobStore(t)
	content := []byte("sha512 content")
	d := storeSHA512(content)
	if _, err := s.Put(context.Background(), d, bytes.NewReader(content), 0); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if size, _, err := s.Stat(d); err != nil || size != int64(len(content)) {
		t.Fatalf("Stat = %d, %v", size, err)
	}
	// The same content under its sha256 name is another blob.
	if _, _, err := s.Stat(storeSHA256(content)); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("Stat sha256: %v", err)
	}
	var seen []oci.Digest
	s.Walk(context.Background(), func(d oci.Digest, _ int64, _ time.Time) error {
		seen = append(seen, d)
		return nil
	})
	if len(seen) != 1 || seen[0] != d {
		t.Fatalf("Walk saw %v, want [%s]", seen, d)
	}
	wrong := storeSHA512([]byte("other"))
	if _, err := s.Put(context.Background(), wrong, bytes.NewReader(content), 0); !errors.Is(err, oci.ErrDigestInvalid) {
		t.Fatalf("Put with wrong sha512: %v", err)
	}
}

func TestBlobStoreWalkAndReopenCounts(t *testing.T) {
	s, dir := newTestBlobStore(t)
	want := map[oci.Digest]int64{}
	var total int64
	for i := range 20 {
		content := []byte(fmt.Sprintf("blob %d", i))
		want[storePut(t, s, content)] = int64(len(content))
		total += int64(len(content))
	}
	// Strays a walk must ignore: a file with a non-digest name, a blob in
	// the wrong fanout directory, a directory in a fanout directory.
	d := storeSHA256([]byte("stray"))
	os.MkdirAll(filepath.Join(dir, "sha256", "zz"), 0o755)
	os.WriteFile(filepath.Join(dir, "sha256", "zz", d.Hex()), []byte("stray"), 0o644)
	os.WriteFile(filepath.Join(dir, "sha256", "README"), []byte("x"), 0o644)

	got := map[oci.Digest]int64{}
	err := s.Walk(context.Background(), func(d oci.Digest, size int64, mod time.Time) error {
		got[d] = size
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("Walk saw %d blobs, want %d", len(got), len(want))
	}
	for d, n := range want {
		if got[d] != n {
			t.Fatalf("Walk: %s size %d, want %d", d, got[d], n)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.Walk(context.Background(), func(oci.Digest, int64, time.Time) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Walk with failing fn: %v after %d calls", err, calls)
	}

	reopened, err := OpenBlobStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	assertStoreStats(t, reopened, int64(len(want)), total)
}

func TestBlobStoreOpenRemovesStaleTemp(t *testing.T) {
	s, dir := newTestBlobStore(t)
	d := storePut(t, s, []byte("kept"))
	stale := filepath.Join(dir, "tmp", "put-123456")
	if err := os.WriteFile(stale, []byte("half a blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	reopened, err := OpenBlobStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temp file still there: %v", err)
	}
	if _, _, err := reopened.Stat(d); err != nil {
		t.Fatalf("blob lost on reopen: %v", err)
	}
	assertStoreStats(t, reopened, 1, 4)
}

func TestBlobStoreIngest(t *testing.T) {
	s, dir := newTestBlobStore(t)
	content := []byte("ingested")
	d := storeSHA256(content)
	src := filepath.Join(filepath.Dir(dir), "upload-data")
	os.WriteFile(src, content, 0o600)
	if err := s.Ingest(src, d); err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Fatalf("source still there after Ingest: %v", err)
	}
	assertStoreStats(t, s, 1, int64(len(content)))

	// Ingesting a blob the store has removes the source, keeps one copy.
	os.WriteFile(src, content, 0o600)
	old := time.Now().Add(-3 * time.Hour)
	hx := d.Hex()
	os.Chtimes(filepath.Join(dir, "sha256", hx[:2], hx), old, old)
	if err := s.Ingest(src, d); err != nil {
		t.Fatalf("second Ingest: %v", err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Fatalf("source still there after duplicate Ingest: %v", err)
	}
	assertStoreStats(t, s, 1, int64(len(content)))
	if _, mod, _ := s.Stat(d); mod.Before(time.Now().Add(-time.Hour)) {
		t.Fatalf("duplicate Ingest did not refresh mtime: %v", mod)
	}
}

func TestBlobStoreCopyAcross(t *testing.T) {
	// The cross-filesystem fallback of commit, exercised directly.
	s, _ := newTestBlobStore(t)
	content := []byte("from another filesystem")
	d := storeSHA256(content)
	src := filepath.Join(t.TempDir(), "data")
	os.WriteFile(src, content, 0o600)
	p, _ := s.path(d)
	if err := s.ensureFanout(filepath.Dir(p)); err != nil {
		t.Fatal(err)
	}
	if err := s.copyAcross(src, p); err != nil {
		t.Fatalf("copyAcross: %v", err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("copied blob %q, %v", got, err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Fatalf("source kept: %v", err)
	}
}

func TestBlobStoreTouch(t *testing.T) {
	s, dir := newTestBlobStore(t)
	d := storePut(t, s, []byte("touch me"))
	old := time.Now().Add(-48 * time.Hour)
	hx := d.Hex()
	os.Chtimes(filepath.Join(dir, "sha256", hx[:2], hx), old, old)
	if err := s.Touch(d); err != nil {
		t.Fatalf("Touch: %v", err)
	}
	if _, mod, _ := s.Stat(d); mod.Before(time.Now().Add(-time.Hour)) {
		t.Fatalf("mtime %v not refreshed", mod)
	}
	if err := s.Touch(storeSHA256([]byte("absent"))); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("Touch absent: %v, want ErrNotFound", err)
	}
}

func TestBlobStoreRePutRefreshesMtime(t *testing.T) {
	s, dir := newTestBlobStore(t)
	content := []byte("pushed twice")
	d := storePut(t, s, content)
	old := time.Now().Add(-48 * time.Hour)
	hx := d.Hex()
	os.Chtimes(filepath.Join(dir, "sha256", hx[:2], hx), old, old)
	storePut(t, s, content)
	if _, mod, _ := s.Stat(d); mod.Before(time.Now().Add(-time.Hour)) {
		t.Fatalf("mtime %v not refreshed by a second put", mod)
	}
}

func BenchmarkBlobPut(b *testing.B) {
	for _, size := range []int{1 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			s, _ := newTestBlobStore(b)
			content := make([]byte, size)
			for i := range content {
				content[i] = byte(i * 7)
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				binary.BigEndian.PutUint64(content, uint64(i)) // a new blob each time
				d := storeSHA256(content)
				b.StartTimer()
				if _, err := s.Put(context.Background(), d, bytes.NewReader(content), 0); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Delete(d); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
