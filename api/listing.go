package api

// Listings. The state returns its lists a batch at a time (after a key,
// in order); the endpoints answer a page of them with the total.

// eachBatch calls fn with every item of a list the state returns a batch
// at a time, in order, until fn returns false. read returns up to n items
// after the key last ("": from the start); key is an item's key.
func eachBatch[T any](n int, read func(last string, n int) ([]T, error), key func(T) string, fn func(T) bool) error {
	last := ""
	for {
		batch, err := read(last, n)
		if err != nil {
			return err
		}
		for _, v := range batch {
			if !fn(v) {
				return nil
			}
		}
		if len(batch) < n {
			return nil
		}
		last = key(batch[len(batch)-1])
	}
}

// window keeps one page of a list that is read in order, and counts the
// whole list.
type window[T any] struct {
	skip, size int
	total      int
	items      []T // never nil: an empty page is answered []
}

// newWindow is the window of page (from 1) of size items.
func newWindow[T any](page, size int) *window[T] {
	return &window[T]{skip: (page - 1) * size, size: size, items: []T{}}
}

// add counts v, and keeps it when it falls in the page.
func (w *window[T]) add(v T) {
	w.total++
	if w.total > w.skip && len(w.items) < w.size {
		w.items = append(w.items, v)
	}
}
