package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// berthFlavor runs `berth serve`, built from this module once per run.
type berthFlavor struct{}

func (berthFlavor) name() string { return "berth" }

func (berthFlavor) prepare(*Server) error { return nil }

func (berthFlavor) command(s *Server) (string, []string, []string) {
	args := []string{
		"serve",
		"--addr", s.addr,
		"--data", s.dataDir,
		"--raft-addr", s.raftAddr,
		"--gossip-addr", s.gossipAddr,
	}
	args = append(args, s.opts.Args...)
	var env []string
	if !s.opts.GeneratePassword {
		env = append(env, "BERTH_ADMIN_PASSWORD="+s.password)
	}
	env = append(env, s.opts.Env...)
	return berthBinary(s.t), args, env
}

func (berthFlavor) readyPath() string { return "/readyz" }

func (berthFlavor) ready(status int) bool { return status == http.StatusOK }

func (berthFlavor) blobsDir(s *Server) string { return filepath.Join(s.dataDir, "blobs") }

func (berthFlavor) anonymousPull() bool { return true }

func (berthFlavor) cleanSigterm() bool { return true }

func (berthFlavor) referrersAPI() bool { return true }

func (berthFlavor) projects() bool { return true }

func (berthFlavor) challengeScheme() string { return "Bearer" }

// distributionFlavor runs the CNCF distribution registry with htpasswd auth:
// the known-good reference the harness and the client tests are checked
// against. Unlike berth it needs credentials to pull.
type distributionFlavor struct{}

func (distributionFlavor) name() string { return "distribution" }

func (distributionFlavor) prepare(s *Server) error {
	hash, err := bcrypt.GenerateFromPassword([]byte(s.password), bcrypt.MinCost)
	if err != nil {
		return err
	}
	htpasswd := filepath.Join(s.dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(s.Username()+":"+string(hash)+"\n"), 0o600); err != nil {
		return err
	}
	// http.secret is fixed so upload state survives a restart.
	config := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: e2e-%s
auth:
  htpasswd:
    realm: berth-e2e
    path: %s
`, s.dataDir, s.addr, s.password, htpasswd)
	return os.WriteFile(filepath.Join(s.dir, "config.yml"), []byte(config), 0o644)
}

func (distributionFlavor) command(s *Server) (string, []string, []string) {
	bin, err := findClient("registry")
	if err != nil {
		s.t.Fatalf("distribution registry: %v; install it with: GOFLAGS= go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2", err)
	}
	return bin, []string{"serve", filepath.Join(s.dir, "config.yml")}, s.opts.Env
}

func (distributionFlavor) readyPath() string { return "/v2/" }

func (distributionFlavor) ready(status int) bool {
	return status == http.StatusOK || status == http.StatusUnauthorized
}

func (distributionFlavor) blobsDir(s *Server) string {
	return filepath.Join(s.dataDir, "docker", "registry", "v2", "blobs")
}

func (distributionFlavor) anonymousPull() bool { return false }

func (distributionFlavor) projects() bool { return false }

func (distributionFlavor) challengeScheme() string { return "Basic" }

// referrersAPI is false: distribution v3.1.2 does not serve the referrers
// API (oras: "failed to query referrers API: unsupported").
func (distributionFlavor) referrersAPI() bool { return false }

// cleanSigterm is false: distribution does not handle SIGTERM and dies of it.
func (distributionFlavor) cleanSigterm() bool { return false }

// defaultFlavor is berth unless E2E_SERVER=distribution.
func defaultFlavor() flavor {
	if strings.EqualFold(os.Getenv("E2E_SERVER"), "distribution") {
		return distributionFlavor{}
	}
	return berthFlavor{}
}

var (
	berthOnce  sync.Once
	berthPath  string
	berthErr   error
	e2eWorkDir string // removed when the run ends
)

// berthBinary builds ./cmd/berth once per run and returns its path.
func berthBinary(t testing.TB) string {
	t.Helper()
	berthOnce.Do(func() { berthPath, berthErr = buildBerth() })
	if berthErr != nil {
		t.Fatal(berthErr)
	}
	return berthPath
}

// buildBerth builds ./cmd/berth from the module root, or returns
// E2E_BERTH_BIN when that names a binary built beforehand.
func buildBerth() (string, error) {
	if bin := os.Getenv("E2E_BERTH_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("E2E_BERTH_BIN: %w", err)
		}
		return bin, nil
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside the berth module")
	}
	bin := filepath.Join(e2eWorkDir, "berth")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/berth")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/berth: %w\n%s", err, out)
	}
	return bin, nil
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "berth-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	e2eWorkDir = dir
	// The binary is built here, once, when berth is the server under test;
	// a build failure stops the run before any test starts.
	if _, ok := defaultFlavor().(berthFlavor); ok {
		berthOnce.Do(func() { berthPath, berthErr = buildBerth() })
		if berthErr != nil {
			fmt.Fprintln(os.Stderr, "e2e:", berthErr)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
