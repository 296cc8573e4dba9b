package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/replicate"
)

// parseArtifact splits REPO:TAG or REPO@DIGEST (a repository name has no
// host here: it is a repository of --server).
func parseArtifact(s string) (repo, ref string, err error) {
	if i := strings.Index(s, "@"); i >= 0 {
		repo, ref = s[:i], s[i+1:]
		if _, err := oci.ParseDigest(ref); err != nil {
			return "", "", fmt.Errorf("%q: %w", s, err)
		}
	} else if i := strings.LastIndex(s, ":"); i >= 0 && !strings.Contains(s[i:], "/") {
		repo, ref = s[:i], s[i+1:]
		if err := oci.ValidateTag(ref); err != nil {
			return "", "", fmt.Errorf("%q: %w", s, err)
		}
	} else {
		return "", "", fmt.Errorf("%q: want REPO:TAG or REPO@DIGEST", s)
	}
	if err := oci.ValidateName(repo); err != nil {
		return "", "", fmt.Errorf("%q: %w", s, err)
	}
	return repo, ref, nil
}

func statusPath(repo, ref string) string {
	return "replication/status?" + url.Values{"repo": {repo}, "ref": {ref}}.Encode()
}

func (m *Main) replicateCommand() *cli.Command {
	return &cli.Command{
		Name:  "replicate",
		Usage: "follow replication: where an artifact is, wait for it, run a policy, see executions",
		Subcommands: []*cli.Command{
			{
				Name:      "status",
				Usage:     "where an artifact stands at each destination whose policy selects it: present, pending or failed, and why",
				ArgsUsage: "REPO:TAG|REPO@DIGEST",
				Flags:     clientFlags(),
				Action: func(c *cli.Context) error {
					a, err := args(c, "REPO:TAG|REPO@DIGEST")
					if err != nil {
						return err
					}
					repo, ref, err := parseArtifact(a[0])
					if err != nil {
						return err
					}
					client, output, err := clientOf(c)
					if err != nil {
						return err
					}
					var st replicate.ArtifactStatus
					if err := client.do(c.Context, http.MethodGet, statusPath(repo, ref), nil, &st); err != nil {
						return err
					}
					if output == outputJSON {
						return writeJSONOut(m.Stdout, st)
					}
					return printStatus(m.Stdout, st)
				},
			},
			{
				Name:      "wait",
				Usage:     "wait until an artifact, with its signatures, is at every destination (exit 0), or say why not (exit 1)",
				ArgsUsage: "REPO:TAG|REPO@DIGEST",
				Flags: append(clientFlags(),
					&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "give up after this long"},
					&cli.StringSliceFlag{Name: "endpoint", Usage: "wait only for these endpoints (repeatable; default every destination)"},
					&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "how often to look"},
				),
				Action: func(c *cli.Context) error {
					a, err := args(c, "REPO:TAG|REPO@DIGEST")
					if err != nil {
						return err
					}
					repo, ref, err := parseArtifact(a[0])
					if err != nil {
						return err
					}
					client, output, err := clientOf(c)
					if err != nil {
						return err
					}
					return m.wait(c.Context, client, output, repo, ref, c.StringSlice("endpoint"), c.Duration("timeout"), c.Duration("interval"))
				},
			},
			{
				Name:      "run",
				Usage:     "run a policy now: compare source and destination and copy what differs, with a progress bar",
				ArgsUsage: "POLICY",
				Flags: append(clientFlags(),
					&cli.BoolFlag{Name: "no-wait", Usage: "start it and print the execution id"},
				),
				Action: func(c *cli.Context) error {
					a, err := args(c, "POLICY")
					if err != nil {
						return err
					}
					client, output, err := clientOf(c)
					if err != nil {
						return err
					}
					var run api.RunResponse
					if err := client.do(c.Context, http.MethodPost, "policies/"+url.PathEscape(a[0])+"/run", nil, &run); err != nil {
						return err
					}
					if c.Bool("no-wait") {
						if output == outputJSON {
							return writeJSONOut(m.Stdout, run)
						}
						_, err := fmt.Fprintf(m.Stdout, "execution %d started\n", run.Execution)
						return err
					}
					return m.follow(c.Context, client, output, run.Execution)
				},
			},
			{
				Name:  "executions",
				Usage: "list executions, newest first",
				Flags: append(clientFlags(),
					&cli.StringFlag{Name: "policy", Usage: "only this policy's"},
					&cli.IntFlag{Name: "limit", Value: 20, Usage: "at most this many"},
				),
				Action: func(c *cli.Context) error {
					client, output, err := clientFrom(c, "replicate executions")
					if err != nil {
						return err
					}
					q := url.Values{"limit": {strconv.Itoa(c.Int("limit"))}}
					if p := c.String("policy"); p != "" {
						q.Set("policy", p)
					}
					var execs []policy.Execution
					if err := client.do(c.Context, http.MethodGet, "executions?"+q.Encode(), nil, &execs); err != nil {
						return err
					}
					if output == outputJSON {
						return writeJSONOut(m.Stdout, execs)
					}
					return printExecutions(m.Stdout, execs...)
				},
			},
			{
				Name:      "execution",
				Usage:     "show an execution and its tasks",
				ArgsUsage: "ID",
				Flags: append(clientFlags(),
					&cli.StringFlag{Name: "status", Usage: "only tasks with this status"},
				),
				Action: func(c *cli.Context) error {
					a, err := args(c, "ID")
					if err != nil {
						return err
					}
					client, output, err := clientOf(c)
					if err != nil {
						return err
					}
					ex, tasks, err := executionWithTasks(c.Context, client, a[0], c.String("status"))
					if err != nil {
						return err
					}
					if output == outputJSON {
						return writeJSONOut(m.Stdout, struct {
							policy.Execution
							Tasks []policy.Task `json:"tasks"`
						}{ex, tasks})
					}
					if err := printExecutions(m.Stdout, ex); err != nil {
						return err
					}
					fmt.Fprintln(m.Stdout)
					return printTasks(m.Stdout, tasks)
				},
			},
			{
				Name:      "stop",
				Usage:     "stop an execution: its unfinished tasks become stopped",
				ArgsUsage: "ID",
				Flags:     clientFlags(),
				Action: func(c *cli.Context) error {
					a, err := args(c, "ID")
					if err != nil {
						return err
					}
					client, output, err := clientOf(c)
					if err != nil {
						return err
					}
					var ex policy.Execution
					if err := client.do(c.Context, http.MethodPost, "executions/"+url.PathEscape(a[0])+"/stop", nil, &ex); err != nil {
						return err
					}
					if output == outputJSON {
						return writeJSONOut(m.Stdout, ex)
					}
					return printExecutions(m.Stdout, ex)
				},
			},
		},
	}
}

