package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/policy"
	"github.com/berth-registry/berth/replicate"
)

// args checks that a command got exactly the named arguments.
func args(c *cli.Context, names ...string) ([]string, error) {
	switch {
	case c.NArg() == len(names):
	case len(names) == 0:
		return nil, fmt.Errorf("%s takes no arguments, got %q", c.Command.FullName(), c.Args().Slice())
	default:
		return nil, fmt.Errorf("%s takes %s, got %d argument(s)", c.Command.FullName(), strings.Join(names, " "), c.NArg())
	}
	return c.Args().Slice(), nil
}

// when formats unix nanoseconds for a table.
func when(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}

func (m *Main) endpointCommand() *cli.Command {
	return &cli.Command{
		Name:  "endpoint",
		Usage: "registries that policies replicate to",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add (or with --replace, replace) an endpoint, after checking that it answers with the credentials",
				ArgsUsage: "NAME",
				Flags:     endpointAddFlags(),
				Action: func(c *cli.Context) error {
					a, err := args(c, "NAME")
					if err != nil {
						return err
					}
					client, output, err := clientOf(c)
					if err != nil {
						return err
					}
					password := c.String("password")
					if c.Bool("password-stdin") {
						b, err := io.ReadAll(io.LimitReader(m.stdin(), 4096))
						if err != nil {
							return err
						}
						password = strings.TrimRight(string(b), "\r\n")
					}
					spec := replicate.EndpointSpec{
						Name: a[0], URL: c.String("url"), Type: c.String("type"), Insecure: c.Bool("insecure"),
						User: c.String("user"), Password: password, SkipCheck: c.Bool("skip-check"),
					}
					method, path := http.MethodPost, "endpoints"
					if c.Bool("replace") {
						method, path = http.MethodPut, "endpoints/"+url.PathEscape(a[0])
					}
					var ep replicate.EndpointView
					if err := client.do(c.Context, method, path, spec, &ep); err != nil {
						return err
					}
					return printEndpoints(m.Stdout, output, ep)
				},
			},
			{
				Name:  "list",
				Usage: "list the endpoints",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					client, output, err := clientFrom(c, "endpoint list")
					if err != nil {
						return err
					}
					var eps []replicate.EndpointView
					if err := client.do(c.Context, http.MethodGet, "endpoints", nil, &eps); err != nil {
						return err
					}
					if output == outputJSON {
						return writeJSONOut(m.Stdout, eps)
					}
					return printEndpoints(m.Stdout, output, eps...)
				},
			},
			endpointByName(m, "show", "show an endpoint (never its password)", http.MethodGet, ""),
			endpointByName(m, "check", "check that an endpoint answers, now", http.MethodPost, "/check"),
			{
				Name:      "remove",
				Usage:     "remove an endpoint that no policy uses",
				ArgsUsage: "NAME",
				Flags:     clientFlags(),
				Action: func(c *cli.Context) error {
					a, err := args(c, "NAME")
					if err != nil {
						return err
					}
					client, _, err := clientOf(c)
					if err != nil {
						return err
					}
					if err := client.do(c.Context, http.MethodDelete, "endpoints/"+url.PathEscape(a[0]), nil, nil); err != nil {
						return err
					}
					_, err = fmt.Fprintf(m.Stdout, "endpoint %s removed\n", a[0])
					return err
				},
			},
		},
	}
}

// endpointByName is a subcommand that takes an endpoint's name.
func endpointByName(m *Main, name, usage, method, suffix string) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "NAME",
		Flags:     clientFlags(),
		Action: func(c *cli.Context) error {
			a, err := args(c, "NAME")
			if err != nil {
				return err
			}
			client, output, err := clientOf(c)
			if err != nil {
				return err
			}
			path := "endpoints/" + url.PathEscape(a[0]) + suffix
			if suffix == "" {
				var ep replicate.EndpointView
				if err := client.do(c.Context, method, path, nil, &ep); err != nil {
					return err
				}
				return printEndpoints(m.Stdout, output, ep)
			}
			var h replicate.Health
			if err := client.do(c.Context, method, path, nil, &h); err != nil {
				return err
			}
			if output == outputJSON {
				return writeJSONOut(m.Stdout, h)
			}
			if !h.Reachable {
				return fmt.Errorf("endpoint %s is not reachable: %s", a[0], h.Error)
			}
			_, err = fmt.Fprintf(m.Stdout, "endpoint %s is reachable (%d ms)\n", a[0], h.LatencyMS)
			return err
		},
	}
}

