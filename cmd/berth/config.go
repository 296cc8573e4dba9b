package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/replicate"
)

// Config is everything `berth serve` can be told. Each key is a YAML key
// (--config), a BERTH_* environment variable and a flag; a flag wins over the
// environment, which wins over the file, which wins over the defaults. The
// packages receive their own typed Config built from it (clusterConfig,
// registryConfig); nothing below cmd reads flags, files or environment.
type Config struct {
	Addr              string        `yaml:"addr"`
	Data              string        `yaml:"data"`
	RaftAddr          string        `yaml:"raft_addr"`
	GossipAddr        string        `yaml:"gossip_addr"`
	Advertise         string        `yaml:"advertise"`
	Join              []string      `yaml:"join"`
	ClusterSecret     string        `yaml:"cluster_secret"`
	ClusterSecretFile string        `yaml:"cluster_secret_file"`
	BlobWriteQuorum   int           `yaml:"blob_write_quorum"`
	DeadPeerTimeout   time.Duration `yaml:"dead_peer_timeout"`
	NodeID            string        `yaml:"node_id"`
	AnonymousPull     bool          `yaml:"anonymous_pull"`
	GCInterval        time.Duration `yaml:"gc_interval"`
	GCGrace           time.Duration `yaml:"gc_grace"`
	UploadPurgeAfter  time.Duration `yaml:"upload_purge_after"`
	MaxBlobSize       int64         `yaml:"max_blob_size"`
	LogLevel          string        `yaml:"log_level"`
	LogFormat         string        `yaml:"log_format"`

	ReplicationWorkers    int           `yaml:"replication_workers"`
	ReplicationLease      time.Duration `yaml:"replication_lease"`
	ReconcileInterval     time.Duration `yaml:"reconcile_interval"`
	ReplicationRetryMax   time.Duration `yaml:"replication_retry_max"`
	ReplicationHistory    int           `yaml:"replication_history"`
	ReplicationHistoryAge time.Duration `yaml:"replication_history_age"`
	TombstoneTTL          time.Duration `yaml:"tombstone_ttl"`

	ExternalURL        string        `yaml:"external_url"`
	TokenExpiry        time.Duration `yaml:"token_expiry"`
	RefreshTokenExpiry time.Duration `yaml:"refresh_token_expiry"`
	SelfRegistration   bool          `yaml:"self_registration"`
	ProjectCreation    string        `yaml:"project_creation"`
	AuditRetention     time.Duration `yaml:"audit_retention"`
	AuditMaxEvents     int           `yaml:"audit_max_events"`
	TokenKeyRotation   time.Duration `yaml:"token_key_rotation"`
}

// Log formats accepted by log_format.
const (
	logFormatAuto = "auto" // text on a terminal, JSON otherwise
	logFormatText = "text"
	logFormatJSON = "json"
)

// DefaultConfig is the configuration of `berth serve` with no arguments: a
// one-node registry in ./data.
func DefaultConfig() Config {
	rc := registry.DefaultConfig()
	pc := replicate.DefaultConfig()
	ac := registry.DefaultAuthConfig()
	return Config{
		ReplicationWorkers:    pc.Workers,
		ReplicationLease:      pc.Lease,
		ReconcileInterval:     pc.ReconcileInterval,
		ReplicationRetryMax:   pc.RetryMax,
		ReplicationHistory:    pc.HistoryCount,
		ReplicationHistoryAge: pc.HistoryAge,
		TombstoneTTL:          pc.TombstoneTTL,
		Addr:                  ":5000",
		Data:                  "./data",
		RaftAddr:              ":5001",
		GossipAddr:            ":5002",
		DeadPeerTimeout:       cluster.DefaultConfig().DeadPeerTimeout,
		AnonymousPull:         true,
		GCInterval:            time.Hour,
		GCGrace:               time.Hour,
		UploadPurgeAfter:      24 * time.Hour,
		MaxBlobSize:           rc.MaxBlobSize,
		LogLevel:              "info",
		LogFormat:             logFormatAuto,
		TokenExpiry:           ac.TokenTTL,
		RefreshTokenExpiry:    ac.RefreshTTL,
		ProjectCreation:       api.DefaultConfig().ProjectCreation,
		AuditRetention:        cluster.DefaultConfig().AuditRetention,
		AuditMaxEvents:        cluster.DefaultConfig().AuditMaxEvents,
		TokenKeyRotation:      cluster.DefaultConfig().TokenKeyRotation,
	}
}

