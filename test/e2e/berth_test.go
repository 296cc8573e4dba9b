package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBerthGeneratedPassword starts berth without BERTH_ADMIN_PASSWORD: it
// generates a password on its first start, keeps it in <data>/admin.password
// (0600), tells where it is, and keeps it across a restart.
func TestBerthGeneratedPassword(t *testing.T) {
	t.Parallel()
	srv := startBerth(t, Options{GeneratePassword: true})
	path := filepath.Join(srv.DataDir(), "admin.password")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, perm)
	}
	if len(srv.Password()) < 16 {
		t.Errorf("generated password %q is shorter than 16 characters", srv.Password())
	}
	digest := pushRandom(t, srv, "generated/image:1")

	srv.Restart()
	if got := strings.TrimSpace(readFile(t, path)); got != srv.Password() {
		t.Errorf("admin.password changed across a restart")
	}
	// The first start says where the password is (or the password itself,
	// once); a restart does not log the secret again.
	log := readFile(t, srv.LogPath())
	if n := strings.Count(log, srv.Password()); n > 1 {
		t.Errorf("the generated password appears %d times in the log over two starts, want at most once", n)
	}
	if !strings.Contains(log, srv.Password()) && !strings.Contains(log, "admin.password") {
		t.Errorf("the log tells neither the generated password nor where it is")
	}
	if got := headDigest(t, srv, "generated/image:1"); got != digest.String() {
		t.Errorf("after restart HEAD = %s, want %s", got, digest)
	}
	pushRandom(t, srv, "generated/image:2")
}
