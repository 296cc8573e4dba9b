package replicate

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// sealer encrypts endpoint passwords at rest with AES-256-GCM under a key
// that cmd derives from the cluster secret: the state machine, its
// snapshots and the Raft log hold only ciphertext, and every node of the
// cluster can open it.
type sealer struct{ aead cipher.AEAD }

// sealVersion prefixes a sealed value, so that the scheme can change.
const sealVersion = 1

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("credential key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// seal encrypts plain; the endpoint name is authenticated with it, so that
// a sealed password cannot be moved to another endpoint.
func (s *sealer) seal(name, plain string) ([]byte, error) {
	if plain == "" {
		return nil, nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte{sealVersion}, nonce...)
	return s.aead.Seal(out, nonce, []byte(plain), []byte(name)), nil
}

// open decrypts what seal made.
func (s *sealer) open(name string, sealed []byte) (string, error) {
	if len(sealed) == 0 {
		return "", nil
	}
	n := s.aead.NonceSize()
	if len(sealed) < 1+n || sealed[0] != sealVersion {
		return "", errors.New("sealed credential: unknown format")
	}
	plain, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(name))
	if err != nil {
		return "", fmt.Errorf("sealed credential of endpoint %s: %w (was the cluster secret changed?)", name, err)
	}
	return string(plain), nil
}
