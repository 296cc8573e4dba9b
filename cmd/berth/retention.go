package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/policy"
)

// The rule syntax of `berth retention set --rule`, one rule a flag:
//
//	KIND[:N] [repos=[!]GLOB] [tags=[!]GLOB] [+untagged] [disabled]
//
// KIND is latestPushedK, latestPulledN, nDaysSinceLastPush,
// nDaysSinceLastPull or always (Harbor's names, in any case; latestPushed,
// latestPulled, pushedWithin and pulledWithin too); N is the count, or
// the days (30 or 30d). Globs are doublestar globs, repos= relative to the
// project; both default to **. A ! before a glob selects what does not
// match. +untagged makes the rule select untagged artifacts too. The rule
// keeps what it selects: every artifact of a repository some rule applies
// to that no rule keeps is deleted.
const ruleSyntax = "KIND[:N] [repos=[!]GLOB] [tags=[!]GLOB] [+untagged] [disabled]"

// retentionKinds maps a kind's name, in lower case without '-' and '_',
// to the kind.
var retentionKinds = map[string]string{
	"latestpushedk":      policy.RetainLatestPushed,
	"latestpushed":       policy.RetainLatestPushed,
	"latestpulledn":      policy.RetainLatestPulled,
	"latestpulled":       policy.RetainLatestPulled,
	"ndayssincelastpush": policy.RetainPushedWithin,
	"pushedwithin":       policy.RetainPushedWithin,
	"ndayssincelastpull": policy.RetainPulledWithin,
	"pulledwithin":       policy.RetainPulledWithin,
	"always":             policy.RetainAlways,
}

// parseRetentionRule reads one rule in the syntax above.
func parseRetentionRule(s string) (policy.RetentionRule, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return policy.RetentionRule{}, fmt.Errorf("empty retention rule: want %s", ruleSyntax)
	}
	name, param, hasParam := strings.Cut(fields[0], ":")
	kind, ok := retentionKinds[strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(name))]
	if !ok {
		return policy.RetentionRule{}, fmt.Errorf("rule %q: kind %q: want latestPushedK, latestPulledN, nDaysSinceLastPush, nDaysSinceLastPull or always", s, name)
	}
	r := policy.RetentionRule{Kind: kind, Repos: "**", Tags: "**"}
	switch {
	case kind == policy.RetainAlways && hasParam:
		return r, fmt.Errorf("rule %q: always takes no count", s)
	case kind != policy.RetainAlways && !hasParam:
		return r, fmt.Errorf("rule %q: %s needs a count: %s:N", s, kind, kind)
	case kind != policy.RetainAlways:
		if kind == policy.RetainPushedWithin || kind == policy.RetainPulledWithin {
			param = strings.TrimSuffix(param, "d")
		}
		n, err := strconv.Atoi(param)
		if err != nil || n < 0 {
			return r, fmt.Errorf("rule %q: count %q: want a number from 0", s, param)
		}
		r.Param = n
	}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		key, glob, _ := strings.Cut(f, "=")
		if seen[key] {
			return r, fmt.Errorf("rule %q: %s given twice", s, key)
		}
		seen[key] = true
		switch {
		case key == "repos" && strings.Contains(f, "="):
			r.Repos, r.ExcludeRepos = strings.CutPrefix(glob, "!")
		case key == "tags" && strings.Contains(f, "="):
			r.Tags, r.ExcludeTags = strings.CutPrefix(glob, "!")
		case f == "+untagged":
			r.Untagged = true
		case f == "disabled":
			r.Disabled = true
		default:
			return r, fmt.Errorf("rule %q: %q: want %s", s, f, ruleSyntax)
		}
	}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("rule %q: %w", s, err)
	}
	return r, nil
}

// formatRetentionRule writes r in the syntax parseRetentionRule reads.
func formatRetentionRule(r policy.RetentionRule) string {
	s := r.Kind
	if r.Kind != policy.RetainAlways {
		s += ":" + strconv.Itoa(r.Param)
	}
	s += " repos=" + excl(r.ExcludeRepos) + r.Repos + " tags=" + excl(r.ExcludeTags) + r.Tags
	if r.Untagged {
		s += " +untagged"
	}
	if r.Disabled {
		s += " disabled"
	}
	return s
}

