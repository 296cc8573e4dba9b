package chaos

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Labels on every Docker object of a run.
const (
	// labelRun holds the run's prefix; every object of the run has it.
	labelRun = "berth.chaos.run"
	// labelPID holds the process id of the test that created the object:
	// once that process is gone, a later run may remove the object.
	labelPID = "berth.chaos.pid"
)

// dockerTimeout bounds one docker CLI call; a healthy daemon answers in
// well under a second, a docker start may take a few.
const dockerTimeout = 90 * time.Second

// Docker runs the docker CLI (os/exec rather than the Docker SDK keeps the
// module small). The zero value uses "docker" from PATH.
type Docker struct {
	// Bin is the docker CLI; empty means "docker".
	Bin string
}

// Run runs one docker command and returns its standard output, trimmed.
// env is added to the command's environment (for `-e NAME` flags, which
// keep secrets off the command line).
func (d Docker) Run(ctx context.Context, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cmp.Or(d.Bin, "docker"), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Logs returns everything a container wrote, over all its starts, standard
// output and standard error interleaved.
func (d Docker) Logs(ctx context.Context, container string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cmp.Or(d.Bin, "docker"), "logs", container)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("docker logs %s: %w", container, err)
	}
	return out, nil
}

// lines splits the output of a listing into its non-empty lines.
func lines(out string) []string {
	var ls []string
	for l := range strings.SplitSeq(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// RemoveRun removes the containers (with their anonymous volumes), the
// networks and the volumes labelled with the run prefix. It goes on after
// an error and returns them all.
func (d Docker) RemoveRun(ctx context.Context, prefix string) error {
	filter := "label=" + labelRun + "=" + prefix
	var errs []error
	list := func(args ...string) []string {
		out, err := d.Run(ctx, nil, append(args, "--filter", filter)...)
		if err != nil {
			errs = append(errs, err)
		}
		return lines(out)
	}
	if ids := list("ps", "-aq"); len(ids) > 0 {
		if _, err := d.Run(ctx, nil, append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			errs = append(errs, err)
		}
	}
	for _, kind := range []string{"network", "volume"} {
		if ids := list(kind, "ls", "-q"); len(ids) > 0 {
			if _, err := d.Run(ctx, nil, append([]string{kind, "rm"}, ids...)...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ReapOrphans removes what earlier runs left behind: the objects of every
// run whose test process no longer exists (a run that crashed, or one that
// was told to keep its containers). It returns the prefixes it removed.
func (d Docker) ReapOrphans(ctx context.Context) ([]string, error) {
	format := fmt.Sprintf(`{{.Label %q}} {{.Label %q}}`, labelRun, labelPID)
	filter := "label=" + labelRun
	orphans := map[string]bool{}
	var errs []error
	for _, args := range [][]string{
		{"ps", "-a"},
		{"network", "ls"},
		{"volume", "ls"},
	} {
		out, err := d.Run(ctx, nil, append(args, "--filter", filter, "--format", format)...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range lines(out) {
			prefix, pid, _ := strings.Cut(l, " ")
			if prefix != "" && !processAlive(pid) {
				orphans[prefix] = true
			}
		}
	}
	var removed []string
	for prefix := range orphans {
		if err := d.RemoveRun(ctx, prefix); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, prefix)
	}
	return removed, errors.Join(errs...)
}

// processAlive reports whether pid names a running process on this host.
// A label that is not a pid counts as dead, so its objects are reaped.
func processAlive(pid string) bool {
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return false
	}
	err = syscall.Kill(n, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
