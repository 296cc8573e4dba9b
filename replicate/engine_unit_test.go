package replicate

import (
	"bytes"
	"testing"
	"time"

	"github.com/berth-registry/berth/policy"
)

func TestSealer(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	s, err := newSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.seal("eu", "hunter2")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("sealed value holds the password in clear")
	}
	got, err := s.open("eu", sealed)
	if err != nil || got != "hunter2" {
		t.Fatalf("open = %q, %v", got, err)
	}
	// Bound to the endpoint's name: moved to another endpoint, it fails.
	if _, err := s.open("us", sealed); err == nil {
		t.Fatal("a sealed password opened under another endpoint name")
	}
	// Another cluster secret (key) cannot open it.
	other, _ := newSealer(bytes.Repeat([]byte{8}, 32))
	if _, err := other.open("eu", sealed); err == nil {
		t.Fatal("opened with another key")
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := s.open("eu", tampered); err == nil {
		t.Fatal("a tampered value opened")
	}
	if empty, err := s.seal("eu", ""); err != nil || empty != nil {
		t.Fatalf("empty password sealed to %v, %v", empty, err)
	}
}

func TestRetryDelay(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RetryMin, cfg.RetryMax = time.Second, 5*time.Minute
	e := &Engine{cfg: cfg}
	prevMax := time.Duration(0)
	for attempts := 1; attempts <= 30; attempts++ {
		for range 20 {
			d := e.retryDelay(attempts, nil)
			if d <= 0 || d > cfg.RetryMax {
				t.Fatalf("attempt %d: delay %s outside (0, %s]", attempts, d, cfg.RetryMax)
			}
			prevMax = max(prevMax, d)
		}
	}
	if prevMax < cfg.RetryMax/2 {
		t.Fatalf("delays never approach the cap: max %s", prevMax)
	}
	// The first retry comes soon: within the jitter of RetryMin.
	if d := e.retryDelay(1, nil); d > 2*cfg.RetryMin {
		t.Fatalf("first retry after %s", d)
	}
}

func TestAnyClaimable(t *testing.T) {
	now := time.Unix(1000, 0)
	ns := now.UnixNano()
	tests := []struct {
		name string
		task policy.Task
		want bool
	}{
		{"pending", policy.Task{Status: policy.StatusPending}, true},
		{"retrying due", policy.Task{Status: policy.StatusRetrying, NextAttempt: ns - 1}, true},
		{"retrying later", policy.Task{Status: policy.StatusRetrying, NextAttempt: ns + 1}, false},
		{"running leased", policy.Task{Status: policy.StatusRunning, LeaseUntil: ns + 1}, false},
		{"running lease expired", policy.Task{Status: policy.StatusRunning, LeaseUntil: ns - 1}, true},
	}
	for _, tt := range tests {
		if got := anyClaimable([]policy.Task{tt.task}, now); got != tt.want {
			t.Errorf("%s: anyClaimable = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseCron(t *testing.T) {
	for _, ok := range []string{"*/5 * * * *", "@hourly", "@every 10m"} {
		if _, err := ParseCron(ok); err != nil {
			t.Errorf("ParseCron(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "* * *", "@sometimes", "61 * * * *"} {
		if _, err := ParseCron(bad); err == nil {
			t.Errorf("ParseCron(%q) accepted", bad)
		}
	}
}
