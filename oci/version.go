package oci

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// HeaderTagVersion carries a TagVersion between berth clusters: on a
// manifest PUT or DELETE by tag (the version of the write), and on the
// answer to a GET or HEAD of a manifest by tag (the version the receiver
// holds). Other registries ignore it.
const HeaderTagVersion = "Berth-Tag-Version"

// HeaderIfDigest, on a DELETE of a manifest by tag, makes the delete
// conditional: the tag is removed only while it still points to that
// digest.
const HeaderIfDigest = "Berth-If-Digest"

// maxOrigin bounds the origin of a version.
const maxOrigin = 64

// TagVersion orders the writes of one tag across berth clusters: a hybrid
// logical clock (HLC) and the id of the cluster where the write was made.
// Of two writes of a tag, the one with the higher version wins everywhere;
// a delete keeps its version in a tombstone, so that an older write that
// arrives later cannot bring the tag back.
//
// HLC is physical time in milliseconds since the Unix epoch shifted left
// by 16 bits, plus a logical counter in the low 16 bits: a write that
// follows another in the same millisecond (or one from a cluster whose
// clock runs ahead) still gets a higher version.
type TagVersion struct {
	HLC    uint64 `json:"hlc,omitempty"`
	Origin string `json:"origin,omitempty"`
}

// IsZero reports whether v is unset (a tag written before versions, or by
// a registry that has none).
func (v TagVersion) IsZero() bool { return v.HLC == 0 && v.Origin == "" }

// Compare returns -1, 0 or +1 as v is lower than, equal to or higher than
// o: by HLC, then by origin, so that two clusters never disagree.
func (v TagVersion) Compare(o TagVersion) int {
	switch {
	case v.HLC < o.HLC:
		return -1
	case v.HLC > o.HLC:
		return 1
	}
	return strings.Compare(v.Origin, o.Origin)
}

// Next returns the version of a local write made at now by origin, after a
// write that held version prev: the HLC of now, or one more than prev's
// when prev is not older.
func Next(prev TagVersion, now time.Time, origin string) TagVersion {
	h := HLCAt(now)
	if h <= prev.HLC {
		h = prev.HLC + 1
	}
	return TagVersion{HLC: h, Origin: origin}
}

// HLCAt is the clock value of physical time t with a zero counter.
func HLCAt(t time.Time) uint64 {
	ms := t.UnixMilli()
	if ms < 0 {
		return 0
	}
	return uint64(ms) << 16
}

// Time is the physical part of v's clock.
func (v TagVersion) Time() time.Time {
	return time.UnixMilli(int64(v.HLC >> 16))
}

// String is the wire form "<hlc>.<origin>", "" for the zero version.
func (v TagVersion) String() string {
	if v.IsZero() {
		return ""
	}
	return strconv.FormatUint(v.HLC, 10) + "." + v.Origin
}

// ParseTagVersion parses the wire form of String; "" is the zero version.
func ParseTagVersion(s string) (TagVersion, error) {
	if s == "" {
		return TagVersion{}, nil
	}
	h, origin, ok := strings.Cut(s, ".")
	if !ok || origin == "" || len(origin) > maxOrigin {
		return TagVersion{}, fmt.Errorf("tag version %q: want <clock>.<origin>", s)
	}
	for _, r := range origin {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return TagVersion{}, fmt.Errorf("tag version %q: origin must be lowercase letters, digits and dashes", s)
		}
	}
	hlc, err := strconv.ParseUint(h, 10, 64)
	if err != nil || hlc == 0 {
		return TagVersion{}, fmt.Errorf("tag version %q: clock is not a positive integer", s)
	}
	return TagVersion{HLC: hlc, Origin: origin}, nil
}
