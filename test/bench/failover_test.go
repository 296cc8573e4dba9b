package main

import (
	"errors"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	twenty := ms(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
	tests := []struct {
		name string
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"p50 of 20 is the 10th", twenty, 0.5, 10 * time.Millisecond},
		{"p90 of 20 is the 18th", twenty, 0.9, 18 * time.Millisecond},
		{"p99 of 20 is the largest", twenty, 0.99, 20 * time.Millisecond},
		{"max", ms(3, 1, 2), 1, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quantile(append([]time.Duration(nil), tt.ds...), tt.p); got != tt.want {
				t.Errorf("quantile(%v) = %s, want %s", tt.p, got, tt.want)
			}
		})
	}
}

func TestOutageAnalyse(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ok := func(start, mid, end int) attempt { return attempt{start: at(start), mid: at(mid), end: at(end)} }
	failed := func(start, end int) attempt {
		return attempt{start: at(start), end: at(end), err: errors.New("blob: PUT upload: 503")}
	}
	tests := []struct {
		name        string
		as          []attempt
		resumeAfter int
		kill        bool
		wantGap     time.Duration
		wantFailed  int
	}{
		{
			name: "kill: the write in flight blocks and succeeds, its manifest sent after the kill",
			as:   []attempt{ok(-30, -20, -10), ok(-10, 900, 910), ok(910, 920, 930)},
			kill: true, wantGap: 910 * time.Millisecond,
		},
		{
			name: "kill: a write whose manifest was sent before the kill does not count",
			as:   []attempt{ok(-30, -5, 5), failed(5, 600), ok(605, 1000, 1010)},
			kill: true, wantGap: 1010 * time.Millisecond, wantFailed: 1,
		},
		{
			name:        "handover: the longest time between two successes",
			as:          []attempt{ok(-20, -15, -10), ok(-10, -5, 40), ok(40, 50, 60), ok(60, 70, 200), ok(200, 210, 220)},
			resumeAfter: 100, wantGap: 140 * time.Millisecond,
		},
		{
			name:        "handover: writes after the resume do not count",
			as:          []attempt{ok(-20, -15, -10), ok(-10, 150, 160), ok(160, 170, 900)},
			resumeAfter: 100, wantGap: 170 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o outage
			o.analyse(tt.as, t0, at(tt.resumeAfter), tt.kill)
			if o.gap != tt.wantGap || o.failed != tt.wantFailed {
				t.Errorf("gap %s, failed %d; want %s, %d", o.gap, o.failed, tt.wantGap, tt.wantFailed)
			}
		})
	}
}
