package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
)

// Files that berth keeps at the top of its data directory.
const (
	nodeIDFile        = "node-id"
	adminPasswordFile = "admin.password"
	adminUser         = "admin"
	// envAdminPassword sets the admin password instead of generating one.
	envAdminPassword = "BERTH_ADMIN_PASSWORD"
)

// loadNodeID returns the node id of the data directory dir. The first start
// keeps want (or, when empty, a new random id) in <dir>/node-id; later starts
// read it back. A want that differs from the kept id is an error: Raft knows
// this node by its id, and renaming it would orphan its state.
func loadNodeID(dir, want string) (id string, created bool, err error) {
	want = strings.TrimSpace(want)
	path := filepath.Join(dir, nodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id = strings.TrimSpace(string(b))
		if id == "" {
			return "", false, fmt.Errorf("node id file %s is empty", path)
		}
		if want != "" && want != id {
			return "", false, fmt.Errorf("node id %q differs from %q kept in %s: a node cannot be renamed", want, id, path)
		}
		return id, false, nil
	case errors.Is(err, fs.ErrNotExist):
	default:
		return "", false, fmt.Errorf("read node id: %w", err)
	}
	id = want
	if id == "" {
		id = uuid.NewString()
	}
	if strings.ContainsAny(id, " \t\r\n/") {
		return "", false, fmt.Errorf("node id %q must not contain spaces or slashes", id)
	}
	if err := writeFileSync(path, []byte(id+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("keep node id: %w", err)
	}
	return id, true, nil
}

// userStore is what setting up the admin account needs from the cluster.
type userStore interface {
	EnsureUser(ctx context.Context, name, password string, admin bool) (changed bool, err error)
	UserExists(ctx context.Context, name string) (bool, error)
}

// adminSetup makes sure the admin account exists.
type adminSetup struct {
	Users   userStore
	DataDir string
	// EnvPassword is the value of BERTH_ADMIN_PASSWORD ("" when unset).
	EnvPassword string
	Logger      *slog.Logger
	// Terminal, when not nil, is a terminal the generated password is
	// shown on once (a log file must never hold it).
	Terminal io.Writer
}

// Run applies, in order: a password from the environment always wins; an
// existing admin is left alone; otherwise the password kept in
// <data>/admin.password (left by a start that stopped before creating the
// user) or else a new random one is written there and set.
func (a adminSetup) Run(ctx context.Context) error {
	path := filepath.Join(a.DataDir, adminPasswordFile)
	if a.EnvPassword != "" {
		changed, err := a.Users.EnsureUser(ctx, adminUser, a.EnvPassword, true)
		if err != nil {
			return fmt.Errorf("set admin password from %s: %w", envAdminPassword, err)
		}
		if changed {
			a.Logger.Info("admin password set from environment", "variable", envAdminPassword)
		}
		// A generated password that no longer works would mislead whoever
		// reads the file (and `berth gc`, which uses it by default).
		if kept, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(kept)) != a.EnvPassword {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove stale admin password file: %w", err)
			}
			a.Logger.Info("removed stale admin password file", "path", path)
		}
		return nil
	}

	exists, err := a.Users.UserExists(ctx, adminUser)
	if err != nil {
		return fmt.Errorf("look up admin user: %w", err)
	}
	if exists {
		return nil
	}

	password, err := readPasswordFile(path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		password = newPassword()
		// The file is durable before the user exists: if we stop in
		// between, the next start sets the same password from it.
		if err := writeFileSync(path, []byte(password+"\n"), 0o600); err != nil {
			return fmt.Errorf("write admin password: %w", err)
		}
	default:
		return err
	}
	if _, err := a.Users.EnsureUser(ctx, adminUser, password, true); err != nil {
		return fmt.Errorf("create admin user: %w", err)
	}
	a.Logger.Warn("created the admin user; its password is in the password file (set "+envAdminPassword+" to choose it)",
		"user", adminUser, "path", path)
	if a.Terminal != nil {
		fmt.Fprintf(a.Terminal, "\n  admin password: %s\n  (kept in %s)\n\n", password, path)
	}
	return nil
}

// newPassword returns 26 random base32 characters (130 bits).
func newPassword() string {
	return rand.Text()
}

// readPasswordFile reads a password kept by berth, trimming the newline.
func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read admin password: %w", err)
	}
	p := strings.TrimSpace(string(b))
	if p == "" {
		return "", fmt.Errorf("admin password file %s is empty", path)
	}
	return p, nil
}

// writeFileSync writes data to path durably and atomically: a temp file in
// the same directory, fsynced, renamed over path, then the directory
// fsynced.
func writeFileSync(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
