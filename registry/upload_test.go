package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
)

var storeEpoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

type uploadsFixture struct {
	u     *Uploads
	blobs *BlobStore
	dir   string // the uploads directory
}

func newTestUploads(t *testing.T, maxBlobSize int64) uploadsFixture {
	t.Helper()
	root := t.TempDir()
	blobs, err := OpenBlobStore(filepath.Join(root, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "uploads")
	u, err := OpenUploads(dir, blobs, maxBlobSize)
	if err != nil {
		t.Fatalf("OpenUploads: %v", err)
	}
	return uploadsFixture{u, blobs, dir}
}

// reopen simulates a restart: a fresh Uploads over the same directories.
func (f *uploadsFixture) reopen(t *testing.T) {
	t.Helper()
	u, err := OpenUploads(f.dir, f.blobs, f.u.max)
	if err != nil {
		t.Fatalf("OpenUploads again: %v", err)
	}
	f.u = u
}

func mustCreate(t *testing.T, u *Uploads, repo string) UploadState {
	t.Helper()
	st, err := u.Create(repo, storeEpoch)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return st
}

func mustAppend(t *testing.T, u *Uploads, repo, id, chunk string, start int64) UploadState {
	t.Helper()
	st, err := u.Append(context.Background(), repo, id, strings.NewReader(chunk), start, storeEpoch.Add(time.Minute))
	if err != nil {
		t.Fatalf("Append(%q at %d): %v", chunk, start, err)
	}
	return st
}

func assertStoredBlob(t *testing.T, s *BlobStore, d oci.Digest, want []byte) {
	t.Helper()
	f, _, err := s.Open(d)
	if err != nil {
		t.Fatalf("Open %s: %v", d, err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, want) {
		t.Fatalf("blob %s = %q, want %q", d, got, want)
	}
}

func assertUploadGone(t *testing.T, f uploadsFixture, repo, id string) {
	t.Helper()
	if _, err := f.u.Get(repo, id); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("Get after close: %v, want ErrUploadUnknown", err)
	}
	for _, n := range []string{id, id + ".json"} {
		if _, err := os.Stat(filepath.Join(f.dir, n)); !os.IsNotExist(err) {
			t.Fatalf("session file %s still there: %v", n, err)
		}
	}
}

func TestUploadSessionChunked(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "library/alpine")
	if !validUploadID(st.ID) || st.Offset != 0 || st.Repo != "library/alpine" || !st.Started.Equal(storeEpoch) {
		t.Fatalf("Create = %+v", st)
	}
	if f.u.Open() != 1 {
		t.Fatalf("Open() = %d, want 1", f.u.Open())
	}
	st = mustAppend(t, f.u, "library/alpine", st.ID, "hello ", 0)
	if st.Offset != 6 || !st.Updated.Equal(storeEpoch.Add(time.Minute)) {
		t.Fatalf("after first chunk: %+v", st)
	}
	st = mustAppend(t, f.u, "library/alpine", st.ID, "world", 6)
	if got, err := f.u.Get("library/alpine", st.ID); err != nil || got.Offset != 11 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	content := []byte("hello world")
	d := storeSHA256(content)
	size, err := f.u.Finish(context.Background(), "library/alpine", st.ID, d, nil, storeEpoch)
	if err != nil || size != 11 {
		t.Fatalf("Finish = %d, %v", size, err)
	}
	assertStoredBlob(t, f.blobs, d, content)
	assertUploadGone(t, f, "library/alpine", st.ID)
	if f.u.Open() != 0 {
		t.Fatalf("Open() = %d after finish", f.u.Open())
	}
}

func TestUploadSessionStreamedWithFinalChunk(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", st.ID, "part one, ", -1)
	mustAppend(t, f.u, "r", st.ID, "part two, ", -1)
	content := []byte("part one, part two, and the end")
	d := storeSHA256(content)
	size, err := f.u.Finish(context.Background(), "r", st.ID, d, strings.NewReader("and the end"), storeEpoch)
	if err != nil || size != int64(len(content)) {
		t.Fatalf("Finish = %d, %v", size, err)
	}
	assertStoredBlob(t, f.blobs, d, content)
}

