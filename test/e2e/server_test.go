package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the process life cycle. Generous: the machine is shared.
const (
	readyTimeout = 90 * time.Second
	stopTimeout  = 30 * time.Second
	killTimeout  = 15 * time.Second
)

// Options configures one server process.
type Options struct {
	// Args are appended to the server's command line (berth only).
	Args []string
	// Env is added to the server's environment.
	Env []string
	// DataDir is the data directory; empty means a new temporary one.
	DataDir string
	// Password is the admin password; empty means a random one.
	Password string
	// GeneratePassword lets berth generate the admin password on its first
	// start; the harness reads it back from <data>/admin.password.
	GeneratePassword bool
	// NoProjects: do not create the fixture projects (see fixtureProjects).
	NoProjects bool
}

// flavor says how to run one kind of registry: berth, or distribution as a
// reference when checking the harness itself.
type flavor interface {
	name() string
	// prepare writes what the process needs before its first start.
	prepare(s *Server) error
	// command returns the binary, the arguments and the extra environment of
	// one start.
	command(s *Server) (bin string, args, env []string)
	// ready reports whether a response to GET readyPath() means serving.
	readyPath() string
	ready(status int) bool
	// blobsDir is the root of the content-addressed blob files.
	blobsDir(s *Server) string
	// anonymousPull reports whether pulls need no credentials.
	anonymousPull() bool
	// referrersAPI reports whether GET /v2/<name>/referrers/<digest> is served.
	referrersAPI() bool
	// cleanSigterm reports whether SIGTERM must end the process with exit
	// status 0 (a handled, graceful shutdown).
	cleanSigterm() bool
	// projects reports whether pushes need an existing project.
	projects() bool
	// challengeScheme is the scheme of the 401s' WWW-Authenticate.
	challengeScheme() string
}

// Server is one registry process under test on 127.0.0.1. It can be stopped
// (SIGTERM), killed (SIGKILL) and restarted on the same data directory and
// ports. Its output goes to a log file that is dumped when the test fails and
// checked for panics when the test ends.
type Server struct {
	t        testing.TB
	flavor   flavor
	opts     Options
	dir      string // harness files: configs, the log
	dataDir  string
	addr     string // HTTP, 127.0.0.1:P
	raftAddr string
	// gossipAddr is berth's memberlist address (TCP and UDP).
	gossipAddr string
	password   string
	logPath    string
	logFile    *os.File

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has exited
	waitErr error
	starts  int
	paused  bool // stopped by Pause (SIGSTOP) and not resumed yet
}

// startServer starts the default server under test: berth, or the flavor
// E2E_SERVER names.
func startServer(t testing.TB, opts Options) *Server {
	t.Helper()
	return startFlavor(t, defaultFlavor(), opts)
}

// startBerth starts a `berth serve` process, whatever E2E_SERVER says.
func startBerth(t testing.TB, opts Options) *Server {
	t.Helper()
	return startFlavor(t, berthFlavor{}, opts)
}

func startFlavor(t testing.TB, f flavor, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		t:        t,
		flavor:   f,
		opts:     opts,
		dir:      dir,
		dataDir:  opts.DataDir,
		password: opts.Password,
		logPath:  filepath.Join(dir, f.name()+".log"),
	}
	if s.dataDir == "" {
		s.dataDir = filepath.Join(dir, "data")
	}
	if s.password == "" {
		s.password = "e2e-" + randomHex(12)
	}
	if err := os.MkdirAll(s.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	s.logFile = lf
	t.Cleanup(s.cleanup)

	// Ports are picked free and released before the process binds them, so
	// another process may take one in between: retry with new ports then.
	for attempt := 1; ; attempt++ {
		s.addr, s.raftAddr, s.gossipAddr = freeAddr(t), freeAddr(t), freeAddr(t)
		if err := f.prepare(s); err != nil {
			t.Fatalf("prepare %s: %v", f.name(), err)
		}
		err := s.start()
		if err == nil {
			break
		}
		if attempt < 3 && strings.Contains(s.logSince(s.starts), "address already in use") {
			if s.running() {
				s.Kill()
			}
			t.Logf("%s: port taken, retrying: %v", f.name(), err)
			continue
		}
		t.Fatalf("start %s: %v", f.name(), err)
	}
	if opts.GeneratePassword {
		b, err := os.ReadFile(filepath.Join(s.dataDir, "admin.password"))
		if err != nil {
			t.Fatalf("generated admin password: %v", err)
		}
		s.password = strings.TrimSpace(string(b))
	}
	if !opts.NoProjects {
		if err := s.createFixtureProjects(); err != nil {
			t.Fatalf("%s: %v", f.name(), err)
		}
	}
	t.Logf("%s serving on %s (data %s, log %s)", f.name(), s.URL(), s.dataDir, s.logPath)
	return s
}

// Name is the flavor: "berth" or "distribution".
func (s *Server) Name() string { return s.flavor.name() }

// URL is the base URL, http://127.0.0.1:P.
func (s *Server) URL() string { return "http://" + s.addr }

// Host is the registry host clients use in references, 127.0.0.1:P.
func (s *Server) Host() string { return s.addr }

