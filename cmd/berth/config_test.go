package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// berthEnv lists every environment variable serve reads through its flags.
func berthEnv() []string {
	var names []string
	for _, f := range serveFlags() {
		if ef, ok := f.(interface{ GetEnvVars() []string }); ok {
			names = append(names, ef.GetEnvVars()...)
		}
	}
	return names
}

// resolveConfig runs loadConfig as `berth serve` would, with env set (and
// every other BERTH_* variable unset), the YAML file (when not empty)
// passed with --config, and args on the command line.
func resolveConfig(t *testing.T, env map[string]string, file string, args ...string) (Config, error) {
	t.Helper()
	for _, name := range berthEnv() {
		t.Setenv(name, "") // restores the variable after the test
		os.Unsetenv(name)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	if file != "" {
		path := filepath.Join(t.TempDir(), "berth.yaml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	var got Config
	app := &cli.App{
		Name:           "serve",
		Flags:          serveFlags(),
		Writer:         io.Discard,
		ErrWriter:      io.Discard,
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			var err error
			got, err = loadConfig(c)
			return err
		},
	}
	err := app.Run(append([]string{"serve"}, args...))
	return got, err
}

func TestConfigPrecedence(t *testing.T) {
	const file = `
addr: ":7000"
data: /file/data
raft_addr: 127.0.0.2:7001
gossip_addr: 127.0.0.2:7002
advertise: node-a.example
join: [node-b.example:7002, node-c.example:7002]
cluster_secret_file: /file/secret
blob_write_quorum: 3
dead_peer_timeout: 10m
node_id: file-node
anonymous_pull: false
gc_interval: 3h
gc_grace: 30m
upload_purge_after: 48h
max_blob_size: 1000
log_level: debug
log_format: json
`
	defaults := DefaultConfig()
	fromFile := Config{
		Addr: ":7000", Data: "/file/data", RaftAddr: "127.0.0.2:7001", NodeID: "file-node",
		GossipAddr: "127.0.0.2:7002", Advertise: "node-a.example", Join: []string{"node-b.example:7002", "node-c.example:7002"},
		ClusterSecretFile: "/file/secret", BlobWriteQuorum: 3, DeadPeerTimeout: 10 * time.Minute,
		AnonymousPull: false, GCInterval: 3 * time.Hour, GCGrace: 30 * time.Minute,
		UploadPurgeAfter: 48 * time.Hour, MaxBlobSize: 1000, LogLevel: "debug", LogFormat: "json",
	}
	with := func(c Config, f func(*Config)) Config { f(&c); return c }

	tests := []struct {
		name string
		env  map[string]string
		file string
		args []string
		want Config
	}{
		{name: "defaults", want: defaults},
		{name: "file over defaults", file: file, want: fromFile},
		{
			name: "file sets only some keys",
			file: "addr: \":7000\"\ngc_grace: 2h\n",
			want: with(defaults, func(c *Config) { c.Addr = ":7000"; c.GCGrace = 2 * time.Hour }),
		},
		{name: "empty file", file: "# nothing\n", want: defaults},
		{
			name: "env over file",
			file: file,
			env: map[string]string{
				"BERTH_ADDR": ":8000", "BERTH_DATA": "/env/data", "BERTH_RAFT_ADDR": "127.0.0.3:8001",
				"BERTH_NODE_ID": "env-node", "BERTH_ANONYMOUS_PULL": "true", "BERTH_GC_INTERVAL": "4h",
				"BERTH_GC_GRACE": "40m", "BERTH_UPLOAD_PURGE_AFTER": "72h", "BERTH_MAX_BLOB_SIZE": "2000",
				"BERTH_LOG_LEVEL": "warn", "BERTH_LOG_FORMAT": "text",
				"BERTH_GOSSIP_ADDR": "127.0.0.3:8002", "BERTH_ADVERTISE": "node-env", "BERTH_JOIN": "x:1,y:2",
				"BERTH_CLUSTER_SECRET_FILE": "/env/secret", "BERTH_BLOB_WRITE_QUORUM": "1", "BERTH_DEAD_PEER_TIMEOUT": "1m",
			},
			want: Config{
				Addr: ":8000", Data: "/env/data", RaftAddr: "127.0.0.3:8001", NodeID: "env-node",
				GossipAddr: "127.0.0.3:8002", Advertise: "node-env", Join: []string{"x:1", "y:2"},
				ClusterSecretFile: "/env/secret", BlobWriteQuorum: 1, DeadPeerTimeout: time.Minute,
				AnonymousPull: true, GCInterval: 4 * time.Hour, GCGrace: 40 * time.Minute,
				UploadPurgeAfter: 72 * time.Hour, MaxBlobSize: 2000, LogLevel: "warn", LogFormat: "text",
			},
		},
		{
			name: "flag over env over file",
			file: file,
			env:  map[string]string{"BERTH_ADDR": ":8000", "BERTH_GC_GRACE": "40m", "BERTH_ANONYMOUS_PULL": "true"},
			args: []string{
				"--addr", ":9000", "--data", "/flag/data", "--raft-addr", "127.0.0.4:9001", "--node-id", "flag-node",
				"--anonymous-pull=false", "--gc-interval", "5h", "--gc-grace", "50m", "--upload-purge-after", "96h",
				"--max-blob-size", "3000", "--log-level", "error", "--log-format", "auto",
				"--gossip-addr", ":9002", "--advertise", "10.1.2.3", "--join", "a:1", "--join", "b:2",
				"--blob-write-quorum", "2", "--dead-peer-timeout", "30s",
			},
			want: Config{
				Addr: ":9000", Data: "/flag/data", RaftAddr: "127.0.0.4:9001", NodeID: "flag-node",
				GossipAddr: ":9002", Advertise: "10.1.2.3", Join: []string{"a:1", "b:2"}, ClusterSecretFile: "/file/secret",
				BlobWriteQuorum: 2, DeadPeerTimeout: 30 * time.Second,
				AnonymousPull: false, GCInterval: 5 * time.Hour, GCGrace: 50 * time.Minute,
				UploadPurgeAfter: 96 * time.Hour, MaxBlobSize: 3000, LogLevel: "error", LogFormat: "auto",
			},
		},
		{
			name: "access settings",
			file: "external_url: https://registry.example\nself_registration: true\n",
			env:  map[string]string{"BERTH_TOKEN_EXPIRY": "2m", "BERTH_PROJECT_CREATION": "adminonly"},
			args: []string{"--refresh-token-expiry", "24h", "--audit-retention", "720h", "--audit-max-events", "5000", "--token-key-rotation", "168h"},
			want: with(defaults, func(c *Config) {
				c.ExternalURL, c.SelfRegistration, c.TokenExpiry, c.ProjectCreation = "https://registry.example", true, 2*time.Minute, "adminonly"
				c.RefreshTokenExpiry, c.AuditRetention, c.AuditMaxEvents, c.TokenKeyRotation = 24*time.Hour, 720*time.Hour, 5000, 168*time.Hour
			}),
		},
		{
			name: "env only, no file",
			env:  map[string]string{"BERTH_DATA": "/env/data"},
			want: with(defaults, func(c *Config) { c.Data = "/env/data" }),
		},
		{
			name: "zero gc interval disables the schedule",
			env:  map[string]string{"BERTH_GC_INTERVAL": "0s"},
			args: []string{"--addr", "127.0.0.1:5555"},
			want: with(defaults, func(c *Config) { c.Addr = "127.0.0.1:5555"; c.GCInterval = 0 }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want = withReplicationDefaults(tt.want)
			got, err := resolveConfig(t, tt.env, tt.file, tt.args...)
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestConfigFileFromEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte("addr: \":7000\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := resolveConfig(t, map[string]string{"BERTH_CONFIG": path}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Addr != ":7000" {
		t.Errorf("addr = %q, want :7000 from the file named by BERTH_CONFIG", got.Addr)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		file    string
		args    []string
		wantErr string
	}{
		{name: "unknown yaml key", file: "addr: \":5000\"\ngc_intervall: 1h\n", wantErr: `unknown key "gc_intervall"`},
		{name: "invalid yaml duration", file: "gc_grace: soon\n", wantErr: "line 1: gc_grace: cannot unmarshal !!str `soon` into time.Duration"},
		{name: "repeated yaml key", file: "addr: \":1\"\naddr: \":2\"\n", wantErr: `line 2: key "addr" repeated`},
		{name: "invalid yaml", file: "addr: [\n", wantErr: "config file"},
		{name: "yaml not a mapping", file: "- a\n- b\n", wantErr: "config file"},
		{name: "invalid env duration", env: map[string]string{"BERTH_GC_INTERVAL": "hourly"}, wantErr: "hourly"},
		{name: "invalid flag duration", args: []string{"--upload-purge-after", "1d"}, wantErr: "1d"},
		{name: "invalid env bool", env: map[string]string{"BERTH_ANONYMOUS_PULL": "maybe"}, wantErr: "maybe"},
		{name: "invalid log level", args: []string{"--log-level", "loud"}, wantErr: "log_level"},
		{name: "long-lived access tokens", args: []string{"--token-expiry", "1h"}, wantErr: "token_expiry"},
		{name: "unknown project creation", args: []string{"--project-creation", "anyone"}, wantErr: "project_creation"},
		{name: "external url without scheme", args: []string{"--external-url", "registry.example"}, wantErr: "external_url"},
		{name: "invalid log format", file: "log_format: xml\n", wantErr: "log_format"},
		{name: "invalid addr", args: []string{"--addr", "5000"}, wantErr: "addr"},
		{name: "empty data", args: []string{"--data", ""}, wantErr: "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolveConfig(t, tt.env, tt.file, tt.args...)
			if err == nil {
				t.Fatalf("want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigMissingFile(t *testing.T) {
	_, err := resolveConfig(t, nil, "", "--config", filepath.Join(t.TempDir(), "absent.yaml"))
	if err == nil || !strings.Contains(err.Error(), "absent.yaml") {
		t.Fatalf("error = %v, want one naming the missing file", err)
	}
}

func TestPackageConfigsFromDefaults(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	if err := cfg.registryConfig().Validate(); err != nil {
		t.Errorf("registry config of the defaults: %v", err)
	}
	cc, err := cfg.clusterConfig("n1", []byte("a-secret-of-enough-length"))
	if err == nil {
		err = cc.Validate()
	}
	if err != nil {
		t.Errorf("cluster config of the defaults: %v", err)
	}
	if !cc.Bootstrap {
		t.Error("a node without --join does not bootstrap")
	}
	if err := cfg.blobConfig().Validate(); err != nil {
		t.Errorf("blob config of the defaults: %v", err)
	}
}

// TestClusterAddresses: every address is bound as given and advertised with
// the advertise host and the bound port; a node with others to join does
// not bootstrap.
func TestClusterAddresses(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Advertise = "node2"
	cfg.Join = []string{"node1:5002", "node2:5002"}
	cc, err := cfg.clusterConfig("node2", []byte("a-secret-of-enough-length"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Validate(); err != nil {
		t.Fatal(err)
	}
	if cc.RaftAddr != ":5001" || cc.RaftAdvertise != "node2:5001" || cc.HTTPAdvertise != "node2:5000" ||
		cc.GossipAddr != ":5002" || cc.GossipAdvertise != "node2:5002" {
		t.Errorf("addresses %q %q %q %q %q", cc.RaftAddr, cc.RaftAdvertise, cc.HTTPAdvertise, cc.GossipAddr, cc.GossipAdvertise)
	}
	if cc.Bootstrap {
		t.Error("a node with a member to join bootstraps")
	}
	// Its own address in the join list is not a member to join.
	cfg.Join = []string{"node2:5002"}
	if cc, _ := cfg.clusterConfig("node2", []byte("a-secret-of-enough-length")); !cc.Bootstrap {
		t.Error("a join list of only this node's own address keeps it from bootstrapping")
	}
	// Without --advertise, a specific bind IP is the advertised host.
	cfg = DefaultConfig()
	cfg.RaftAddr, cfg.Addr, cfg.GossipAddr = "127.0.0.9:6001", "127.0.0.9:6000", "127.0.0.9:6002"
	cc, _ = cfg.clusterConfig("n", []byte("a-secret-of-enough-length"))
	if cc.RaftAdvertise != "127.0.0.9:6001" || cc.HTTPAdvertise != "127.0.0.9:6000" || cc.GossipAdvertise != "127.0.0.9:6002" {
		t.Errorf("advertised %q %q %q", cc.RaftAdvertise, cc.HTTPAdvertise, cc.GossipAdvertise)
	}
}

// withReplicationDefaults fills the replication settings a test case does
// not name with their defaults.
func withReplicationDefaults(c Config) Config {
	d := DefaultConfig()
	if c.ReplicationWorkers == 0 {
		c.ReplicationWorkers, c.ReplicationLease, c.ReconcileInterval = d.ReplicationWorkers, d.ReplicationLease, d.ReconcileInterval
		c.ReplicationRetryMax, c.ReplicationHistory, c.ReplicationHistoryAge = d.ReplicationRetryMax, d.ReplicationHistory, d.ReplicationHistoryAge
		c.TombstoneTTL = d.TombstoneTTL
	}
	if c.TokenExpiry == 0 {
		c.TokenExpiry, c.RefreshTokenExpiry, c.ProjectCreation = d.TokenExpiry, d.RefreshTokenExpiry, d.ProjectCreation
		c.AuditRetention, c.AuditMaxEvents, c.TokenKeyRotation = d.AuditRetention, d.AuditMaxEvents, d.TokenKeyRotation
	}
	return c
}