func TestUploadSessionEmptyBlob(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	d := storeSHA256(nil)
	if size, err := f.u.Finish(context.Background(), "r", st.ID, d, nil, storeEpoch); err != nil || size != 0 {
		t.Fatalf("Finish = %d, %v", size, err)
	}
	assertStoredBlob(t, f.blobs, d, nil)
}

func TestUploadSessionSHA512(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", st.ID, "sha512 ", 0)
	content := []byte("sha512 upload")
	d := storeSHA512(content)
	if _, err := f.u.Finish(context.Background(), "r", st.ID, d, strings.NewReader("upload"), storeEpoch); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	assertStoredBlob(t, f.blobs, d, content)
}

func TestUploadSessionOutOfOrderChunk(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", st.ID, "0123", 0)
	for _, start := range []int64{0, 3, 5, 100} {
		got, err := f.u.Append(context.Background(), "r", st.ID, strings.NewReader("xx"), start, storeEpoch)
		if !errors.Is(err, ErrRangeInvalid) {
			t.Fatalf("Append at %d: %v, want ErrRangeInvalid", start, err)
		}
		if got.Offset != 4 {
			t.Fatalf("Append at %d returned offset %d, want the current 4", start, got.Offset)
		}
	}
	content := []byte("0123456")
	mustAppend(t, f.u, "r", st.ID, "456", 4)
	if _, err := f.u.Finish(context.Background(), "r", st.ID, storeSHA256(content), nil, storeEpoch); err != nil {
		t.Fatalf("Finish: %v", err)
	}
}

func TestUploadSessionWrongRepoAndBadIDs(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "team/app")
	ctx := context.Background()
	if _, err := f.u.Get("team/other", st.ID); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("Get from another repo: %v", err)
	}
	if _, err := f.u.Append(ctx, "team/other", st.ID, strings.NewReader("x"), -1, storeEpoch); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("Append from another repo: %v", err)
	}
	if _, err := f.u.Finish(ctx, "team/other", st.ID, storeSHA256(nil), nil, storeEpoch); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("Finish from another repo: %v", err)
	}
	if err := f.u.Cancel("team/other", st.ID); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("Cancel from another repo: %v", err)
	}
	if _, err := f.u.Get("team/app", st.ID); err != nil {
		t.Fatalf("the session suffered from foreign requests: %v", err)
	}

	upper := strings.ToUpper(st.ID)
	for _, id := range []string{
		"", "..", "../uploads", "../../etc/passwd", st.ID + "/data", st.ID + "/..",
		upper, "{" + st.ID + "}", "urn:uuid:" + st.ID, strings.ReplaceAll(st.ID, "-", ""),
		st.ID[:35], st.ID + "0", "00000000-0000-0000-0000-00000000000g",
		"0000000-00000-0000-0000-000000000000",
	} {
		if validUploadID(id) {
			t.Errorf("validUploadID(%q) = true", id)
		}
		if _, err := f.u.Get("team/app", id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("Get(%q): %v, want ErrUploadUnknown", id, err)
		}
		if _, err := f.u.Append(ctx, "team/app", id, strings.NewReader("x"), -1, storeEpoch); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("Append(%q): %v, want ErrUploadUnknown", id, err)
		}
	}
	// A well-formed id that was never handed out.
	if _, err := f.u.Get("team/app", "01234567-89ab-cdef-0123-456789abcdef"); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("Get of an unknown id: %v", err)
	}
}

func TestUploadSessionCancel(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", st.ID, "doomed", 0)
	if err := f.u.Cancel("r", st.ID); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	assertUploadGone(t, f, "r", st.ID)
	if err := f.u.Cancel("r", st.ID); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("second Cancel: %v", err)
	}
	if f.u.Open() != 0 {
		t.Fatalf("Open() = %d", f.u.Open())
	}
}