// Validate checks what cmd itself interprets; the package configs built from
// c are validated by their own Validate.
func (c Config) Validate() error {
	if c.Addr == "" {
		return errors.New("addr must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("addr %q: %w", c.Addr, err)
	}
	if c.Data == "" {
		return errors.New("data must not be empty")
	}
	for i, j := range c.Join {
		c.Join[i] = strings.TrimSpace(j)
		if _, _, err := net.SplitHostPort(c.Join[i]); err != nil {
			return fmt.Errorf("join address %q: want HOST:PORT (a member's gossip address)", j)
		}
	}
	if c.ClusterSecret != "" && c.ClusterSecretFile != "" {
		return errors.New("cluster_secret and cluster_secret_file are both set: give the secret one way")
	}
	if c.BlobWriteQuorum < 0 {
		return fmt.Errorf("blob_write_quorum %d must not be negative", c.BlobWriteQuorum)
	}
	if c.Advertise != "" && strings.ContainsAny(c.Advertise, ":/ ") && net.ParseIP(c.Advertise) == nil {
		return fmt.Errorf("advertise %q: want a host name or IP, without a port", c.Advertise)
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		return err
	}
	switch c.LogFormat {
	case logFormatAuto, logFormatText, logFormatJSON:
	default:
		return fmt.Errorf("log_format %q: want auto, text or json", c.LogFormat)
	}
	if c.ExternalURL != "" {
		u, err := url.Parse(c.ExternalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("external_url %q: want http(s)://host[:port][/path], the address clients reach berth at", c.ExternalURL)
		}
	}
	if c.TokenExpiry <= 0 || c.TokenExpiry > registry.MaxTokenTTL {
		return fmt.Errorf("token_expiry %s: want more than 0 and at most %s", c.TokenExpiry, registry.MaxTokenTTL)
	}
	if c.RefreshTokenExpiry < c.TokenExpiry {
		return fmt.Errorf("refresh_token_expiry %s must not be shorter than token_expiry", c.RefreshTokenExpiry)
	}
	switch c.ProjectCreation {
	case api.ProjectCreationEveryone, api.ProjectCreationAdminOnly:
	default:
		return fmt.Errorf("project_creation %q: want everyone or adminonly", c.ProjectCreation)
	}
	if c.TokenKeyRotation < 0 {
		return fmt.Errorf("token_key_rotation %s must not be negative (0: never)", c.TokenKeyRotation)
	}
	if c.AuditRetention <= 0 || c.AuditMaxEvents <= 0 {
		return errors.New("audit_retention and audit_max_events must be positive")
	}
	return nil
}

// clusterConfig is the cluster.Config of this node. Each address is bound
// as given and advertised as the advertise host with the bound port.
func (c Config) clusterConfig(nodeID string, secret []byte) (cluster.Config, error) {
	cc := cluster.DefaultConfig()
	cc.NodeID = nodeID
	cc.DataDir = c.Data
	cc.Version = version
	cc.Secret = secret
	cc.DeadPeerTimeout = c.DeadPeerTimeout
	cc.AuditRetention = c.AuditRetention
	cc.AuditMaxEvents = c.AuditMaxEvents
	cc.TokenKeyRotation = c.TokenKeyRotation
	host := c.advertiseHost()
	var err error
	cc.RaftAddr = c.RaftAddr
	if cc.RaftAdvertise, err = withHost(host, c.RaftAddr); err != nil {
		return cc, fmt.Errorf("raft_addr %q: %w", c.RaftAddr, err)
	}
	if cc.HTTPAdvertise, err = withHost(host, c.Addr); err != nil {
		return cc, fmt.Errorf("addr %q: %w", c.Addr, err)
	}
	if c.GossipAddr != "" {
		cc.GossipAddr = c.GossipAddr
		if cc.GossipAdvertise, err = withHost(host, c.GossipAddr); err != nil {
			return cc, fmt.Errorf("gossip_addr %q: %w", c.GossipAddr, err)
		}
	}
	cc.Join = c.Join
	// The first node of a cluster starts without --join and bootstraps it;
	// on a restart Raft finds its state and bootstrapping is skipped. A
	// node that joins waits to be added by the leader.
	cc.Bootstrap = len(c.joinOthers(cc.GossipAdvertise)) == 0
	return cc, nil
}

// joinOthers returns the join addresses that are not this node's own.
func (c Config) joinOthers(self string) []string {
	var out []string
	for _, j := range c.Join {
		if j != self && j != c.GossipAddr {
			out = append(out, j)
		}
	}
	return out
}

// advertiseHost is the host other nodes reach this one at: --advertise, or
// else the specific IP the Raft or HTTP address binds, or else this host's
// private IP (127.0.0.1 when it has none).
func (c Config) advertiseHost() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	for _, a := range []string{c.RaftAddr, c.Addr, c.GossipAddr} {
		host, _, err := net.SplitHostPort(a)
		if ip := net.ParseIP(host); err == nil && ip != nil && !ip.IsUnspecified() {
			return host
		}
	}
	if ip, err := sockaddr.GetPrivateIP(); err == nil && ip != "" {
		return ip
	}
	return "127.0.0.1"
}

