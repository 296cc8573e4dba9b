package main

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/berth-registry/berth/policy"
)

// Units the access commands read: quota limits, durations with days and
// weeks, points in time.

// isUnlimited reports whether s says "no limit".
func isUnlimited(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "-1", "unlimited", "none":
		return true
	}
	return false
}

// parseStorageLimit reads a storage quota: a size such as 10GiB, 500MB or
// 1073741824 (go-humanize: GiB is 2^30 bytes, GB 10^9), or -1/unlimited.
func parseStorageLimit(s string) (int64, error) {
	if isUnlimited(s) {
		return policy.Unlimited, nil
	}
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil || n > math.MaxInt64 || strings.HasPrefix(strings.TrimSpace(s), "-") {
		return 0, fmt.Errorf("storage limit %q: want a size like 10GiB or 500MB, or -1 (unlimited)", s)
	}
	return int64(n), nil
}

// parseCountLimit reads an artifact count quota: a number, or
// -1/unlimited.
func parseCountLimit(s string) (int64, error) {
	if isUnlimited(s) {
		return policy.Unlimited, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("count limit %q: want a number of artifacts, or -1 (unlimited)", s)
	}
	return n, nil
}

// formatLimit shows a quota limit.
func formatLimit(n int64, size bool) string {
	switch {
	case n == policy.Unlimited:
		return "unlimited"
	case size:
		return humanBytes(n)
	}
	return strconv.FormatInt(n, 10)
}

// formatUse shows usage against a limit: "1.2 GiB of 10.0 GiB (12%)".
func formatUse(used, limit int64, size bool) string {
	s := formatLimit(used, size) + " of " + formatLimit(limit, size)
	if limit > 0 {
		s += fmt.Sprintf(" (%d%%)", used*100/limit)
	}
	return s
}

var dayUnitRE = regexp.MustCompile(`([0-9]+(?:\.[0-9]+)?)([dw])`)

// parseDuration reads a duration: Go's (90m, 1h30m) with d (24h) and w
// (7d) besides, as in 30d or 1d12h. It must be positive.
func parseDuration(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	var bad bool
	expanded := dayUnitRE.ReplaceAllStringFunc(in, func(m string) string {
		sub := dayUnitRE.FindStringSubmatch(m)
		v, err := strconv.ParseFloat(sub[1], 64)
		if err != nil {
			bad = true
			return m
		}
		hours := v * 24
		if sub[2] == "w" {
			hours *= 7
		}
		return strconv.FormatFloat(hours, 'f', -1, 64) + "h"
	})
	d, err := time.ParseDuration(expanded)
	if bad || err != nil || d <= 0 {
		return 0, fmt.Errorf("duration %q: want a positive duration like 30d, 12h or 1d12h", s)
	}
	return d, nil
}

// parseTime reads a point in time: RFC 3339 (2025-01-02T15:04:05Z), a
// date (2025-01-02, UTC), or a duration before now (24h, 7d).
func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := parseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2025-01-02T15:04:05Z), a date (2025-01-02), or a duration ago (24h, 7d)", s)
}

// parseExpiresIn reads a robot's lifetime in whole days (30d, 4w, 720h),
// or never (-1, Harbor's "never expires").
func parseExpiresIn(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "never", "-1":
		return -1, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("expires in: %w", err)
	}
	const day = 24 * time.Hour
	if d%day != 0 {
		return 0, fmt.Errorf("expires in %q: a robot lives whole days, like 30d or 4w", s)
	}
	if d/day > 100*365 {
		return 0, fmt.Errorf("expires in %q: at most 100 years; use never", s)
	}
	return int(d / day), nil
}
