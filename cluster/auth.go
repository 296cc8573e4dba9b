package cluster

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// headerClusterAuth carries the signature of an internal API request:
// "<node id> <unix milliseconds> <hex HMAC-SHA256>".
const headerClusterAuth = "X-Berth-Cluster-Auth"

// authSkew is how far a signed request's time may be from the receiver's
// clock. It bounds how long a captured request could be replayed.
const authSkew = 60 * time.Second

// keys are derived from the cluster secret, one per use, so that no use
// of the secret reveals another's key.
type keys struct {
	gossip []byte // memberlist AES-256-GCM key
	api    []byte // HMAC key of internal API requests
}

func deriveKeys(secret []byte) (keys, error) {
	if len(secret) == 0 {
		return keys{}, nil
	}
	g, err := hkdf.Key(sha256.New, secret, []byte("berth cluster"), "gossip v1", 32)
	if err != nil {
		return keys{}, err
	}
	a, err := hkdf.Key(sha256.New, secret, []byte("berth cluster"), "internal api v1", 32)
	if err != nil {
		return keys{}, err
	}
	return keys{gossip: g, api: a}, nil
}

// DeriveKey returns a 32-byte key for purpose derived from the cluster
// secret (HKDF-SHA256), e.g. to encrypt credentials at rest.
func DeriveKey(secret []byte, purpose string) ([]byte, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("%w: cluster secret too short", ErrConfig)
	}
	return hkdf.Key(sha256.New, secret, []byte("berth cluster"), purpose, 32)
}

// clusterID derives the id of the cluster, the origin of its tag versions,
// from the secret: "c" and 16 lowercase hex digits. A cluster without a
// secret (one node, or a test) gets a fixed id.
func clusterID(secret []byte) string {
	k, err := DeriveKey(secret, "berth cluster id")
	if err != nil {
		sum := sha256.Sum256([]byte("berth cluster id"))
		k = sum[:]
	}
	return "c" + hex.EncodeToString(k[:8])
}

// signature is the HMAC of one request: method, path with query, the
// sender and the time.
func signature(key []byte, method, uri, node string, ms int64) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s\n%s\n%s\n%d", method, uri, node, ms)
	return hex.EncodeToString(m.Sum(nil))
}

// sign adds the cluster signature to an internal API request.
func sign(r *http.Request, key []byte, node string, now time.Time) {
	ms := now.UnixMilli()
	r.Header.Set(headerClusterAuth, node+" "+strconv.FormatInt(ms, 10)+" "+signature(key, r.Method, r.URL.RequestURI(), node, ms))
}

// verify checks the cluster signature of r and returns the sender.
func verify(r *http.Request, key []byte, now time.Time) (string, error) {
	h := r.Header.Get(headerClusterAuth)
	if h == "" || len(h) > 512 || len(key) == 0 {
		return "", ErrUnauthenticated
	}
	parts := strings.Fields(h)
	if len(parts) != 3 {
		return "", ErrUnauthenticated
	}
	ms, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", ErrUnauthenticated
	}
	if d := now.Sub(time.UnixMilli(ms)); d > authSkew || d < -authSkew {
		return "", fmt.Errorf("%w: request time is %s off (clocks out of sync?)", ErrUnauthenticated, d.Round(time.Second))
	}
	want := signature(key, r.Method, r.URL.RequestURI(), parts[0], ms)
	if !hmac.Equal([]byte(want), []byte(parts[2])) {
		return "", ErrUnauthenticated
	}
	return parts[0], nil
}
