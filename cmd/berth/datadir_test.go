package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeIDGeneratedOnceAndStable(t *testing.T) {
	dir := t.TempDir()
	id, created, err := loadNodeID(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if !created || id == "" {
		t.Fatalf("first start: id %q created %v, want a new id", id, created)
	}
	b, err := os.ReadFile(filepath.Join(dir, nodeIDFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != id {
		t.Errorf("node-id file holds %q, want %q", b, id)
	}
	for range 2 {
		again, created, err := loadNodeID(dir, "")
		if err != nil {
			t.Fatal(err)
		}
		if created || again != id {
			t.Fatalf("restart: id %q created %v, want %q kept", again, created, id)
		}
	}
	// Naming the node it already is, is fine; renaming it is not.
	if got, _, err := loadNodeID(dir, id); err != nil || got != id {
		t.Errorf("same explicit id: %q, %v", got, err)
	}
	if _, _, err := loadNodeID(dir, "other"); err == nil || !strings.Contains(err.Error(), "cannot be renamed") {
		t.Errorf("different explicit id: err = %v, want a refusal", err)
	}
}

func TestNodeIDExplicit(t *testing.T) {
	dir := t.TempDir()
	id, created, err := loadNodeID(dir, "node-a")
	if err != nil || id != "node-a" || !created {
		t.Fatalf("explicit id: %q %v %v", id, created, err)
	}
	if again, _, err := loadNodeID(dir, ""); err != nil || again != "node-a" {
		t.Fatalf("restart without --node-id: %q %v, want node-a", again, err)
	}
	if _, _, err := loadNodeID(t.TempDir(), "a b"); err == nil {
		t.Error("an id with a space was accepted")
	}
}

// fakeUsers is a userStore whose behaviour is function fields.
type fakeUsers struct {
	EnsureUserFunc func(ctx context.Context, name, password string, admin bool) (bool, error)
	UserExistsFunc func(ctx context.Context, name string) (bool, error)
}

func (f *fakeUsers) EnsureUser(ctx context.Context, name, password string, admin bool) (bool, error) {
	return f.EnsureUserFunc(ctx, name, password, admin)
}

func (f *fakeUsers) UserExists(ctx context.Context, name string) (bool, error) {
	return f.UserExistsFunc(ctx, name)
}

// memUsers is a fakeUsers backed by a map of passwords, counting writes.
func memUsers(passwords map[string]string, ensured *int) *fakeUsers {
	return &fakeUsers{
		EnsureUserFunc: func(_ context.Context, name, password string, admin bool) (bool, error) {
			*ensured++
			changed := passwords[name] != password
			passwords[name] = password
			return changed, nil
		},
		UserExistsFunc: func(_ context.Context, name string) (bool, error) {
			_, ok := passwords[name]
			return ok, nil
		},
	}
}

func TestAdminPasswordFirstStart(t *testing.T) {
	dir := t.TempDir()
	passwords := map[string]string{}
	ensured := 0
	var logs, term bytes.Buffer
	setup := adminSetup{
		Users:    memUsers(passwords, &ensured),
		DataDir:  dir,
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
		Terminal: &term,
	}
	if err := setup.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, adminPasswordFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("admin.password mode = %o, want 600", perm)
	}
	first, err := readPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) < 24 {
		t.Errorf("password %q is shorter than 24 characters", first)
	}
	if passwords[adminUser] != first || ensured != 1 {
		t.Errorf("admin password in store %q (ensured %d times), want the file's %q once", passwords[adminUser], ensured, first)
	}
	if strings.Contains(logs.String(), first) {
		t.Error("the password is in the logs")
	}
	if !strings.Contains(logs.String(), path) || !strings.Contains(logs.String(), `"level":"WARN"`) {
		t.Errorf("logs %s do not point at %s at warn level", logs.String(), path)
	}
	if !strings.Contains(term.String(), first) {
		t.Errorf("terminal output %q does not show the password", term.String())
	}

	// Second start: the user exists; nothing is regenerated or rewritten.
	logs.Reset()
	term.Reset()
	setup.Terminal = nil
	if err := setup.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	second, err := readPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if second != first || passwords[adminUser] != first || ensured != 1 {
		t.Errorf("second start changed the password: file %q store %q ensured %d", second, passwords[adminUser], ensured)
	}
	if logs.Len() != 0 {
		t.Errorf("second start logged %s", logs.String())
	}
}

func TestAdminPasswordKeptFileReused(t *testing.T) {
	// A start that wrote the file but stopped before creating the user.
	dir := t.TempDir()
	path := filepath.Join(dir, adminPasswordFile)
	if err := writeFileSync(path, []byte("kept-password-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	passwords := map[string]string{}
	ensured := 0
	setup := adminSetup{Users: memUsers(passwords, &ensured), DataDir: dir, Logger: slog.New(slog.DiscardHandler)}
	if err := setup.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if passwords[adminUser] != "kept-password-0123456789abcdef" {
		t.Errorf("admin password = %q, want the kept one", passwords[adminUser])
	}
}

func TestAdminPasswordFromEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, adminPasswordFile)
	if err := writeFileSync(path, []byte("old-generated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	passwords := map[string]string{adminUser: "old-generated"}
	ensured := 0
	setup := adminSetup{
		Users:       memUsers(passwords, &ensured),
		DataDir:     dir,
		EnvPassword: "chosen-by-operator",
		Logger:      slog.New(slog.DiscardHandler),
	}
	if err := setup.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if passwords[adminUser] != "chosen-by-operator" || ensured != 1 {
		t.Errorf("admin password = %q (ensured %d), want the one from the environment", passwords[adminUser], ensured)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("stale admin.password still there (stat: %v)", err)
	}
	// Every start applies it again (a no-op when unchanged).
	if err := setup.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ensured != 2 {
		t.Errorf("ensured %d times, want 2", ensured)
	}
}

func TestWriteFileSyncReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	for _, content := range []string{"one", "two"} {
		if err := writeFileSync(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Fatalf("content = %q, want %q", b, content)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}
