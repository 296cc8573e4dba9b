package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// conformanceModule is the OCI distribution-spec conformance suite, pinned.
// The module has no release tags on the module proxy; this pseudo-version
// is its main branch of 2026-08-31 (distribution-spec 1.1 with 1.1.1 tests).
const conformanceModule = "github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"

// TestOCIConformance runs the official OCI conformance suite against a real
// berth process, with every optional category berth implements turned on.
func TestOCIConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the conformance suite takes a minute to build")
	}
	bin := buildConformance(t)
	srv := startServer(t, Options{})
	results := t.TempDir()
	cmd := exec.Command(bin, "-test.v")
	cmd.Dir = results
	cmd.Env = append(serverEnviron(),
		"OCI_REGISTRY="+srv.Host(),
		"OCI_TLS=disabled",
		"OCI_USERNAME="+srv.Username(),
		"OCI_PASSWORD="+srv.Password(),
		"OCI_VERSION=1.1",
		"OCI_RESULTS_DIR="+results,
		"OCI_LOG=warn",
		"OCI_REPO1=conformance/repo1",
		"OCI_REPO2=conformance/repo2",
		// Optional categories, all implemented by berth.
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		"OCI_API_MANIFESTS_DIGEST_HEADER=true",
		"OCI_API_REFERRER="+boolEnv(srv.ReferrersAPI()),
	)
	out, err := cmd.CombinedOutput()
	summary := conformanceSummary(string(out))
	t.Logf("conformance summary:\n%s", summary)
	if err != nil {
		t.Fatalf("conformance suite failed: %v\n%s", err, lastLines(string(out), 80))
	}
	for _, line := range strings.Split(summary, "\n") {
		if strings.HasSuffix(strings.TrimSpace(line), "Fail") {
			t.Errorf("conformance category failed: %s", strings.TrimSpace(line))
		}
	}
}

// buildConformance downloads the pinned suite through the Go module proxy
// and compiles its test binary (cached by the Go build cache between runs).
func buildConformance(t *testing.T) string {
	t.Helper()
	dl := exec.Command("go", "mod", "download", "-json", conformanceModule)
	dl.Env = append(os.Environ(), "GOFLAGS=")
	dl.Dir = t.TempDir()
	out, err := dl.Output()
	if err != nil {
		t.Fatalf("download %s: %v\n%s", conformanceModule, err, exitText(err))
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("download %s: %s (%v)", conformanceModule, mod.Error, err)
	}
	// The module cache is read-only; build from a copy.
	src := filepath.Join(t.TempDir(), "conformance")
	if out, err := exec.Command("cp", "-r", mod.Dir, src).CombinedOutput(); err != nil {
		t.Fatalf("copy suite: %v\n%s", err, out)
	}
	if out, err := exec.Command("chmod", "-R", "u+w", src).CombinedOutput(); err != nil {
		t.Fatalf("chmod suite: %v\n%s", err, out)
	}
	bin := filepath.Join(t.TempDir(), "conformance.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build conformance suite: %v\n%s", err, out)
	}
	return bin
}

// conformanceSummary keeps the suite's per-category table.
func conformanceSummary(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "....:") || strings.HasSuffix(line, "conformance:") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func boolEnv(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