func excl(b bool) string {
	if b {
		return "!"
	}
	return ""
}

// parseSchedule reads --schedule: a cron spec or descriptor, or "" / none
// to run only by hand.
func parseSchedule(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "none") {
		return "", nil
	}
	if _, err := policy.ParseSchedule(s); err != nil {
		return "", fmt.Errorf("schedule %q: want five cron fields or a descriptor like @daily or '@every 6h': %w", s, err)
	}
	return s, nil
}

func (m *Main) retentionCommand() *cli.Command {
	return &cli.Command{
		Name:  "retention",
		Usage: "tag retention: which artifacts a project keeps, runs, and what they deleted",
		Subcommands: []*cli.Command{
			{
				Name:      "show",
				Usage:     "show a project's retention rules and schedule",
				ArgsUsage: "PROJECT",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					return show(c, pathOf("projects", c.args[0], "retention"), printRetention)
				}, "PROJECT"),
			},
			{
				Name:      "set",
				Usage:     "replace a project's retention rules",
				ArgsUsage: "PROJECT",
				Description: "Each --rule is " + ruleSyntax + ",\n" +
					"KIND one of latestPushedK, latestPulledN, nDaysSinceLastPush, nDaysSinceLastPull, always:\n\n" +
					"  --rule 'latestPushedK:10 repos=** tags=v*'     the 10 newest v* tags of every repository\n" +
					"  --rule 'nDaysSinceLastPull:30 repos=!tmp/**'   what was pulled in 30 days, outside tmp/\n" +
					"  --rule 'always tags=release-*'                 every release-* tag\n\n" +
					"In a repository that a rule applies to, every artifact that no rule keeps is\n" +
					"deleted, with its signatures. Try it with `berth retention run PROJECT --dry-run`.\n" +
					"The schedule stays unless --schedule is given ('' or none: by hand only).",
				Flags: append(clientFlags(),
					repeatedFlag("rule", "a rule: "+ruleSyntax+" (repeatable)"),
					&cli.StringFlag{Name: "schedule", Usage: "cron `SPEC` (5 fields) or descriptor like @daily; none: by hand only"},
				),
				Action: m.action(func(c *call) error {
					var p policy.RetentionPolicy
					for _, s := range repeatedValues(c.Context, "rule") {
						r, err := parseRetentionRule(s)
						if err != nil {
							return err
						}
						p.Rules = append(p.Rules, r)
					}
					if len(p.Rules) == 0 {
						return fmt.Errorf("retention set %s: give at least one --rule (berth retention clear removes them all)", c.args[0])
					}
					if len(p.Rules) > policy.MaxRetentionRules {
						return fmt.Errorf("retention set %s: at most %d rules", c.args[0], policy.MaxRetentionRules)
					}
					path := pathOf("projects", c.args[0], "retention")
					if c.IsSet("schedule") {
						s, err := parseSchedule(c.String("schedule"))
						if err != nil {
							return err
						}
						p.Schedule = s
					} else {
						var old policy.RetentionPolicy
						if err := c.do(http.MethodGet, path, nil, &old); err != nil {
							return err
						}
						p.Schedule = old.Schedule
					}
					if err := c.do(http.MethodPut, path, p, nil); err != nil {
						return err
					}
					return c.print(p, func(w io.Writer) error { return printRetention(w, p) })
				}, "PROJECT"),
			},
			{
				Name:      "clear",
				Usage:     "remove a project's retention rules and schedule: nothing is deleted by retention",
				ArgsUsage: "PROJECT",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					p := policy.RetentionPolicy{Rules: []policy.RetentionRule{}}
					if err := c.do(http.MethodPut, pathOf("projects", c.args[0], "retention"), p, nil); err != nil {
						return err
					}
					return c.done("retention of project %s cleared", c.args[0])
				}, "PROJECT"),
			},
			{
				Name:      "run",
				Usage:     "run a project's retention now and print its decisions: what goes and why",
				ArgsUsage: "PROJECT",
				Flags: append(clientFlags(),
					&cli.BoolFlag{Name: "dry-run", Usage: "decide and report, delete nothing"},
					&cli.BoolFlag{Name: "no-wait", Usage: "start it and print the run's id"},
					&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "stop waiting after this long (the run goes on)"},
				),
				Action: m.action(func(c *call) error {
					var run policy.RetentionRun
					in := map[string]any{"dry_run": c.Bool("dry-run")}
					if err := c.do(http.MethodPost, pathOf("projects", c.args[0], "retention", "run"), in, &run); err != nil {
						return err
					}
					if run.ID == 0 {
						return errors.New("retention run: the server returned no run id")
					}
					if c.Bool("no-wait") {
						return c.print(run, func(w io.Writer) error {
							_, err := fmt.Fprintf(w, "retention run %d of project %s started\n", run.ID, c.args[0])
							return err
						})
					}
					run, err := c.waitRun(c.args[0], run, c.Duration("timeout"))
					if err != nil {
						return err
					}
					if err := c.print(run, func(w io.Writer) error { return printRun(w, run) }); err != nil {
						return err
					}
					if run.Status == policy.RunFailed {
						return fmt.Errorf("retention run %d failed: %s", run.ID, run.Error)
					}
					return nil
				}, "PROJECT"),
			},
			{
				Name:      "runs",
				Usage:     "list a project's retention runs",
				ArgsUsage: "PROJECT",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					return show(c, pathOf("projects", c.args[0], "retention", "runs"), printRuns)
				}, "PROJECT"),
			},
			{
				Name:      "run-show",
				Usage:     "show a retention run and its decisions",
				ArgsUsage: "PROJECT ID",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					id, err := parseID("run id", c.args[1])
					if err != nil {
						return err
					}
					return show(c, pathOf("projects", c.args[0], "retention", "runs", strconv.FormatUint(id, 10)), printRun)
				}, "PROJECT", "ID"),
			},
		},
	}
}