// RaftAddr is the Raft transport address (berth only).
func (s *Server) RaftAddr() string { return s.raftAddr }

// GossipAddr is the gossip address other nodes join (berth only).
func (s *Server) GossipAddr() string { return s.gossipAddr }

// DataDir is the data directory that survives restarts.
func (s *Server) DataDir() string { return s.dataDir }

// BlobsDir is where the content-addressed blob files live.
func (s *Server) BlobsDir() string { return s.flavor.blobsDir(s) }

// LogPath is the file that collects the output of every start.
func (s *Server) LogPath() string { return s.logPath }

// Username and Password are the credentials that may push and delete.
func (s *Server) Username() string { return "admin" }

// Password is the admin password.
func (s *Server) Password() string { return s.password }

// ReferrersAPI reports whether the server answers the OCI 1.1 referrers API.
func (s *Server) ReferrersAPI() bool { return s.flavor.referrersAPI() }

// ChallengeScheme is the scheme of the server's 401 challenges: Bearer
// (token auth) or Basic.
func (s *Server) ChallengeScheme() string { return s.flavor.challengeScheme() }

// AnonymousPull reports whether pulls work without credentials.
func (s *Server) AnonymousPull() bool { return s.flavor.anonymousPull() }

func (s *Server) start() error {
	done, err := s.launch()
	if err != nil {
		return err
	}
	return s.waitReady(done)
}

// launch starts the process and returns a channel closed when it exits.
func (s *Server) launch() (<-chan struct{}, error) {
	bin, args, env := s.flavor.command(s)
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.dir
	cmd.Env = append(serverEnviron(), env...)
	cmd.Stdout = s.logFile
	cmd.Stderr = s.logFile
	// Pdeathsig: a test binary that dies leaves no registry behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	s.mu.Lock()
	s.starts++
	n := s.starts
	s.mu.Unlock()
	fmt.Fprintf(s.logFile, "=== e2e: start #%d: %s %s\n", n, bin, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", bin, err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done, s.waitErr, s.paused = cmd, done, nil, false
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		fmt.Fprintf(s.logFile, "=== e2e: process %d exited: %v\n", cmd.Process.Pid, exitText(err))
		close(done)
	}()
	return done, nil
}

// waitReady polls the readiness endpoint until it answers, the process
// exits or the deadline passes.
func (s *Server) waitReady(done <-chan struct{}) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		resp, err := client.Get(s.URL() + s.flavor.readyPath())
		if err == nil {
			resp.Body.Close()
			if s.flavor.ready(resp.StatusCode) {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready: %s", s.Name(), exitText(s.exitErr()))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: last answer %s", s.Name(), readyTimeout, last)
		}
	}
}

func (s *Server) exitErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitErr
}

// running reports whether the current process has not exited.
func (s *Server) running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the process and waits until it is gone.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		s.t.Fatalf("kill %s: never started", s.Name())
	}
	fmt.Fprintf(s.logFile, "=== e2e: SIGKILL %d\n", cmd.Process.Pid)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Fatalf("kill %s: %v", s.Name(), err)
	}
	select {
	case <-done:
	case <-time.After(killTimeout):
		s.t.Fatalf("%s still running %s after SIGKILL", s.Name(), killTimeout)
	}
}

// Stop sends SIGTERM and waits for the process to exit. It returns an error
// when the process does not exit in time (it is then killed) or exits with
// a failure status.
func (s *Server) Stop() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return fmt.Errorf("%s had already exited: %s", s.Name(), exitText(s.exitErr()))
	default:
	}
	fmt.Fprintf(s.logFile, "=== e2e: SIGTERM %d\n", cmd.Process.Pid)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sigterm %s: %w", s.Name(), err)
	}
	s.mu.Lock()
	if s.paused {
		// A stopped process handles the SIGTERM once it continues.
		_ = cmd.Process.Signal(syscall.SIGCONT)
		s.paused = false
	}
	s.mu.Unlock()
	select {
	case <-done:
		s.t.Logf("%s stopped by SIGTERM in %s", s.Name(), time.Since(start).Round(time.Millisecond))
	case <-time.After(stopTimeout):
		// SIGQUIT makes a Go process write every goroutine's stack to its
		// log before it dies: what it was stuck on.
		fmt.Fprintf(s.logFile, "=== e2e: SIGQUIT %d: no exit %s after SIGTERM\n", cmd.Process.Pid, stopTimeout)
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(killTimeout):
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-done
		}
		return fmt.Errorf("%s did not exit within %s of SIGTERM (its goroutines are in its log)", s.Name(), stopTimeout)
	}
	if err := s.exitErr(); err != nil && s.flavor.cleanSigterm() {
		return fmt.Errorf("%s exit after SIGTERM: %w", s.Name(), err)
	}
	return nil
}

// Restart starts the server again on the same data directory and ports,
// stopping it first (SIGTERM) if it still runs, and waits until it is ready.
func (s *Server) Restart() {
	s.t.Helper()
	start := s.RestartNoWait()
	if err := s.WaitReady(); err != nil {
		s.t.Fatalf("restart %s: %v", s.Name(), err)
	}
	s.t.Logf("%s restarted in %s", s.Name(), time.Since(start).Round(time.Millisecond))
}