// withHost returns host with the port of addr.
func withHost(host, addr string) (string, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, port), nil
}

// blobConfig is the cluster.BlobConfig of this node.
func (c Config) blobConfig() cluster.BlobConfig {
	bc := cluster.DefaultBlobConfig()
	bc.WriteQuorum = c.BlobWriteQuorum
	bc.MaxBlobSize = c.MaxBlobSize
	return bc
}

// replicateConfig is the replicate.Config of this node; the credential key
// is derived from the cluster secret.
func (c Config) replicateConfig(nodeID string, credentialKey []byte) replicate.Config {
	pc := replicate.DefaultConfig()
	pc.NodeID = nodeID
	pc.CredentialKey = credentialKey
	pc.Workers = c.ReplicationWorkers
	pc.Lease = c.ReplicationLease
	pc.ReconcileInterval = c.ReconcileInterval
	pc.RetryMax = c.ReplicationRetryMax
	pc.HistoryCount = c.ReplicationHistory
	pc.HistoryAge = c.ReplicationHistoryAge
	pc.TombstoneTTL = c.TombstoneTTL
	return pc
}

// authConfig is the registry.AuthConfig of this node: token auth.
func (c Config) authConfig() registry.AuthConfig {
	ac := registry.DefaultAuthConfig()
	ac.ExternalURL = strings.TrimSuffix(c.ExternalURL, "/")
	ac.TokenTTL = c.TokenExpiry
	ac.RefreshTTL = c.RefreshTokenExpiry
	ac.AnonymousPull = c.AnonymousPull
	return ac
}

// apiConfig is the api.Config of this node.
func (c Config) apiConfig() api.Config {
	ac := api.DefaultConfig()
	ac.SelfRegistration = c.SelfRegistration
	ac.ProjectCreation = c.ProjectCreation
	return ac
}

// registryConfig is the registry.Config of this node.
func (c Config) registryConfig() registry.Config {
	rc := registry.DefaultConfig()
	rc.DataDir = c.Data
	rc.AnonymousPull = c.AnonymousPull
	rc.GCInterval = c.GCInterval
	rc.GCGrace = c.GCGrace
	rc.UploadPurgeAfter = c.UploadPurgeAfter
	rc.MaxBlobSize = c.MaxBlobSize
	return rc
}