// executionWithTasks reads an execution and all its tasks (paged).
func executionWithTasks(ctx context.Context, client apiClient, id, status string) (policy.Execution, []policy.Task, error) {
	var ex policy.Execution
	if err := client.do(ctx, http.MethodGet, "executions/"+url.PathEscape(id), nil, &ex); err != nil {
		return ex, nil, err
	}
	var all []policy.Task
	var after uint64
	for {
		q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {"500"}}
		if status != "" {
			q.Set("status", status)
		}
		var page []policy.Task
		if err := client.do(ctx, http.MethodGet, "executions/"+url.PathEscape(id)+"/tasks?"+q.Encode(), nil, &page); err != nil {
			return ex, nil, err
		}
		all = append(all, page...)
		if len(page) < 500 {
			return ex, all, nil
		}
		after = page[len(page)-1].ID
	}
}

func printStatus(w io.Writer, st replicate.ArtifactStatus) error {
	fmt.Fprintf(w, "%s:%s  %s\n\n", st.Repo, st.Reference, st.Digest)
	if len(st.Destinations) == 0 {
		_, err := fmt.Fprintln(w, "no enabled policy selects it")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tPOLICY\tDEST REPO\tSTATE\tREASON")
	for _, d := range st.Destinations {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Endpoint, d.Policy, d.DestRepo, d.State, d.Reason)
	}
	return tw.Flush()
}

// waitVerdict decides a wait from one status: done when every wanted
// destination is present; failed (with the reason) when one failed for
// good; otherwise the destinations still pending. An artifact no policy
// selects (or none of the wanted endpoints) is an error: there is nothing
// to wait for.
func waitVerdict(st replicate.ArtifactStatus, endpoints []string) (done bool, pending []string, err error) {
	var wanted []replicate.DestinationStatus
	for _, d := range st.Destinations {
		if len(endpoints) == 0 || slices.Contains(endpoints, d.Endpoint) {
			wanted = append(wanted, d)
		}
	}
	if len(wanted) == 0 {
		if len(endpoints) > 0 {
			return false, nil, fmt.Errorf("no enabled policy replicates %s:%s to %s", st.Repo, st.Reference, strings.Join(endpoints, ", "))
		}
		return false, nil, fmt.Errorf("no enabled policy replicates %s:%s: nothing to wait for", st.Repo, st.Reference)
	}
	var failed []string
	for _, d := range wanted {
		switch d.State {
		case replicate.StatePresent:
		case replicate.StateFailed:
			failed = append(failed, fmt.Sprintf("%s (%s): failed: %s", d.Endpoint, d.DestRepo, d.Reason))
		default:
			pending = append(pending, fmt.Sprintf("%s (%s): %s: %s", d.Endpoint, d.DestRepo, d.State, d.Reason))
		}
	}
	if len(failed) > 0 {
		return false, pending, errors.New("replication failed at " + strings.Join(failed, "; "))
	}
	return len(pending) == 0, pending, nil
}