// RestartNoWait is Restart without the wait for readiness: a cluster node
// that needs others to start before it can be ready. WaitReady waits. It
// returns when the new process was started.
func (s *Server) RestartNoWait() time.Time {
	s.t.Helper()
	if s.running() {
		if err := s.Stop(); err != nil {
			s.t.Errorf("restart: %v", err)
		}
	}
	start := time.Now()
	if _, err := s.launch(); err != nil {
		s.t.Fatalf("restart %s: %v", s.Name(), err)
	}
	return start
}

// WaitReady waits until the current process answers its readiness check,
// exits, or readyTimeout passes.
func (s *Server) WaitReady() error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return fmt.Errorf("%s never started", s.Name())
	}
	return s.waitReady(done)
}

// WaitExit waits up to d for the process to exit by itself and returns its
// exit error (nil for status 0).
func (s *Server) WaitExit(d time.Duration) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return fmt.Errorf("%s never started", s.Name())
	}
	select {
	case <-done:
		return s.exitErr()
	case <-time.After(d):
		return fmt.Errorf("%s still running after %s", s.Name(), d)
	}
}

// Pause freezes the process with SIGSTOP: it keeps its sockets but answers
// nothing, like a machine that hangs. Resume continues it.
func (s *Server) Pause() { s.signalPause(syscall.SIGSTOP, "SIGSTOP", true) }

// Resume continues a paused process with SIGCONT.
func (s *Server) Resume() { s.signalPause(syscall.SIGCONT, "SIGCONT", false) }

func (s *Server) signalPause(sig syscall.Signal, name string, paused bool) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("%s %s: never started", name, s.Name())
	}
	fmt.Fprintf(s.logFile, "=== e2e: %s %d\n", name, s.cmd.Process.Pid)
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("%s %s: %v", name, s.Name(), err)
	}
	s.paused = paused
}

func (s *Server) cleanup() {
	t := s.t
	if s.running() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}
	if lines := s.panicLines(); len(lines) > 0 {
		t.Errorf("%s log %s shows a panic:\n%s", s.Name(), s.logPath, strings.Join(lines, "\n"))
	}
	if t.Failed() || os.Getenv("E2E_DUMP_LOGS") != "" {
		s.dumpLog()
	}
	if dir := os.Getenv("E2E_KEEP_LOGS"); dir != "" {
		s.keepLog(dir)
	}
	s.logFile.Close()
}

// keepLog copies the whole log to dir, named by the test and the server's
// harness directory: the tail dumpLog shows is short for a cluster.
func (s *Server) keepLog(dir string) {
	dst := filepath.Join(dir, strings.ReplaceAll(s.t.Name(), "/", "_")+"-"+filepath.Base(s.dir)+".log")
	b, err := os.ReadFile(s.logPath)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(dst, b, 0o644)
	}
	if err != nil {
		s.t.Logf("keep log: %v", err)
	}
}

// panicMarkers are log texts that mean the process crashed or raced.
var panicMarkers = []string{"panic", "fatal error:", "DATA RACE"}

// panicLines returns the log lines that mention a panic, and a few after.
func (s *Server) panicLines() []string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		for _, m := range panicMarkers {
			if strings.Contains(l, m) {
				end := min(i+8, len(lines))
				return append(out, lines[i:end]...)
			}
		}
	}
	return out
}

// dumpLog writes the tail of the server log into the test output.
func (s *Server) dumpLog() {
	const maxLines = 300
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		s.t.Logf("read log: %v", err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	from := max(0, len(lines)-maxLines)
	s.t.Logf("--- %s log %s (last %d of %d lines) ---\n%s\n--- end of log ---",
		s.Name(), s.logPath, len(lines)-from, len(lines), strings.Join(lines[from:], "\n"))
}

// logSince returns the log from the marker of start number n on.
func (s *Server) logSince(n int) string {
	data, _ := os.ReadFile(s.logPath)
	marker := []byte(fmt.Sprintf("=== e2e: start #%d:", n))
	if i := bytes.LastIndex(data, marker); i >= 0 {
		return string(data[i:])
	}
	return string(data)
}

// serverEnviron is this process's environment without the variables that
// configure berth or distribution, so only what a test sets applies.
func serverEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "BERTH_") || strings.HasPrefix(k, "REGISTRY_") || strings.HasPrefix(k, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// firstLines returns at most n lines of s, for error messages.
func firstLines(s string, n int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var out []string
	for sc.Scan() && len(out) < n {
		out = append(out, sc.Text())
	}
	return strings.Join(out, "\n")
}

// deadlineCtx is a context that ends at the test's deadline (less a margin to
// report) or after d, whichever comes first.
func deadlineCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	end := time.Now().Add(d)
	if tt, ok := t.(*testing.T); ok {
		if dl, ok := tt.Deadline(); ok && dl.Add(-10*time.Second).Before(end) {
			end = dl.Add(-10 * time.Second)
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), end)
	t.Cleanup(cancel)
	return ctx
}