func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Names of the serve flags; each is also a BERTH_* variable.
const (
	flagConfig            = "config"
	flagAddr              = "addr"
	flagData              = "data"
	flagRaftAddr          = "raft-addr"
	flagGossipAddr        = "gossip-addr"
	flagAdvertise         = "advertise"
	flagJoin              = "join"
	flagClusterSecret     = "cluster-secret"
	flagClusterSecretFile = "cluster-secret-file"
	flagBlobWriteQuorum   = "blob-write-quorum"
	flagDeadPeerTimeout   = "dead-peer-timeout"
	flagNodeID            = "node-id"
	flagAnonymousPull     = "anonymous-pull"
	flagGCInterval        = "gc-interval"
	flagGCGrace           = "gc-grace"
	flagUploadPurgeAfter  = "upload-purge-after"
	flagMaxBlobSize       = "max-blob-size"
	flagLogLevel          = "log-level"
	flagLogFormat         = "log-format"

	flagReplicationWorkers    = "replication-workers"
	flagReplicationLease      = "replication-lease"
	flagReconcileInterval     = "reconcile-interval"
	flagReplicationRetryMax   = "replication-retry-max"
	flagReplicationHistory    = "replication-history"
	flagReplicationHistoryAge = "replication-history-age"
	flagTombstoneTTL          = "tombstone-ttl"

	flagExternalURL        = "external-url"
	flagTokenExpiry        = "token-expiry"
	flagRefreshTokenExpiry = "refresh-token-expiry"
	flagSelfRegistration   = "self-registration"
	flagProjectCreation    = "project-creation"
	flagAuditRetention     = "audit-retention"
	flagAuditMaxEvents     = "audit-max-events"
	flagTokenKeyRotation   = "token-key-rotation"
)

