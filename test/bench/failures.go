package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// failures counts failed requests by error and keeps, for each kind, the
// request id of one of them and what the server logged about it.
type failures struct {
	count map[string]int
	reqID map[string]string // kind → X-Request-Id of one of them
	log   map[string]string // kind → the server's log line of that request
}

func (f *failures) init() {
	if f.count == nil {
		f.count, f.reqID, f.log = map[string]int{}, map[string]string{}, map[string]string{}
	}
}

func (f *failures) add(err error) {
	f.init()
	kind := err.Error()
	f.count[kind]++
	var se *statusError
	if _, ok := f.reqID[kind]; !ok && errors.As(err, &se) && se.requestID != "" {
		f.reqID[kind] = se.requestID
	}
}

func (f *failures) merge(o failures) {
	for kind, n := range o.count {
		f.init()
		f.count[kind] += n
		if _, ok := f.reqID[kind]; !ok && o.reqID[kind] != "" {
			f.reqID[kind] = o.reqID[kind]
		}
		if _, ok := f.log[kind]; !ok && o.log[kind] != "" {
			f.log[kind] = o.log[kind]
		}
	}
}

func (f *failures) total() int {
	n := 0
	for _, c := range f.count {
		n += c
	}
	return n
}

// explain finds, in the JSON log at path, what the server said about the
// request behind each kind of failure: its warnings and errors other than
// the access log line.
func (f *failures) explain(path string) {
	want := map[string]string{} // request id → kind
	for kind, id := range f.reqID {
		if _, done := f.log[kind]; !done {
			want[id] = kind
		}
	}
	if len(want) == 0 {
		return
	}
	_ = scanLog(path, 0, func(l logLine) bool {
		if l.Msg == "request" || (l.Level != "WARN" && l.Level != "ERROR") {
			return true
		}
		kind, ok := want[l.RequestID]
		if !ok {
			return true
		}
		text := l.Level + " " + l.Msg
		if e := l.Err + l.Error; e != "" {
			text += ": " + e
		}
		f.log[kind] = fmt.Sprintf("%s (%s)", text, filepath.Base(path))
		delete(want, l.RequestID)
		return len(want) > 0
	})
}

// print prints the failures, the most frequent first, each with what the
// server logged about one of them when that is known.
func (f *failures) print(w io.Writer) {
	kinds := make([]string, 0, len(f.count))
	for kind := range f.count {
		kinds = append(kinds, kind)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if f.count[kinds[i]] != f.count[kinds[j]] {
			return f.count[kinds[i]] > f.count[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	for _, kind := range kinds {
		fmt.Fprintf(w, "  %5d × %s\n", f.count[kind], strings.TrimSpace(kind))
		if l := f.log[kind]; l != "" {
			fmt.Fprintf(w, "          the server logged: %s\n", l)
		} else if id := f.reqID[kind]; id != "" {
			fmt.Fprintf(w, "          request id %s (nothing logged above info)\n", id)
		}
	}
}
