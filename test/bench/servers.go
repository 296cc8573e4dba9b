package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one registry process under test.
type server struct {
	name     string
	url      string // http://127.0.0.1:PORT
	user     string
	password string
	cmd      *exec.Cmd
	logFile  *os.File
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startBerth starts `berth serve` with a fresh data directory in dir.
func startBerth(ctx context.Context, bin, dir string) (*server, error) {
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	raftPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &server{name: "berth", url: fmt.Sprintf("http://127.0.0.1:%d", httpPort), user: "admin", password: "bench-" + strconv.Itoa(httpPort)}
	cmd := exec.Command(bin, "serve",
		"--addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", raftPort),
		"--data", filepath.Join(dir, "data"),
		"--gc-interval", "0s",
		"--log-format", "json", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "BERTH_ADMIN_PASSWORD="+s.password)
	return s, s.start(ctx, cmd, dir, "/readyz")
}

// startDistribution starts the CNCF distribution registry with filesystem
// storage in dir.
func startDistribution(ctx context.Context, bin, dir string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	debugPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
  debug:
    addr: 127.0.0.1:%d
`, filepath.Join(dir, "storage"), port, debugPort)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	s := &server{name: "distribution", url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	return s, s.start(ctx, cmd, dir, "/v2/")
}

func (s *server) start(ctx context.Context, cmd *exec.Cmd, dir, readyPath string) error {
	lf, err := os.Create(filepath.Join(dir, s.name+".log"))
	if err != nil {
		return err
	}
	s.logFile = lf
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := http.Get(s.url + readyPath)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("%s did not become ready; see %s", s.name, lf.Name())
}

func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
}

// cpuSeconds returns the user+system CPU time the server process has used.
func (s *server) cpuSeconds() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the whole line.
	str := string(b)
	i := strings.LastIndexByte(str, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(str[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	const clockTicks = 100 // USER_HZ on Linux
	return (ut + st) / clockTicks, nil
}
