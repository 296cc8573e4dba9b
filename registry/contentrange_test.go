package registry

import (
	"errors"
	"testing"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in         string
		start, end int64
		ok         bool
	}{
		{"0-0", 0, 0, true},
		{"0-1023", 0, 1023, true},
		{"1024-2047", 1024, 2047, true},
		{"bytes=0-99", 0, 99, true},
		{"bytes 0-99/100", 0, 99, true},
		{"bytes 100-199/*", 100, 199, true},
		{"0-9223372036854775807", 0, 9223372036854775807, true},
		{"007-010", 7, 10, true},

		{"", 0, 0, false},
		{"-", 0, 0, false},
		{"0-", 0, 0, false},
		{"-5", 0, 0, false},
		{"5-4", 0, 0, false},
		{"-1-5", 0, 0, false},
		{"+1-5", 0, 0, false},
		{"1-+5", 0, 0, false},
		{" 0-5", 0, 0, false},
		{"0-5 ", 0, 0, false},
		{"0 -5", 0, 0, false},
		{"0-5-6", 0, 0, false},
		{"a-b", 0, 0, false},
		{"0x1-0x2", 0, 0, false},
		{"1e3-2e3", 0, 0, false},
		{"0-9223372036854775808", 0, 0, false},
		{"99999999999999999999-99999999999999999999", 0, 0, false},
		{"bytes 0-99", 0, 0, false},
		{"bytes 0-99/", 0, 0, false},
		{"bytes 0-99/99", 0, 0, false},
		{"bytes 0-99/abc", 0, 0, false},
		{"bytes */100", 0, 0, false},
		{"bytes=0-", 0, 0, false},
		{"bytes=-100", 0, 0, false},
		{"bytes=0-1,5-6", 0, 0, false},
		{"bytes=0-1/2", 0, 0, false},
		{"items 0-1", 0, 0, false},
		{"0-1\x00", 0, 0, false},
		{"٣-٤", 0, 0, false},
	} {
		start, end, err := ParseContentRange(tc.in)
		if !tc.ok {
			if !errors.Is(err, ErrRangeInvalid) {
				t.Errorf("ParseContentRange(%q) = %d, %d, %v; want ErrRangeInvalid", tc.in, start, end, err)
			}
			continue
		}
		if err != nil || start != tc.start || end != tc.end {
			t.Errorf("ParseContentRange(%q) = %d, %d, %v; want %d, %d", tc.in, start, end, err, tc.start, tc.end)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"0-0", "0-1023", "bytes=0-99", "bytes 0-99/100", "bytes 1-2/*", "5-4", "-", "", "9223372036854775807-9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, err := ParseContentRange(s)
		if err != nil {
			if !errors.Is(err, ErrRangeInvalid) {
				t.Fatalf("ParseContentRange(%q): %v does not wrap ErrRangeInvalid", s, err)
			}
			return
		}
		if start < 0 || end < start {
			t.Fatalf("ParseContentRange(%q) accepted %d-%d", s, start, end)
		}
	})
}