// serveFlags returns new flag values (cli records on them whether they were
// set, so they must not be shared between runs). The displayed defaults are
// those of DefaultConfig.
func serveFlags() []cli.Flag {
	d := DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: flagConfig, EnvVars: []string{"BERTH_CONFIG"}, Usage: "YAML configuration `FILE`"},
		&cli.StringFlag{Name: flagAddr, EnvVars: []string{"BERTH_ADDR"}, Value: d.Addr, Usage: "HTTP listen address (OCI API, management API, metrics)"},
		&cli.StringFlag{Name: flagData, EnvVars: []string{"BERTH_DATA"}, Value: d.Data, Usage: "data `DIR` (Raft log, state, blobs, uploads)"},
		&cli.StringFlag{Name: flagRaftAddr, EnvVars: []string{"BERTH_RAFT_ADDR"}, Value: d.RaftAddr, Usage: "Raft TCP address to bind (mutual TLS keyed by the cluster secret)"},
		&cli.StringFlag{Name: flagGossipAddr, EnvVars: []string{"BERTH_GOSSIP_ADDR"}, Value: d.GossipAddr, Usage: "gossip (memberlist) address to bind, TCP and UDP"},
		&cli.StringFlag{Name: flagAdvertise, EnvVars: []string{"BERTH_ADVERTISE"}, Usage: "`HOST` (name or IP) other nodes reach this one at (default: the IP the addresses bind, else this host's private IP)"},
		&cli.StringSliceFlag{Name: flagJoin, EnvVars: []string{"BERTH_JOIN"}, Usage: "gossip addresses `HOST:PORT,...` of members of the cluster to join (the first node starts without)"},
		&cli.StringFlag{Name: flagClusterSecret, EnvVars: []string{"BERTH_CLUSTER_SECRET"}, Usage: "the cluster secret, the same on every node (default: <data>/cluster.secret, generated on the first node)"},
		&cli.StringFlag{Name: flagClusterSecretFile, EnvVars: []string{"BERTH_CLUSTER_SECRET_FILE"}, Usage: "`FILE` holding the cluster secret"},
		&cli.IntFlag{Name: flagBlobWriteQuorum, EnvVars: []string{"BERTH_BLOB_WRITE_QUORUM"}, Value: d.BlobWriteQuorum, Usage: "nodes a blob must be durable on before an upload is acknowledged (0: 2 on a cluster of two or more nodes)"},
		&cli.DurationFlag{Name: flagDeadPeerTimeout, EnvVars: []string{"BERTH_DEAD_PEER_TIMEOUT"}, Value: d.DeadPeerTimeout, Usage: "how long a dead member stays in the Raft configuration before the leader removes it"},
		&cli.StringFlag{Name: flagNodeID, EnvVars: []string{"BERTH_NODE_ID"}, Usage: "node id (default: generated once and kept in <data>/node-id)"},
		&cli.BoolFlag{Name: flagAnonymousPull, EnvVars: []string{"BERTH_ANONYMOUS_PULL"}, Value: d.AnonymousPull, Usage: "allow pulls without credentials"},
		&cli.DurationFlag{Name: flagGCInterval, EnvVars: []string{"BERTH_GC_INTERVAL"}, Value: d.GCInterval, Usage: "how often garbage collection runs"},
		&cli.DurationFlag{Name: flagGCGrace, EnvVars: []string{"BERTH_GC_GRACE"}, Value: d.GCGrace, Usage: "minimum age of an unreferenced blob before GC deletes it"},
		&cli.DurationFlag{Name: flagUploadPurgeAfter, EnvVars: []string{"BERTH_UPLOAD_PURGE_AFTER"}, Value: d.UploadPurgeAfter, Usage: "idle time after which an upload session is purged"},
		&cli.Int64Flag{Name: flagMaxBlobSize, EnvVars: []string{"BERTH_MAX_BLOB_SIZE"}, Value: d.MaxBlobSize, Usage: "largest blob accepted, in `BYTES`"},
		&cli.StringFlag{Name: flagLogLevel, EnvVars: []string{"BERTH_LOG_LEVEL"}, Value: d.LogLevel, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: flagLogFormat, EnvVars: []string{"BERTH_LOG_FORMAT"}, Value: d.LogFormat, Usage: "auto (text on a terminal, JSON otherwise), text or json"},
		&cli.IntFlag{Name: flagReplicationWorkers, EnvVars: []string{"BERTH_REPLICATION_WORKERS"}, Value: d.ReplicationWorkers, Usage: "replication tasks this node runs at once"},
		&cli.DurationFlag{Name: flagReplicationLease, EnvVars: []string{"BERTH_REPLICATION_LEASE"}, Value: d.ReplicationLease, Usage: "how long a node holds a replication task without renewing it; a task of a node that died is taken over after it"},
		&cli.DurationFlag{Name: flagReconcileInterval, EnvVars: []string{"BERTH_RECONCILE_INTERVAL"}, Value: d.ReconcileInterval, Usage: "how often every enabled replication policy compares source and destination"},
		&cli.DurationFlag{Name: flagReplicationRetryMax, EnvVars: []string{"BERTH_REPLICATION_RETRY_MAX"}, Value: d.ReplicationRetryMax, Usage: "longest wait between retries of a replication task"},
		&cli.IntFlag{Name: flagReplicationHistory, EnvVars: []string{"BERTH_REPLICATION_HISTORY"}, Value: d.ReplicationHistory, Usage: "finished replication executions kept"},
		&cli.DurationFlag{Name: flagReplicationHistoryAge, EnvVars: []string{"BERTH_REPLICATION_HISTORY_AGE"}, Value: d.ReplicationHistoryAge, Usage: "how long finished replication executions are kept"},
		&cli.DurationFlag{Name: flagTombstoneTTL, EnvVars: []string{"BERTH_TOMBSTONE_TTL"}, Value: d.TombstoneTTL, Usage: "how long a deleted tag's tombstone is kept, so that an older replicated write cannot bring it back"},
		&cli.StringFlag{Name: flagExternalURL, EnvVars: []string{"BERTH_EXTERNAL_URL"}, Usage: "`URL` clients reach berth at, for the token realm (default: the scheme and host of each request)"},
		&cli.DurationFlag{Name: flagTokenExpiry, EnvVars: []string{"BERTH_TOKEN_EXPIRY"}, Value: d.TokenExpiry, Usage: "lifetime of access tokens (at most 5m)"},
		&cli.DurationFlag{Name: flagRefreshTokenExpiry, EnvVars: []string{"BERTH_REFRESH_TOKEN_EXPIRY"}, Value: d.RefreshTokenExpiry, Usage: "lifetime of refresh tokens (docker login's identity token)"},
		&cli.BoolFlag{Name: flagSelfRegistration, EnvVars: []string{"BERTH_SELF_REGISTRATION"}, Value: d.SelfRegistration, Usage: "let anyone create a (non-admin) user account"},
		&cli.StringFlag{Name: flagProjectCreation, EnvVars: []string{"BERTH_PROJECT_CREATION"}, Value: d.ProjectCreation, Usage: "who may create projects: everyone (any user) or adminonly"},
		&cli.DurationFlag{Name: flagAuditRetention, EnvVars: []string{"BERTH_AUDIT_RETENTION"}, Value: d.AuditRetention, Usage: "how long audit events are kept"},
		&cli.IntFlag{Name: flagAuditMaxEvents, EnvVars: []string{"BERTH_AUDIT_MAX_EVENTS"}, Value: d.AuditMaxEvents, Usage: "most audit events kept (the oldest go first)"},
		&cli.DurationFlag{Name: flagTokenKeyRotation, EnvVars: []string{"BERTH_TOKEN_KEY_ROTATION"}, Value: d.TokenKeyRotation, Usage: "age at which the token signing key is replaced (0: never; POST /api/v1/system/token-keys/rotate rotates at once)"},
	}
}

