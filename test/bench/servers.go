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

// server is one registry process under test. It keeps how it was started,
// so that a killed cluster node can be started again on its data.
type server struct {
	name     string
	url      string // http://127.0.0.1:PORT
	user     string
	password string

	bin       string
	args, env []string
	logPath   string
	readyPath string

	cmd     *exec.Cmd
	logFile *os.File
	exited  chan struct{} // closed once cmd has been waited for
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
	gossipPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &server{
		name: "berth", url: fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		user: "admin", password: "bench-" + strconv.Itoa(httpPort),
		bin: bin,
		args: []string{"serve",
			"--addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", raftPort),
			"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", gossipPort),
			"--data", filepath.Join(dir, "data"),
			"--gc-interval", "0s",
			"--log-format", "json", "--log-level", "warn"},
		logPath: filepath.Join(dir, "berth.log"), readyPath: "/readyz",
	}
	s.env = []string{"BERTH_ADMIN_PASSWORD=" + s.password}
	if err := s.start(ctx); err != nil {
		return s, err
	}
	return s, s.createProject(ctx, benchProject)
}

// benchProject is the project the benchmarks push into: berth refuses
// pushes into a project that does not exist.
const benchProject = "bench"

// createProject creates project name on a berth as admin (an existing
// one is fine).
func (s *server) createProject(ctx context.Context, name string) error {
	body := strings.NewReader(fmt.Sprintf(`{"name":%q,"public":true}`, name))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/api/v1/projects", body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(s.user, s.password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("create project %s: %w", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("create project %s on %s: %s", name, s.name, resp.Status)
	}
	return nil
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
	s := &server{
		name: "distribution", url: fmt.Sprintf("http://127.0.0.1:%d", port),
		bin: bin, args: []string{"serve", cfgPath},
		env:     []string{"OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true"},
		logPath: filepath.Join(dir, "distribution.log"), readyPath: "/v2/",
	}
	return s, s.start(ctx)
}

// start starts the process (again, after stop or kill: its log is appended
// to) and waits until readyPath answers 200.
func (s *server) start(ctx context.Context) error {
	lf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.logFile = lf
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		s.stop()
		return err
	}
	return nil
}

// waitReady polls readyPath until it answers 200.
func (s *server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !s.running() {
			return fmt.Errorf("%s exited while starting; see %s", s.name, s.logPath)
		}
		if s.ready(ctx) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not become ready in %s; see %s", s.name, timeout, s.logPath)
}

// ready reports whether readyPath answers 200 right now.
func (s *server) ready(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+s.readyPath, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// running reports whether the process was started and has not exited.
func (s *server) running() bool {
	if s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for the process to exit (SIGKILL after
// 15 s).
func (s *server) stop() {
	if s.running() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	s.closeLog()
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *server) kill() {
	if s.running() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.closeLog()
}

func (s *server) closeLog() {
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
}

// cpuSeconds returns the user+system CPU time the server process has used.
func (s *server) cpuSeconds() (float64, error) { return procCPU(s.cmd.Process.Pid) }

// procCPU returns the user+system CPU time process pid has used.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
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