func printEndpoints(w io.Writer, output string, eps ...replicate.EndpointView) error {
	if output == outputJSON && len(eps) == 1 {
		return writeJSONOut(w, eps[0])
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tURL\tUSER\tREACHABLE\tCHECKED\tERROR")
	for _, e := range eps {
		reach := "-"
		if e.Health.Checked != 0 {
			reach = strconv.FormatBool(e.Health.Reachable)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.Type, e.URL, dash(e.User), reach, when(e.Health.Checked), e.Health.Error)
	}
	return tw.Flush()
}

// parseTrigger reads --trigger: manual, event, or cron:'SPEC'.
func parseTrigger(s string) (trigger, spec string, err error) {
	switch {
	case s == policy.TriggerManual || s == policy.TriggerEvent:
		return s, "", nil
	case strings.HasPrefix(s, "cron:"):
		spec = strings.Trim(strings.TrimSpace(strings.TrimPrefix(s, "cron:")), `'"`)
		if spec == "" {
			return "", "", errors.New("trigger cron needs a spec: cron:'*/10 * * * *' or cron:'@every 10m'")
		}
		if _, err := replicate.ParseCron(spec); err != nil {
			return "", "", err
		}
		return policy.TriggerCron, spec, nil
	}
	return "", "", fmt.Errorf("trigger %q: want manual, event or cron:'SPEC'", s)
}

// parseBandwidth reads --bandwidth such as 50MB/s or 8MiB (bytes per
// second); "" is no limit.
func parseBandwidth(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := humanize.ParseBytes(strings.TrimSuffix(strings.TrimSpace(s), "/s"))
	if err != nil || n > 1<<50 {
		return 0, fmt.Errorf("bandwidth %q: want bytes per second like 50MB/s or 8MiB/s", s)
	}
	return int64(n), nil
}

func (m *Main) policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "replication policies: what goes to which endpoint, and when",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add (or with --replace, replace) a replication policy",
				ArgsUsage: "NAME",
				Description: "Globs are doublestar globs: * stays within a path component, ** crosses them,\n" +
					"{a,b} is either. --flatten N drops N leading components of the repository\n" +
					"(-1: all but the last), then --dest-prefix is put in front.",
				Flags: append(clientFlags(),
					&cli.StringFlag{Name: "endpoint", Required: true, Usage: "endpoint `NAME`"},
					&cli.StringFlag{Name: "repos", Usage: "repositories to replicate (`GLOB`; default all)"},
					&cli.StringFlag{Name: "tags", Usage: "tags to replicate (`GLOB`; default all)"},
					&cli.StringFlag{Name: "exclude-repos", Usage: "repositories to leave out (`GLOB`)"},
					&cli.StringFlag{Name: "exclude-tags", Usage: "tags to leave out (`GLOB`)"},
					&cli.BoolFlag{Name: "only-signed", Usage: "replicate only artifacts with a cosign signature"},
					&cli.StringFlag{Name: "dest-prefix", Usage: "put `PREFIX`/ in front of repositories at the destination"},
					&cli.IntFlag{Name: "flatten", Usage: "drop `N` leading components of repositories at the destination (-1: all but the last)"},
					&cli.StringFlag{Name: "trigger", Required: true, Usage: "manual, event, or cron:'SPEC'"},
					&cli.BoolFlag{Name: "delete", Usage: "propagate deletions"},
					&cli.BoolFlag{Name: "override", Usage: "move tags that point elsewhere at a plain OCI destination"},
					&cli.StringFlag{Name: "bandwidth", Usage: "bound each node's copies for this policy, like 50MB/s"},
					&cli.IntFlag{Name: "concurrency", Usage: "tasks of this policy running at once in the cluster (default 4)"},
					&cli.BoolFlag{Name: "disabled", Usage: "add it disabled"},
					&cli.BoolFlag{Name: "replace", Usage: "replace a policy of that name"},
				),
				Action: func(c *cli.Context) error {
					a, err := args(c, "NAME")
					if err != nil {
						return err
					}
					client, output, err := clientOf(c)
					if err != nil {
						return err
					}
					trigger, spec, err := parseTrigger(c.String("trigger"))
					if err != nil {
						return err
					}
					bw, err := parseBandwidth(c.String("bandwidth"))
					if err != nil {
						return err
					}
					enabled := !c.Bool("disabled")
					rule := map[string]any{
						"name": a[0], "endpoint": c.String("endpoint"), "repos": c.String("repos"), "tags": c.String("tags"),
						"exclude_repos": c.String("exclude-repos"), "exclude_tags": c.String("exclude-tags"),
						"only_signed": c.Bool("only-signed"), "dest_prefix": c.String("dest-prefix"), "flatten": c.Int("flatten"),
						"trigger": trigger, "cron": spec, "delete": c.Bool("delete"), "override": c.Bool("override"),
						"bandwidth": bw, "concurrency": c.Int("concurrency"), "enabled": enabled,
					}
					method, path := http.MethodPost, "policies"
					if c.Bool("replace") {
						method, path = http.MethodPut, "policies/"+url.PathEscape(a[0])
					}
					var r policy.Rule
					if err := client.do(c.Context, method, path, rule, &r); err != nil {
						return err
					}
					return printRules(m.Stdout, output, r)
				},
			},
			{
				Name:  "list",
				Usage: "list the policies",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					client, output, err := clientFrom(c, "policy list")
					if err != nil {
						return err
					}
					var rs []policy.Rule
					if err := client.do(c.Context, http.MethodGet, "policies", nil, &rs); err != nil {
						return err
					}
					if output == outputJSON {
						return writeJSONOut(m.Stdout, rs)
					}
					return printRules(m.Stdout, output, rs...)
				},
			},
			ruleByName(m, "show", "show a policy", http.MethodGet, ""),
			ruleByName(m, "enable", "enable a policy", http.MethodPost, "/enable"),
			ruleByName(m, "disable", "disable a policy (its queued tasks stay)", http.MethodPost, "/disable"),
			{
				Name:      "remove",
				Usage:     "remove a policy; its unfinished tasks stop",
				ArgsUsage: "NAME",
				Flags:     clientFlags(),
				Action: func(c *cli.Context) error {
					a, err := args(c, "NAME")
					if err != nil {
						return err
					}
					client, _, err := clientOf(c)
					if err != nil {
						return err
					}
					if err := client.do(c.Context, http.MethodDelete, "policies/"+url.PathEscape(a[0]), nil, nil); err != nil {
						return err
					}
					_, err = fmt.Fprintf(m.Stdout, "policy %s removed\n", a[0])
					return err
				},
			},
		},
	}
}

