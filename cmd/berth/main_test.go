package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/api"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	m := &Main{Stdout: &out, Stderr: io.Discard}
	if err := m.Run(t.Context(), []string{"berth", "version"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "berth "+version) || !strings.Contains(out.String(), runtime.Version()) {
		t.Errorf("version output %q", out.String())
	}
}

func TestUnknownCommand(t *testing.T) {
	m := &Main{Stdout: io.Discard, Stderr: io.Discard}
	if err := m.Run(t.Context(), []string{"berth", "serve", "extra"}); err == nil {
		t.Error("serve with an argument succeeded")
	}
}

func TestGCNeedsPassword(t *testing.T) {
	t.Setenv("BERTH_PASSWORD", "")
	m := &Main{Stdout: io.Discard, Stderr: io.Discard}
	err := m.Run(t.Context(), []string{"berth", "gc", "--data", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "no password") {
		t.Fatalf("err = %v, want a hint about the password", err)
	}
}

// freeAddr returns a loopback TCP address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// node is a `berth serve` running in-process.
type node struct {
	base string
	logs *syncBuffer
	stop func() error // cancels the serve context and returns its result
}

// startNode runs `berth serve` on dir until stop, or the end of the test.
func startNode(t *testing.T, dir, raftAddr string) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	ready := make(chan net.Addr, 1)
	m := &Main{Stdout: io.Discard, Stderr: logs, OnReady: func(a net.Addr) { ready <- a }}
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, []string{"berth", "serve",
			"--addr", "127.0.0.1:0", "--raft-addr", raftAddr, "--gossip-addr", "127.0.0.1:0", "--data", dir, "--log-format", "json",
			"--gc-interval", "0s",
		})
	}()
	var stopOnce sync.Once
	var stopErr error
	n := &node{logs: logs, stop: func() error {
		stopOnce.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(time.Minute):
				t.Errorf("serve did not stop within a minute; logs:\n%s", logs.String())
			}
		})
		return stopErr
	}}
	t.Cleanup(func() { _ = n.stop() })
	select {
	case a := <-ready:
		n.base = "http://" + a.String()
	case err := <-done:
		t.Fatalf("serve ended before it was ready: %v\nlogs:\n%s", err, logs.String())
	case <-time.After(time.Minute):
		t.Fatalf("serve not ready within a minute; logs:\n%s", logs.String())
	}
	return n
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// getAs sends GET url as admin and returns the response, body closed.
func getAs(t *testing.T, url, password string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(adminUser, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// startUpload opens an upload session as admin and returns the status.
func startUpload(t *testing.T, base, password string) int {
	t.Helper()
	return startUploadIn(t, base, "library/smoke", password)
}

func startUploadIn(t *testing.T, base, repo, password string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(adminUser, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestServeSmoke(t *testing.T) {
	t.Setenv(envAdminPassword, "")
	dir := filepath.Join(t.TempDir(), "data")
	raftAddr := freeAddr(t)
	n := startNode(t, dir, raftAddr)

	password, err := readPasswordFile(filepath.Join(dir, adminPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	resp := getAs(t, n.base+"/v2/", password)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ as admin: %s", resp.Status)
	}
	if v := resp.Header.Get("Docker-Distribution-API-Version"); v != "registry/2.0" {
		t.Errorf("Docker-Distribution-API-Version = %q", v)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id on the response")
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, body := get(t, n.base+path)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"status"`) {
			t.Errorf("GET %s: %s %s", path, resp.Status, body)
		}
	}
	resp, body := get(t, n.base+"/metrics")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "berth_http_request_duration_seconds") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics: %s, missing berth or Go metrics", resp.Status)
	}
	resp, body = get(t, n.base+"/api/v1/system/info")
	var info api.Info
	if err := json.Unmarshal([]byte(body), &info); resp.StatusCode != http.StatusOK || err != nil || info.NodeID == "" {
		t.Errorf("GET /api/v1/system/info: %s %s", resp.Status, body)
	}

	// The data directory: private, with a node id and the admin password.
	if fi, err := os.Stat(dir); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
	}
	nodeID, err := os.ReadFile(filepath.Join(dir, nodeIDFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(n.logs.String(), password) {
		t.Error("the admin password is in the logs")
	}

	// Pushes need the admin password; it works, a wrong one does not.
	if code := startUpload(t, n.base, password); code != http.StatusAccepted {
		t.Errorf("start an upload as admin: %d, want 202", code)
	}
	if code := startUpload(t, n.base, "wrong"); code != http.StatusUnauthorized {
		t.Errorf("start an upload with a wrong password: %d, want 401", code)
	}
	// The public project library exists from the start; others must be
	// created before a push.
	if code := startUploadIn(t, n.base, "smoke/app", password); code != http.StatusNotFound {
		t.Errorf("start an upload into a project that does not exist: %d, want 404", code)
	}

	// `berth gc` finds the password in the data directory.
	var out bytes.Buffer
	m := &Main{Stdout: &out, Stderr: io.Discard}
	if err := m.Run(t.Context(), []string{"berth", "gc", "--server", n.base, "--data", dir, "--dry-run"}); err != nil {
		t.Fatalf("berth gc: %v", err)
	}
	if !strings.Contains(out.String(), "scanned") || !strings.Contains(out.String(), "dry run") {
		t.Errorf("berth gc output:\n%s", out.String())
	}
	out.Reset()
	if err := m.Run(t.Context(), []string{"berth", "gc", "--server", n.base, "--password", password, "-o", "json"}); err != nil {
		t.Fatalf("berth gc -o json: %v", err)
	}
	var res struct{ Scanned, Deleted int }
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Errorf("berth gc -o json output %q: %v", out.String(), err)
	}
	err = m.Run(t.Context(), []string{"berth", "gc", "--server", n.base, "--password", "wrong"})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("berth gc with a wrong password: %v, want 401", err)
	}

	// SIGTERM: serve returns cleanly.
	if err := n.stop(); err != nil {
		t.Fatalf("serve after cancel: %v\nlogs:\n%s", err, n.logs.String())
	}
	if !strings.Contains(n.logs.String(), "http server stopped") {
		t.Errorf("no clean shutdown in the logs:\n%s", n.logs.String())
	}

	// A second start on the same directory resumes it.
	n2 := startNode(t, dir, raftAddr)
	if resp, _ := get(t, n2.base+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("restart: /readyz %s", resp.Status)
	}
	if resp := getAs(t, n2.base+"/v2/", password); resp.StatusCode != http.StatusOK {
		t.Errorf("restart: /v2/ %s", resp.Status)
	}
	nodeID2, _ := os.ReadFile(filepath.Join(dir, nodeIDFile))
	password2, _ := readPasswordFile(filepath.Join(dir, adminPasswordFile))
	if string(nodeID2) != string(nodeID) || password2 != password {
		t.Errorf("restart changed the node id (%q → %q) or the admin password", nodeID, nodeID2)
	}
	if strings.Contains(n2.logs.String(), "created the admin user") {
		t.Error("restart created the admin user again")
	}
	if code := startUpload(t, n2.base, password); code != http.StatusAccepted {
		t.Errorf("restart: start an upload as admin: %d, want 202", code)
	}
	if err := n2.stop(); err != nil {
		t.Fatalf("second serve after cancel: %v", err)
	}
}

func TestServeRejectsBadConfigBeforeTouchingDisk(t *testing.T) {
	tests := []struct {
		name, flag, value, wantErr string
	}{
		{"unspecified advertise address", "--advertise", "0.0.0.0", "advertise address"},
		{"bad join address", "--join", "node1", "join address"},
		{"zero gc grace", "--gc-grace", "0s", "gc grace"},
		{"external url the token challenge cannot carry", "--external-url", "https://registry.example/a,b", "external URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			m := &Main{Stdout: io.Discard, Stderr: io.Discard}
			err := m.Run(t.Context(), []string{"berth", "serve", "--data", dir, tt.flag, tt.value})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one about %s", err, tt.wantErr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created (stat: %v)", err)
			}
		})
	}
}
