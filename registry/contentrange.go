package registry

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseContentRange parses the Content-Range header of a chunked upload
// PATCH. The distribution spec's form is "<start>-<end>"; "bytes
// <start>-<end>/<size|*>" (RFC 9110) and "bytes=<start>-<end>" (older
// clients) are accepted too. Offsets are inclusive, decimal digits only, and
// must satisfy 0 ≤ start ≤ end (and end < size when a size is given). Any
// other input fails with an error wrapping ErrRangeInvalid.
func ParseContentRange(s string) (start, end int64, err error) {
	spec, size, hasSize := s, "", false
	switch {
	case strings.HasPrefix(s, "bytes "):
		spec, size, hasSize = strings.Cut(s[len("bytes "):], "/")
		if !hasSize {
			return 0, 0, fmt.Errorf("%w: content range %q has no size", ErrRangeInvalid, s)
		}
	case strings.HasPrefix(s, "bytes="):
		spec = s[len("bytes="):]
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%w: content range %q is not start-end", ErrRangeInvalid, s)
	}
	if start, ok = parseOffset(first); !ok {
		return 0, 0, fmt.Errorf("%w: content range %q has a bad start", ErrRangeInvalid, s)
	}
	if end, ok = parseOffset(last); !ok {
		return 0, 0, fmt.Errorf("%w: content range %q has a bad end", ErrRangeInvalid, s)
	}
	if end < start {
		return 0, 0, fmt.Errorf("%w: content range %q ends before it starts", ErrRangeInvalid, s)
	}
	if hasSize && size != "*" {
		n, ok := parseOffset(size)
		if !ok || end >= n {
			return 0, 0, fmt.Errorf("%w: content range %q has a bad size", ErrRangeInvalid, s)
		}
	}
	return start, end, nil
}

// parseOffset parses a non-empty run of decimal digits (no sign, no space)
// that fits in an int64.
func parseOffset(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}
