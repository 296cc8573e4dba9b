package cluster

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// streamLayer is Raft's TCP stream layer with an advertise address that
// may be a host name. hashicorp/raft's own TCP layer insists on an IP, but
// in a container network the service name is the stable address: a
// restarted container may come back with another IP, and dialing the name
// finds it.
type streamLayer struct {
	ln        net.Listener
	advertise advertiseAddr
	tls       *tls.Config // nil: plain TCP (no cluster secret)
}

// advertiseAddr is a host:port as a net.Addr.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.tls == nil {
		return d.Dial("tcp", string(address))
	}
	return tls.DialWithDialer(d, "tcp", string(address), s.tls)
}

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil || s.tls == nil {
		return c, err
	}
	// The handshake runs on the connection's first read, in raft's handler
	// goroutine, so one slow peer cannot hold up the accept loop.
	return tls.Server(c, s.tls), nil
}
func (s *streamLayer) Close() error   { return s.ln.Close() }
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// newTCPTransport binds bind and returns a Raft network transport that
// tells other nodes to dial advertise; with a secret, over mutual TLS.
func newTCPTransport(bind, advertise string, secret []byte, logger hclog.Logger) (*raft.NetworkTransport, error) {
	var tc *tls.Config
	if len(secret) > 0 {
		var err error
		if tc, err = raftTLS(secret); err != nil {
			return nil, fmt.Errorf("raft tls: %w", err)
		}
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft transport on %s: %w", bind, err)
	}
	// A port of 0 is chosen by the kernel; advertise what was bound.
	if host, port, _ := net.SplitHostPort(advertise); port == "0" {
		_, bound, _ := net.SplitHostPort(ln.Addr().String())
		advertise = net.JoinHostPort(host, bound)
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &streamLayer{ln: ln, advertise: advertiseAddr(advertise), tls: tc},
		MaxPool: transportPool,
		Timeout: transportWait,
		Logger:  logger,
	}), nil
}

// raftTLS returns the TLS configurations of the Raft transport. Raft's RPCs
// are not authenticated by themselves, and anyone who can send them can
// rewrite the state, so every Raft connection is mutual TLS 1.3 with one
// Ed25519 key derived from the cluster secret: a peer is trusted exactly
// when it proves it holds the key, i.e. knows the secret. Each node makes
// its own self-signed certificate for the key; the peer's certificate is
// checked by its public key, not by a CA.
func raftTLS(secret []byte) (*tls.Config, error) {
	seed, err := hkdf.Key(sha256.New, secret, []byte("berth cluster"), "raft tls key v1", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "berth raft"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"berth-raft"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, err
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("raft peer sent no certificate")
		}
		c, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		if p, ok := c.PublicKey.(ed25519.PublicKey); !ok || !p.Equal(pub) {
			return errors.New("raft peer does not hold this cluster's key (a different cluster secret?)")
		}
		return nil
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:            tls.RequireAnyClientCert,
		InsecureSkipVerify:    true, // no CA: VerifyPeerCertificate pins the key
		VerifyPeerCertificate: verify,
		ServerName:            "berth-raft",
	}, nil
}