func ruleByName(m *Main, name, usage, method, suffix string) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "NAME",
		Flags:     clientFlags(),
		Action: func(c *cli.Context) error {
			a, err := args(c, "NAME")
			if err != nil {
				return err
			}
			client, output, err := clientOf(c)
			if err != nil {
				return err
			}
			var r policy.Rule
			if err := client.do(c.Context, method, "policies/"+url.PathEscape(a[0])+suffix, nil, &r); err != nil {
				return err
			}
			return printRules(m.Stdout, output, r)
		},
	}
}

func printRules(w io.Writer, output string, rs ...policy.Rule) error {
	if output == outputJSON && len(rs) == 1 {
		return writeJSONOut(w, rs[0])
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tENDPOINT\tTRIGGER\tREPOS\tTAGS\tDEST\tDELETE\tENABLED")
	for _, r := range rs {
		trig := r.Trigger
		if r.Cron != "" {
			trig += ":" + r.Cron
		}
		dest := "same"
		if r.DestPrefix != "" || r.Flatten != 0 {
			dest = fmt.Sprintf("prefix %q, flatten %d", r.DestPrefix, r.Flatten)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%t\t%t\n", r.Name, r.Endpoint, trig, dash(r.Repos), dash(r.Tags), dest, r.Delete, r.Enabled)
	}
	return tw.Flush()
}

// endpointAddFlags are the flags of `endpoint add`: --user and --password
// are the endpoint's credentials there, so the node's own come from
// --server-user and --server-password (BERTH_USER, BERTH_PASSWORD) or the
// saved login.
func endpointAddFlags() []cli.Flag {
	return append(serverClientFlags("admin user name at --server", "admin password at --server (default: the saved login, or <data>/admin.password)"),
		&cli.StringFlag{Name: "url", Required: true, Usage: "`URL` of the registry: scheme and host[:port]"},
		&cli.StringFlag{Name: "type", Value: policy.EndpointBerth, Usage: "berth (another berth cluster: tag versions travel, for dual-master) or oci (any OCI registry)"},
		&cli.StringFlag{Name: "user", Usage: "user name at the endpoint"},
		&cli.StringFlag{Name: "password", Usage: "password at the endpoint (prefer --password-stdin)"},
		&cli.BoolFlag{Name: "password-stdin", Usage: "read the endpoint's password from standard input"},
		&cli.BoolFlag{Name: "insecure", Usage: "do not verify the endpoint's TLS certificate"},
		&cli.BoolFlag{Name: "skip-check", Usage: "store it without the connectivity check"},
		&cli.BoolFlag{Name: "replace", Usage: "replace an endpoint of that name"},
	)
}
