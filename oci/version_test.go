package oci

import (
	"testing"
	"time"
)

func TestTagVersionOrder(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	a := Next(TagVersion{}, now, "ca")
	if a.HLC != HLCAt(now) || a.Origin != "ca" {
		t.Fatalf("first version %+v", a)
	}
	// A write in the same millisecond, or with a clock behind, still wins.
	b := Next(a, now, "cb")
	if b.Compare(a) <= 0 {
		t.Fatalf("Next(%v) = %v, not higher", a, b)
	}
	c := Next(b, now.Add(-time.Hour), "ca")
	if c.Compare(b) <= 0 {
		t.Fatalf("a clock behind gave %v after %v", c, b)
	}
	// Same clock: the origin breaks the tie, the same way everywhere.
	x, y := TagVersion{HLC: 5, Origin: "a"}, TagVersion{HLC: 5, Origin: "b"}
	if x.Compare(y) != -1 || y.Compare(x) != 1 || x.Compare(x) != 0 {
		t.Fatal("origin does not break ties")
	}
	if !c.Time().Equal(now) {
		t.Fatalf("Time() = %v, want %v", c.Time(), now)
	}
}

func TestParseTagVersion(t *testing.T) {
	v := TagVersion{HLC: 123456789, Origin: "c0ffee"}
	got, err := ParseTagVersion(v.String())
	if err != nil || got != v {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	if z, err := ParseTagVersion(""); err != nil || !z.IsZero() {
		t.Fatalf("empty: %v, %v", z, err)
	}
	for _, bad := range []string{"12", "x.c", "0.c", "12.", "12.UPPER", "12.a b", "-1.c"} {
		if _, err := ParseTagVersion(bad); err == nil {
			t.Errorf("ParseTagVersion(%q) accepted", bad)
		}
	}
}