func TestUploadSessionDigestMismatchRemovesSession(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", st.ID, "actual", 0)
	d := storeSHA256([]byte("claimed"))
	if _, err := f.u.Finish(context.Background(), "r", st.ID, d, nil, storeEpoch); !errors.Is(err, oci.ErrDigestInvalid) {
		t.Fatalf("Finish: %v, want ErrDigestInvalid", err)
	}
	if _, _, err := f.blobs.Stat(d); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("mismatched blob visible: %v", err)
	}
	if _, _, err := f.blobs.Stat(storeSHA256([]byte("actual"))); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("unverified content reached the store: %v", err)
	}
	assertUploadGone(t, f, "r", st.ID)

	// An invalid digest is refused before anything happens.
	st = mustCreate(t, f.u, "r")
	if _, err := f.u.Finish(context.Background(), "r", st.ID, "sha256:nope", nil, storeEpoch); !errors.Is(err, oci.ErrDigestInvalid) {
		t.Fatalf("Finish with a malformed digest: %v", err)
	}
	if _, err := f.u.Get("r", st.ID); err != nil {
		t.Fatalf("session lost after a malformed digest: %v", err)
	}
}

func TestUploadSessionTooLarge(t *testing.T) {
	f := newTestUploads(t, 10)
	st := mustCreate(t, f.u, "r")
	ctx := context.Background()
	if got, err := f.u.Append(ctx, "r", st.ID, strings.NewReader("0123456789A"), 0, storeEpoch); !errors.Is(err, ErrBlobTooLarge) || got.Offset != 0 {
		t.Fatalf("Append of 11 bytes: %+v, %v; want offset 0, ErrBlobTooLarge", got, err)
	}
	mustAppend(t, f.u, "r", st.ID, "01234", 0)
	if _, err := f.u.Append(ctx, "r", st.ID, strings.NewReader("567890"), 5, storeEpoch); !errors.Is(err, ErrBlobTooLarge) {
		t.Fatalf("Append past the limit: %v", err)
	}
	mustAppend(t, f.u, "r", st.ID, "5678", 5)
	content := []byte("0123456789")
	if _, err := f.u.Finish(ctx, "r", st.ID, storeSHA256([]byte("0123456789X")), strings.NewReader("9X"), storeEpoch); !errors.Is(err, ErrBlobTooLarge) {
		t.Fatalf("Finish past the limit: %v", err)
	}
	// The failed Finish left the session as it was: the client can retry.
	if got, err := f.u.Get("r", st.ID); err != nil || got.Offset != 9 {
		t.Fatalf("Get after a failed Finish = %+v, %v", got, err)
	}
	if _, err := f.u.Finish(ctx, "r", st.ID, storeSHA256(content), strings.NewReader("9"), storeEpoch); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	assertStoredBlob(t, f.blobs, storeSHA256(content), content)
}

// cutReader yields data and then an error, like a client that vanishes
// in the middle of a PATCH.
type cutReader struct {
	data []byte
	err  error
}