// wait polls the status of repo:ref until waitVerdict says done or failed,
// or timeout passes.
func (m *Main) wait(ctx context.Context, client apiClient, output, repo, ref string, endpoints []string, timeout, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	verbose := isTerminal(m.Stderr)
	var last []string
	var lastErr error
	for {
		var st replicate.ArtifactStatus
		err := client.do(ctx, http.MethodGet, statusPath(repo, ref), nil, &st)
		if err == nil {
			done, pending, verr := waitVerdict(st, endpoints)
			switch {
			case verr != nil:
				return verr
			case done:
				if output == outputJSON {
					return writeJSONOut(m.Stdout, st)
				}
				_, err := fmt.Fprintf(m.Stdout, "%s:%s (%s) is at every destination, after %s\n", repo, ref, st.Digest, time.Since(start).Round(time.Millisecond))
				return err
			}
			if verbose && !slices.Equal(pending, last) {
				fmt.Fprintf(m.Stderr, "waiting: %s\n", strings.Join(pending, "; "))
			}
			last = pending
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if len(last) > 0 {
				return fmt.Errorf("%s:%s is not at every destination after %s: %s", repo, ref, timeout, strings.Join(last, "; "))
			}
			if lastErr != nil {
				return fmt.Errorf("%s:%s: no answer after %s: %w", repo, ref, timeout, lastErr)
			}
			return fmt.Errorf("%s:%s: timed out after %s", repo, ref, timeout)
		case <-time.After(interval):
		}
	}
}

// follow shows an execution until it ends: a progress bar of finished
// tasks on a terminal, then a summary; non-zero when a task failed.
func (m *Main) follow(ctx context.Context, client apiClient, output string, id uint64) error {
	ids := strconv.FormatUint(id, 10)
	var bar *progressbar.ProgressBar
	if output != outputJSON && isTerminal(m.Stdout) {
		bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(m.Stdout),
			progressbar.OptionSetDescription("execution "+ids),
			progressbar.OptionShowCount(),
			progressbar.OptionSetItsString("tasks"),
			progressbar.OptionShowIts(),
			progressbar.OptionClearOnFinish(),
		)
	}
	var ex policy.Execution
	for {
		if err := client.do(ctx, http.MethodGet, "executions/"+ids, nil, &ex); err != nil {
			return err
		}
		if bar != nil {
			bar.ChangeMax(max(ex.Total, 1))
			_ = bar.Set(ex.Succeeded + ex.Failed + ex.Stopped)
			bar.Describe(fmt.Sprintf("execution %d: %s sent, %d running, %d pending", id, humanBytes(ex.Bytes), ex.Running, ex.Pending))
		}
		if ex.Status != policy.ExecRunning {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	if output == outputJSON {
		if err := writeJSONOut(m.Stdout, ex); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(m.Stdout, "execution %d %s: %d tasks, %d succeeded, %d failed, %d stopped, %s sent\n",
			id, ex.Status, ex.Total, ex.Succeeded, ex.Failed, ex.Stopped, humanBytes(ex.Bytes))
	}
	if ex.Failed == 0 {
		return nil
	}
	_, failed, err := executionWithTasks(ctx, client, ids, policy.StatusFailed)
	if err == nil && output != outputJSON {
		_ = printTasks(m.Stdout, failed)
	}
	return fmt.Errorf("execution %d: %d task(s) failed", id, ex.Failed)
}

func printExecutions(w io.Writer, execs ...policy.Execution) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPOLICY\tTRIGGER\tSTATUS\tTOTAL\tSUCCEEDED\tFAILED\tPENDING\tRUNNING\tBYTES\tSTARTED\tFINISHED")
	for _, e := range execs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", e.ID, e.Policy, e.Trigger, e.Status,
			e.Total, e.Succeeded, e.Failed, e.Pending, e.Running, humanBytes(e.Bytes), when(e.Created), when(e.Finished))
	}
	return tw.Flush()
}

func printTasks(w io.Writer, tasks []policy.Task) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tKIND\tARTIFACT\tDEST\tSTATUS\tATTEMPTS\tBYTES\tNODE\tERROR / NOTE")
	for _, t := range tasks {
		msg := t.Error
		if msg == "" {
			msg = t.Note
		}
		fmt.Fprintf(tw, "%d\t%s\t%s:%s\t%s/%s\t%s\t%d\t%s\t%s\t%s\n", t.ID, t.Kind, t.Repo, t.Ref(), t.Endpoint, t.DestRepo,
			t.Status, t.Attempts, humanBytes(t.Bytes), dash(t.Owner), msg)
	}
	return tw.Flush()
}
