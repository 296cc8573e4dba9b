package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/replicate"
)

func TestParseArtifact(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tt := range []struct{ in, repo, ref string }{
		{"team/app:v1", "team/app", "v1"},
		{"team/app@" + d, "team/app", d},
		{"app:1.0-rc", "app", "1.0-rc"},
	} {
		repo, ref, err := parseArtifact(tt.in)
		if err != nil || repo != tt.repo || ref != tt.ref {
			t.Errorf("parseArtifact(%q) = %q, %q, %v", tt.in, repo, ref, err)
		}
	}
	for _, bad := range []string{"team/app", "Team/App:v1", "app@sha256:zz", "app:", "app:bad tag"} {
		if _, _, err := parseArtifact(bad); err == nil {
			t.Errorf("parseArtifact(%q) accepted", bad)
		}
	}
}

func TestParseTriggerAndBandwidth(t *testing.T) {
	for in, want := range map[string][2]string{
		"event": {"event", ""}, "manual": {"manual", ""},
		"cron:'*/10 * * * *'": {"cron", "*/10 * * * *"}, "cron:@every 2s": {"cron", "@every 2s"},
	} {
		trig, spec, err := parseTrigger(in)
		if err != nil || trig != want[0] || spec != want[1] {
			t.Errorf("parseTrigger(%q) = %q, %q, %v", in, trig, spec, err)
		}
	}
	for _, bad := range []string{"", "sometimes", "cron:", "cron:'61 * * * *'"} {
		if _, _, err := parseTrigger(bad); err == nil {
			t.Errorf("parseTrigger(%q) accepted", bad)
		}
	}
	for in, want := range map[string]int64{"": 0, "50MB/s": 50_000_000, "8MiB/s": 8 << 20, "1kB": 1000} {
		if got, err := parseBandwidth(in); err != nil || got != want {
			t.Errorf("parseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseBandwidth("fast"); err == nil {
		t.Error("parseBandwidth(fast) accepted")
	}
}

func TestWaitVerdict(t *testing.T) {
	st := func(states ...string) replicate.ArtifactStatus {
		s := replicate.ArtifactStatus{Repo: "app", Reference: "v1"}
		for i, state := range states {
			s.Destinations = append(s.Destinations, replicate.DestinationStatus{Endpoint: []string{"eu", "us", "ap"}[i], State: state, Reason: "why"})
		}
		return s
	}
	for _, tt := range []struct {
		name      string
		st        replicate.ArtifactStatus
		endpoints []string
		done, err bool
		pending   int
	}{
		{"all present", st("present", "present"), nil, true, false, 0},
		{"one pending", st("present", "pending"), nil, false, false, 1},
		{"one missing", st("missing", "present"), nil, false, false, 1},
		{"one failed ends the wait", st("failed", "pending"), nil, false, true, 1},
		{"only the endpoints asked for", st("present", "pending"), []string{"eu"}, true, false, 0},
		{"nothing selects it", st(), nil, false, true, 0},
		{"an endpoint no policy uses", st("present"), []string{"ap"}, false, true, 0},
	} {
		done, pending, err := waitVerdict(tt.st, tt.endpoints)
		if done != tt.done || (err != nil) != tt.err || len(pending) != tt.pending {
			t.Errorf("%s: done %v, pending %v, err %v", tt.name, done, pending, err)
		}
	}
}

func TestInterspersedFlags(t *testing.T) {
	cmds := []*cli.Command{{Name: "endpoint", Subcommands: []*cli.Command{{Name: "add", Flags: []cli.Flag{
		&cli.StringFlag{Name: "url"}, &cli.BoolFlag{Name: "insecure"},
	}}}}}
	got := interspersed(cmds, []string{"berth", "endpoint", "add", "eu", "--url", "http://x", "--insecure", "--url=y"})
	want := []string{"berth", "endpoint", "add", "--url", "http://x", "--insecure", "--url=y", "--", "eu"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
