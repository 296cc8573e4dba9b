package main

import (
	"strings"
	"testing"

	"github.com/berth-registry/berth/policy"
)

func TestTokenKeyCommands(t *testing.T) {
	f := loggedIn(t)
	f.on("GET", "system/token-keys", ok([]policy.SigningKey{
		{Kid: "k2", Created: 1_800_000_000_000_000_000, Current: true},
		{Kid: "k1", Created: 1_700_000_000_000_000_000},
	}))
	out := f.mustRun("token-key", "list")
	if !strings.Contains(out, "k2") || !strings.Contains(out, "true") || !strings.Contains(out, "k1") {
		t.Fatalf("token-key list:\n%s", out)
	}
	f.on("POST", "system/token-keys/rotate", ok(policy.SigningKey{Kid: "k3", Current: true}))
	if out := f.mustRun("token-key", "rotate"); !strings.Contains(out, "new signing key k3") {
		t.Fatalf("token-key rotate: %s", out)
	}
	if out := f.mustRun("token-key", "list", "-o", "json"); !strings.Contains(out, `"kid": "k2"`) && !strings.Contains(out, `"kid":"k2"`) {
		t.Fatalf("token-key list -o json: %s", out)
	}
	rs := f.requests()
	if len(rs) != 3 || rs[1].Method != "POST" || rs[1].Path != "/api/v1/system/token-keys/rotate" {
		t.Fatalf("requests %+v", rs)
	}
}
