package main

import (
	"testing"
	"time"
)

func TestParseLimits(t *testing.T) {
	for in, want := range map[string]int64{
		"10GiB": 10 << 30, "500MB": 500_000_000, "1024": 1024, "1.5 KiB": 1536, "0": 0,
		"-1": -1, "unlimited": -1, "Unlimited": -1, "none": -1,
	} {
		if got, err := parseStorageLimit(in); err != nil || got != want {
			t.Errorf("parseStorageLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-5GiB", "-2", "99999999EiB"} {
		if _, err := parseStorageLimit(bad); err == nil {
			t.Errorf("parseStorageLimit(%q) accepted", bad)
		}
	}
	for in, want := range map[string]int64{"1000": 1000, "0": 0, "-1": -1, "unlimited": -1} {
		if got, err := parseCountLimit(in); err != nil || got != want {
			t.Errorf("parseCountLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1k", "1e3", "-2", "many"} {
		if _, err := parseCountLimit(bad); err == nil {
			t.Errorf("parseCountLimit(%q) accepted", bad)
		}
	}
}

func TestParseDurationAndTime(t *testing.T) {
	const day = 24 * time.Hour
	for in, want := range map[string]time.Duration{
		"30d": 30 * day, "2w": 14 * day, "1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour, "90m": 90 * time.Minute, "24h": day,
	} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "30", "0d", "-1d", "yesterday", "d"} {
		if _, err := parseDuration(bad); err == nil {
			t.Errorf("parseDuration(%q) accepted", bad)
		}
	}

	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                  now.Add(-24 * time.Hour),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"2025-01-02T15:04:05Z": time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC),
		"2025-01-02":           time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC),
	} {
		if got, err := parseTime(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "2025-13-01", "1700000000"} {
		if _, err := parseTime(bad, now); err == nil {
			t.Errorf("parseTime(%q) accepted", bad)
		}
	}

	for in, want := range map[string]int{"30d": 30, "4w": 28, "720h": 30, "never": -1, "-1": -1} {
		if got, err := parseExpiresIn(in); err != nil || got != want {
			t.Errorf("parseExpiresIn(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"36h", "1.5d", "0d", "soon", "40000d"} {
		if _, err := parseExpiresIn(bad); err == nil {
			t.Errorf("parseExpiresIn(%q) accepted", bad)
		}
	}
}

func TestFormatUse(t *testing.T) {
	for _, tt := range []struct {
		used, limit int64
		size        bool
		want        string
	}{
		{1 << 30, 10 << 30, true, "1.0 GiB of 10.0 GiB (10%)"},
		{12, -1, false, "12 of unlimited"},
		{3, 0, false, "3 of 0"},
	} {
		if got := formatUse(tt.used, tt.limit, tt.size); got != tt.want {
			t.Errorf("formatUse(%d, %d) = %q, want %q", tt.used, tt.limit, got, tt.want)
		}
	}
}