// runPollInterval is how often `retention run` looks at a run it waits for.
var runPollInterval = 500 * time.Millisecond

// waitRun polls run until it is no longer running, or timeout passes.
func (c *call) waitRun(project string, run policy.RetentionRun, timeout time.Duration) (policy.RetentionRun, error) {
	ctx, cancel := context.WithTimeout(c.Context.Context, timeout)
	defer cancel()
	path := pathOf("projects", project, "retention", "runs", strconv.FormatUint(run.ID, 10))
	a, err := c.api()
	if err != nil {
		return run, err
	}
	for run.Status == policy.RunRunning || run.Status == "" {
		select {
		case <-ctx.Done():
			return run, fmt.Errorf("retention run %d of project %s still running after %s (berth retention run-show %s %d)", run.ID, project, timeout, project, run.ID)
		case <-time.After(runPollInterval):
		}
		if err := a.do(ctx, http.MethodGet, path, nil, &run); err != nil {
			return run, err
		}
	}
	return run, nil
}

func printRetention(w io.Writer, p policy.RetentionPolicy) error {
	if len(p.Rules) == 0 {
		_, err := fmt.Fprintln(w, "no retention rules: retention deletes nothing")
		return err
	}
	fmt.Fprintf(w, "%s\n\n", scheduleText(p.Schedule))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tRULE")
	for i, r := range p.Rules {
		fmt.Fprintf(tw, "%d\t%s\n", i+1, formatRetentionRule(r))
	}
	return tw.Flush()
}

func printRuns(w io.Writer, runs []policy.RetentionRun) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTRIGGER\tDRY RUN\tSTATUS\tRETAINED\tDELETED\tSTARTED\tFINISHED\tERROR")
	for _, r := range runs {
		fmt.Fprintf(tw, "%d\t%s\t%t\t%s\t%d\t%d\t%s\t%s\t%s\n", r.ID, dash(r.Trigger), r.DryRun, r.Status, r.Retained, r.Deleted, when(r.Started), when(r.Finished), r.Error)
	}
	return tw.Flush()
}

