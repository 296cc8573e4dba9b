package oci

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
)

// Digest is a content digest in the form "algorithm:hex", e.g.
// "sha256:e3b0c442...". Only sha256 and sha512 are accepted.
type Digest string

// Algorithms berth verifies, with the length of their hex encoding.
var algorithms = map[string]int{
	"sha256": 64,
	"sha512": 128,
}

// ParseDigest validates s and returns it as a Digest. The hex part must be
// lowercase and of the algorithm's exact length, so that a digest can never
// name anything but one file under blobs/<alg>/.
func ParseDigest(s string) (Digest, error) {
	alg, hx, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("%w: %q has no algorithm", ErrDigestInvalid, s)
	}
	n, known := algorithms[alg]
	if !known {
		return "", fmt.Errorf("%w: unsupported algorithm %q", ErrDigestInvalid, alg)
	}
	if len(hx) != n {
		return "", fmt.Errorf("%w: %s hex must be %d characters", ErrDigestInvalid, alg, n)
	}
	for i := 0; i < len(hx); i++ {
		c := hx[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("%w: invalid hex in %q", ErrDigestInvalid, s)
		}
	}
	return Digest(s), nil
}

// Algorithm returns the part before the colon ("sha256").
func (d Digest) Algorithm() string {
	alg, _, _ := strings.Cut(string(d), ":")
	return alg
}

// Hex returns the part after the colon.
func (d Digest) Hex() string {
	_, hx, _ := strings.Cut(string(d), ":")
	return hx
}

func (d Digest) String() string { return string(d) }

// NewHash returns a fresh hash for the digest's algorithm.
func (d Digest) NewHash() hash.Hash { return NewHash(d.Algorithm()) }

// NewHash returns a fresh hash for alg ("sha256" or "sha512"); an unknown
// algorithm gets sha256, callers validate digests before they hash.
func NewHash(alg string) hash.Hash {
	if alg == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

// DigestOf returns the sha256 digest of b.
func DigestOf(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest("sha256:" + hex.EncodeToString(sum[:]))
}

// DigestFromHash formats the sum of h as a digest of algorithm alg.
func DigestFromHash(alg string, h hash.Hash) Digest {
	return Digest(alg + ":" + hex.EncodeToString(h.Sum(nil)))
}

// Verify reports whether b hashes to d.
func (d Digest) Verify(b []byte) bool {
	h := d.NewHash()
	h.Write(b)
	return DigestFromHash(d.Algorithm(), h) == d
}