func (r *cutReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestUploadSessionFailedChunkLeavesSessionIntact(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", st.ID, "good ", 0)
	cut := errors.New("connection reset")
	got, err := f.u.Append(context.Background(), "r", st.ID, &cutReader{[]byte("partial garbage"), cut}, 5, storeEpoch)
	if !errors.Is(err, cut) || got.Offset != 5 {
		t.Fatalf("Append of a cut body = %+v, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(f.dir, st.ID)); err != nil || fi.Size() != 5 {
		t.Fatalf("data after a failed chunk: %v, %v; want 5 bytes", fi, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.u.Append(ctx, "r", st.ID, strings.NewReader("late"), 5, storeEpoch); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a canceled ctx: %v", err)
	}
	mustAppend(t, f.u, "r", st.ID, "bytes", 5)
	content := []byte("good bytes")
	if _, err := f.u.Finish(context.Background(), "r", st.ID, storeSHA256(content), nil, storeEpoch); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	assertStoredBlob(t, f.blobs, storeSHA256(content), content)
}

func TestUploadSessionResumeAfterCrash(t *testing.T) {
	for _, tc := range []struct {
		name      string
		loseHash  bool
		algorithm string
	}{
		{"sha256 from saved hash state", false, "sha256"},
		{"sha256 rehashed when the state is lost", true, "sha256"},
		{"sha512 rehashed", false, "sha512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestUploads(t, 0)
			st := mustCreate(t, f.u, "r")
			mustAppend(t, f.u, "r", st.ID, "hello ", 0)

			// The crash: a chunk reached the data file but its offset was
			// never recorded, and a state write was interrupted.
			dataPath := filepath.Join(f.dir, st.ID)
			statePath := dataPath + ".json"
			tmpPath := dataPath + "-123.tmp"
			data, err := os.OpenFile(dataPath, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			data.WriteString("GARBAGE NEVER ACKNOWLEDGED")
			data.Close()
			os.WriteFile(tmpPath, []byte("{half"), 0o600)
			if tc.loseHash {
				var rec map[string]any
				b, _ := os.ReadFile(statePath)
				json.Unmarshal(b, &rec)
				delete(rec, "sha256_state")
				b, _ = json.Marshal(rec)
				os.WriteFile(statePath, b, 0o600)
			}

			f.reopen(t)
			got, err := f.u.Get("r", st.ID)
			if err != nil || got.Offset != 6 || got.Repo != "r" || !got.Started.Equal(storeEpoch) {
				t.Fatalf("Get after restart = %+v, %v; want the recorded offset 6", got, err)
			}
			if fi, _ := os.Stat(dataPath); fi.Size() != 6 {
				t.Fatalf("data is %d bytes after recovery, want 6", fi.Size())
			}
			if _, err := os.Stat(tmpPath); !os.IsNotExist(err) {
				t.Fatalf("stale state temp file kept: %v", err)
			}
			mustAppend(t, f.u, "r", st.ID, "world", 6)
			content := []byte("hello world")
			d := storeSHA256(content)
			if tc.algorithm == "sha512" {
				d = storeSHA512(content)
			}
			if _, err := f.u.Finish(context.Background(), "r", st.ID, d, nil, storeEpoch); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			assertStoredBlob(t, f.blobs, d, content)
		})
	}
}

func TestUploadSessionRecoveryDropsUntrustedSessions(t *testing.T) {
	f := newTestUploads(t, 0)
	good := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", good.ID, "kept", 0)

	// A session without a chunk has no data file yet, and is kept.
	fresh := mustCreate(t, f.u, "r")

	short := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", short.ID, "acknowledged", 0)
	os.Truncate(filepath.Join(f.dir, short.ID), 3) // acknowledged bytes lost

	noData := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", noData.ID, "acknowledged", 0)
	os.Remove(filepath.Join(f.dir, noData.ID)) // acknowledged bytes lost

	noState := "11111111-2222-3333-4444-555555555555"
	os.WriteFile(filepath.Join(f.dir, noState), nil, 0o600) // data without a state

	corrupt := "66666666-7777-8888-9999-aaaaaaaaaaaa"
	os.WriteFile(filepath.Join(f.dir, corrupt), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(f.dir, corrupt+".json"), []byte("not json"), 0o600)

	oldLayout := "bbbbbbbb-cccc-dddd-eeee-ffffffffffff"
	os.Mkdir(filepath.Join(f.dir, oldLayout), 0o700) // a directory: not a session
	os.WriteFile(filepath.Join(f.dir, oldLayout, "state.json"), []byte("{}"), 0o600)

	os.WriteFile(filepath.Join(f.dir, "stray-file"), []byte("x"), 0o600)

	f.reopen(t)
	if f.u.Open() != 2 {
		t.Fatalf("Open() = %d after recovery, want 2", f.u.Open())
	}
	if st, err := f.u.Get("r", good.ID); err != nil || st.Offset != 4 {
		t.Fatalf("good session = %+v, %v", st, err)
	}
	if st, err := f.u.Get("r", fresh.ID); err != nil || st.Offset != 0 {
		t.Fatalf("fresh session = %+v, %v", st, err)
	}
	entries, _ := os.ReadDir(f.dir)
	names := []string{}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{good.ID, good.ID + ".json", fresh.ID + ".json"}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("uploads directory holds %v, want %v", names, want)
	}
	mustAppend(t, f.u, "r", fresh.ID, "after restart", 0)
}

func TestUploadSessionPurge(t *testing.T) {
	f := newTestUploads(t, 0)
	idle, _ := f.u.Create("r", storeEpoch)
	active, _ := f.u.Create("r", storeEpoch)
	if _, err := f.u.Append(context.Background(), "r", active.ID, strings.NewReader("x"), 0, storeEpoch.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	n, err := f.u.Purge(storeEpoch.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v; want 1", n, err)
	}
	assertUploadGone(t, f, "r", idle.ID)
	if _, err := f.u.Get("r", active.ID); err != nil {
		t.Fatalf("active session purged: %v", err)
	}
	if f.u.Open() != 1 {
		t.Fatalf("Open() = %d", f.u.Open())
	}
}

func TestUploadSessionConcurrentAppendsAreSerialised(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	chunk := strings.Repeat("a", 100_000)

	// Streamed chunks: all land, one after the other.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := f.u.Append(context.Background(), "r", st.ID, strings.NewReader(chunk), -1, storeEpoch); err != nil {
				t.Errorf("Append: %v", err)
			}
		})
	}
	wg.Wait()
	if got, _ := f.u.Get("r", st.ID); got.Offset != 400_000 {
		t.Fatalf("offset %d after 4 streamed chunks, want 400000", got.Offset)
	}

	// Ranged chunks claiming the same start: exactly one wins, the others
	// see the new offset and are refused.
	var mu sync.Mutex
	wins, refused := 0, 0
	for range 4 {
		wg.Go(func() {
			_, err := f.u.Append(context.Background(), "r", st.ID, strings.NewReader(chunk), 400_000, storeEpoch)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrRangeInvalid):
				refused++
			default:
				t.Errorf("Append: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || refused != 3 {
		t.Fatalf("%d appends won and %d were refused, want 1 and 3", wins, refused)
	}
	content := []byte(strings.Repeat(chunk, 5))
	if _, err := f.u.Finish(context.Background(), "r", st.ID, storeSHA256(content), nil, storeEpoch); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	assertStoredBlob(t, f.blobs, storeSHA256(content), content)
}

func TestUploadSessionGetDoesNotWaitForAChunk(t *testing.T) {
	f := newTestUploads(t, 0)
	st := mustCreate(t, f.u, "r")
	mustAppend(t, f.u, "r", st.ID, "abc", 0)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := f.u.Append(context.Background(), "r", st.ID, pr, 3, storeEpoch)
		done <- err
	}()
	pw.Write([]byte("def")) // returns once the append is reading
	if got, err := f.u.Get("r", st.ID); err != nil || got.Offset != 3 {
		t.Fatalf("Get during a chunk = %+v, %v; want the recorded offset 3", got, err)
	}
	// A second writer waits; with its ctx ended it gives up.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.u.Append(ctx, "r", st.ID, strings.NewReader("x"), -1, storeEpoch); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append while busy with a canceled ctx: %v", err)
	}
	// Purge skips a session that is receiving.
	if n, err := f.u.Purge(storeEpoch.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("Purge of a busy session = %d, %v", n, err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Append: %v", err)
	}
	if got, _ := f.u.Get("r", st.ID); got.Offset != 6 {
		t.Fatalf("offset %d, want 6", got.Offset)
	}
}
