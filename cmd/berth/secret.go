package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-registry/berth/cluster"
)

// clusterSecretFile keeps the cluster secret in the data directory.
const clusterSecretFile = "cluster.secret"

// loadClusterSecret returns the cluster secret of this node, in this order:
// the one given (cluster_secret, BERTH_CLUSTER_SECRET, or the file named by
// cluster_secret_file), then the one kept in <data>/cluster.secret; a
// first node that has neither generates one there. A node that joins an
// existing cluster must be given it. The secret is kept in the data
// directory, so a restart needs nothing.
func loadClusterSecret(cfg Config, joining bool, logger *slog.Logger) ([]byte, error) {
	kept := filepath.Join(cfg.Data, clusterSecretFile)
	given := cfg.ClusterSecret
	if cfg.ClusterSecretFile != "" {
		b, err := os.ReadFile(cfg.ClusterSecretFile)
		if err != nil {
			return nil, fmt.Errorf("cluster secret file: %w", err)
		}
		given = strings.TrimSpace(string(b))
		if given == "" {
			return nil, fmt.Errorf("cluster secret file %s is empty", cfg.ClusterSecretFile)
		}
	}
	stored, err := os.ReadFile(kept)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		stored = nil
	default:
		return nil, fmt.Errorf("read cluster secret: %w", err)
	}
	storedSecret := strings.TrimSpace(string(stored))

	if given != "" {
		if len(given) < cluster.MinSecretLen {
			return nil, fmt.Errorf("the cluster secret must be at least %d characters", cluster.MinSecretLen)
		}
		if storedSecret != given {
			if storedSecret != "" {
				logger.Warn("the given cluster secret differs from the one kept in the data directory; using the given one", "path", kept)
			}
			if err := writeFileSync(kept, []byte(given+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("keep cluster secret: %w", err)
			}
		}
		return []byte(given), nil
	}
	if storedSecret != "" {
		if len(storedSecret) < cluster.MinSecretLen {
			return nil, fmt.Errorf("cluster secret in %s is shorter than %d characters", kept, cluster.MinSecretLen)
		}
		return []byte(storedSecret), nil
	}
	if joining {
		return nil, fmt.Errorf("a node that joins a cluster needs its secret: copy %s of a member and pass --cluster-secret-file, or set --cluster-secret or BERTH_CLUSTER_SECRET", clusterSecretFile)
	}
	secret := rand.Text() + rand.Text() // 260 bits
	if err := writeFileSync(kept, []byte(secret+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("keep cluster secret: %w", err)
	}
	logger.Warn("generated the cluster secret; nodes that join this cluster need it (--cluster-secret-file)", "path", kept)
	return []byte(secret), nil
}