// loadConfig resolves the configuration of a serve invocation: defaults,
// then the YAML file, then every flag that was set on the command line or
// through its environment variable (cli lets the command line win).
func loadConfig(c *cli.Context) (Config, error) {
	cfg := DefaultConfig()
	if path := c.String(flagConfig); path != "" {
		if err := readConfigFile(path, &cfg); err != nil {
			return Config{}, err
		}
	}
	if c.IsSet(flagAddr) {
		cfg.Addr = c.String(flagAddr)
	}
	if c.IsSet(flagData) {
		cfg.Data = c.String(flagData)
	}
	if c.IsSet(flagRaftAddr) {
		cfg.RaftAddr = c.String(flagRaftAddr)
	}
	if c.IsSet(flagGossipAddr) {
		cfg.GossipAddr = c.String(flagGossipAddr)
	}
	if c.IsSet(flagAdvertise) {
		cfg.Advertise = c.String(flagAdvertise)
	}
	if c.IsSet(flagJoin) {
		cfg.Join = c.StringSlice(flagJoin)
	}
	if c.IsSet(flagClusterSecret) {
		cfg.ClusterSecret = c.String(flagClusterSecret)
	}
	if c.IsSet(flagClusterSecretFile) {
		cfg.ClusterSecretFile = c.String(flagClusterSecretFile)
	}
	if c.IsSet(flagBlobWriteQuorum) {
		cfg.BlobWriteQuorum = c.Int(flagBlobWriteQuorum)
	}
	if c.IsSet(flagDeadPeerTimeout) {
		cfg.DeadPeerTimeout = c.Duration(flagDeadPeerTimeout)
	}
	if c.IsSet(flagNodeID) {
		cfg.NodeID = c.String(flagNodeID)
	}
	if c.IsSet(flagAnonymousPull) {
		cfg.AnonymousPull = c.Bool(flagAnonymousPull)
	}
	if c.IsSet(flagGCInterval) {
		cfg.GCInterval = c.Duration(flagGCInterval)
	}
	if c.IsSet(flagGCGrace) {
		cfg.GCGrace = c.Duration(flagGCGrace)
	}
	if c.IsSet(flagUploadPurgeAfter) {
		cfg.UploadPurgeAfter = c.Duration(flagUploadPurgeAfter)
	}
	if c.IsSet(flagMaxBlobSize) {
		cfg.MaxBlobSize = c.Int64(flagMaxBlobSize)
	}
	if c.IsSet(flagLogLevel) {
		cfg.LogLevel = c.String(flagLogLevel)
	}
	if c.IsSet(flagLogFormat) {
		cfg.LogFormat = c.String(flagLogFormat)
	}
	if c.IsSet(flagReplicationWorkers) {
		cfg.ReplicationWorkers = c.Int(flagReplicationWorkers)
	}
	if c.IsSet(flagReplicationLease) {
		cfg.ReplicationLease = c.Duration(flagReplicationLease)
	}
	if c.IsSet(flagReconcileInterval) {
		cfg.ReconcileInterval = c.Duration(flagReconcileInterval)
	}
	if c.IsSet(flagReplicationRetryMax) {
		cfg.ReplicationRetryMax = c.Duration(flagReplicationRetryMax)
	}
	if c.IsSet(flagReplicationHistory) {
		cfg.ReplicationHistory = c.Int(flagReplicationHistory)
	}
	if c.IsSet(flagReplicationHistoryAge) {
		cfg.ReplicationHistoryAge = c.Duration(flagReplicationHistoryAge)
	}
	if c.IsSet(flagTombstoneTTL) {
		cfg.TombstoneTTL = c.Duration(flagTombstoneTTL)
	}
	if c.IsSet(flagExternalURL) {
		cfg.ExternalURL = c.String(flagExternalURL)
	}
	if c.IsSet(flagTokenExpiry) {
		cfg.TokenExpiry = c.Duration(flagTokenExpiry)
	}
	if c.IsSet(flagRefreshTokenExpiry) {
		cfg.RefreshTokenExpiry = c.Duration(flagRefreshTokenExpiry)
	}
	if c.IsSet(flagSelfRegistration) {
		cfg.SelfRegistration = c.Bool(flagSelfRegistration)
	}
	if c.IsSet(flagProjectCreation) {
		cfg.ProjectCreation = c.String(flagProjectCreation)
	}
	if c.IsSet(flagAuditRetention) {
		cfg.AuditRetention = c.Duration(flagAuditRetention)
	}
	if c.IsSet(flagAuditMaxEvents) {
		cfg.AuditMaxEvents = c.Int(flagAuditMaxEvents)
	}
	if c.IsSet(flagTokenKeyRotation) {
		cfg.TokenKeyRotation = c.Duration(flagTokenKeyRotation)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// readConfigFile decodes the YAML file at path over cfg; keys it does not
// set keep their value. An unknown or repeated key is an error, so a typo is
// not silently ignored, and every error names the key and its line.
func readConfigFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if err := decodeConfig(b, cfg); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

func decodeConfig(b []byte, cfg *Config) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return err
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty, or only comments
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping of keys to values", root.Line)
	}
	fields := map[string]reflect.Value{}
	var known []string
	v := reflect.ValueOf(cfg).Elem()
	for i := range v.NumField() {
		key := v.Type().Field(i).Tag.Get("yaml")
		fields[key] = v.Field(i)
		known = append(known, key)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, val := root.Content[i], root.Content[i+1]
		field, ok := fields[k.Value]
		switch {
		case !ok:
			return fmt.Errorf("line %d: unknown key %q (known keys: %s)", k.Line, k.Value, strings.Join(known, ", "))
		case seen[k.Value]:
			return fmt.Errorf("line %d: key %q repeated", k.Line, k.Value)
		}
		seen[k.Value] = true
		if err := val.Decode(field.Addr().Interface()); err != nil {
			return fmt.Errorf("line %d: %s: %s", val.Line, k.Value, yamlReason(err))
		}
	}
	return nil
}

// yamlReason shortens a yaml.v3 decoding error to its reason; the caller
// names the key and the line.
func yamlReason(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	reasons := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		reasons[i] = yamlLinePrefix.ReplaceAllString(e, "")
	}
	return strings.Join(reasons, "; ")
}

var yamlLinePrefix = regexp.MustCompile(`^line \d+: `)