// printRun shows a run and its decisions, deletions first as the server
// lists them.
func printRun(w io.Writer, r policy.RetentionRun) error {
	if err := printRuns(w, []policy.RetentionRun{r}); err != nil {
		return err
	}
	if len(r.Decisions) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	gone := "delete"
	if r.DryRun {
		gone = "would delete"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DECISION\tREPOSITORY\tDIGEST\tTAGS\tPUSHED\tPULLED\tWHY")
	for _, d := range r.Decisions {
		what := "keep"
		if !d.Retain {
			what = gone
		}
		digest := string(d.Digest)
		if len(digest) > 19 {
			digest = digest[:19] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", what, d.Repo, digest, dash(strings.Join(d.Tags, ",")), when(d.Pushed), when(d.Pulled), d.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := r.Retained + r.Deleted; n > len(r.Decisions) {
		_, err := fmt.Fprintf(w, "(the first %d of %d decisions)\n", len(r.Decisions), n)
		return err
	}
	return nil
}

// immutableRuleBody is an immutability rule as POST takes it: without id.
type immutableRuleBody struct {
	Repos        string `json:"repos"`
	Tags         string `json:"tags"`
	ExcludeRepos bool   `json:"exclude_repos,omitempty"`
	ExcludeTags  bool   `json:"exclude_tags,omitempty"`
	Disabled     bool   `json:"disabled,omitempty"`
}

func (m *Main) immutableCommand() *cli.Command {
	return &cli.Command{
		Name:  "immutable",
		Usage: "tag immutability rules: matching tags can be neither moved nor deleted",
		Subcommands: []*cli.Command{
			{
				Name:      "list",
				Usage:     "list a project's immutability rules",
				ArgsUsage: "PROJECT",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					return show(c, pathOf("projects", c.args[0], "immutable"), printImmutable)
				}, "PROJECT"),
			},
			{
				Name:      "add",
				Usage:     "add an immutability rule to a project",
				ArgsUsage: "PROJECT",
				Description: "Globs are doublestar globs, --repos relative to the project:\n" +
					"  berth immutable add team --repos '**' --tags 'v*'      every v* tag\n" +
					"  berth immutable add team --repos 'tmp/**' --exclude-repos --tags '**'\n" +
					"                                                       every tag outside tmp/",
				Flags: append(clientFlags(),
					&cli.StringFlag{Name: "repos", Value: "**", Usage: "repositories (`GLOB`, relative to the project)"},
					&cli.StringFlag{Name: "tags", Required: true, Usage: "tags (`GLOB`)"},
					&cli.BoolFlag{Name: "exclude-repos", Usage: "select the repositories --repos does not match"},
					&cli.BoolFlag{Name: "exclude-tags", Usage: "select the tags --tags does not match"},
					&cli.BoolFlag{Name: "disabled", Usage: "add it disabled"},
				),
				Action: m.action(func(c *call) error {
					in := immutableRuleBody{
						Repos: c.String("repos"), Tags: c.String("tags"),
						ExcludeRepos: c.Bool("exclude-repos"), ExcludeTags: c.Bool("exclude-tags"), Disabled: c.Bool("disabled"),
					}
					if err := (policy.ImmutableRule{Repos: in.Repos, Tags: in.Tags}).Validate(); err != nil {
						return err
					}
					var r policy.ImmutableRule
					if err := c.do(http.MethodPost, pathOf("projects", c.args[0], "immutable"), in, &r); err != nil {
						return err
					}
					return c.print(r, func(w io.Writer) error { return printImmutable(w, []policy.ImmutableRule{r}) })
				}, "PROJECT"),
			},
			{
				Name:      "remove",
				Usage:     "remove an immutability rule (ID from berth immutable list)",
				ArgsUsage: "PROJECT ID",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					id, err := parseID("rule id", c.args[1])
					if err != nil {
						return err
					}
					if err := c.do(http.MethodDelete, pathOf("projects", c.args[0], "immutable", strconv.FormatUint(id, 10)), nil, nil); err != nil {
						return err
					}
					return c.done("immutability rule %d of project %s removed", id, c.args[0])
				}, "PROJECT", "ID"),
			},
		},
	}
}

func printImmutable(w io.Writer, rs []policy.ImmutableRule) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREPOS\tTAGS\tENABLED")
	for _, r := range rs {
		fmt.Fprintf(tw, "%d\t%s%s\t%s%s\t%t\n", r.ID, excl(r.ExcludeRepos), r.Repos, excl(r.ExcludeTags), r.Tags, !r.Disabled)
	}
	return tw.Flush()
}
