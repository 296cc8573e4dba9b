package registry

import "os"

// writebackChunk is how many bytes a writeback writer lets pile up before
// it asks the kernel to start writing them out.
const writebackChunk = 8 << 20

// writeback writes to a file and, every writebackChunk bytes, starts the
// kernel writing the dirty pages out (sync_file_range, SYNC_FILE_RANGE_WRITE:
// it does not wait and promises nothing). The fsync that makes the file
// durable then finds most of it on disk already, instead of writing the
// whole blob after the last byte arrived. Durability still comes only from
// that fsync.
type writeback struct {
	f       *os.File
	pending int64
}

func newWriteback(f *os.File) *writeback { return &writeback{f: f} }

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.pending += int64(n)
	if w.pending >= writebackChunk {
		w.pending = 0
		startWriteback(w.f)
	}
	return n, err
}
