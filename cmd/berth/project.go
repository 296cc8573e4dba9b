package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/policy"
)

// projectView is a project as the API shows it: with its usage.
type projectView struct {
	policy.Project
	Usage policy.Usage `json:"usage"`
}

// quotaView is a project's quota and usage (GET /quotas, GET
// /projects/{p}/quota).
type quotaView struct {
	Project string       `json:"project,omitempty"`
	Quota   policy.Quota `json:"quota"`
	Usage   policy.Usage `json:"usage"`
}

func (m *Main) projectCommand() *cli.Command {
	return &cli.Command{
		Name:  "project",
		Usage: "projects: the first component of a repository name, with its access, quota and policies",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a project; you become its projectAdmin",
				ArgsUsage: "NAME",
				Flags: append(clientFlags(),
					&cli.BoolFlag{Name: "public", Usage: "anyone, anonymous included, may pull from it"},
					&cli.StringFlag{Name: "storage-limit", Value: "unlimited", Usage: "storage quota: a `SIZE` like 10GiB or 500MB, or -1 (unlimited)"},
					&cli.StringFlag{Name: "count-limit", Value: "unlimited", Usage: "artifact quota: a number `N`, or -1 (unlimited)"},
				),
				Action: m.action(func(c *call) error {
					name := c.args[0]
					if err := policy.ValidateProjectName(name); err != nil {
						return err
					}
					storage, err := parseStorageLimit(c.String("storage-limit"))
					if err != nil {
						return err
					}
					count, err := parseCountLimit(c.String("count-limit"))
					if err != nil {
						return err
					}
					in := map[string]any{"name": name, "public": c.Bool("public"), "storage_limit": storage, "count_limit": count}
					var p projectView
					if err := c.do(http.MethodPost, "projects", in, &p); err != nil {
						return err
					}
					return c.print(p, func(w io.Writer) error { return printProject(w, p) })
				}, "NAME"),
			},
			{
				Name:  "list",
				Usage: "list the projects you may see, with their usage",
				Flags: append(clientFlags(),
					&cli.StringFlag{Name: "name", Usage: "only projects whose name holds `TEXT`"},
					&cli.BoolFlag{Name: "public", Usage: "only public projects (--public=false: only private ones)"},
				),
				Action: m.action(func(c *call) error {
					q := url.Values{}
					if n := c.String("name"); n != "" {
						q.Set("name", n)
					}
					if c.IsSet("public") {
						q.Set("public", strconv.FormatBool(c.Bool("public")))
					}
					ps, err := listPages[projectView](c, "projects", q)
					if err != nil {
						return err
					}
					return c.print(ps, func(w io.Writer) error { return printProjects(w, ps) })
				}),
			},
			{
				Name:      "show",
				Usage:     "show a project with its quota, usage and policies",
				ArgsUsage: "NAME",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					return show(c, pathOf("projects", c.args[0]), printProject)
				}, "NAME"),
			},
			{
				Name:      "update",
				Usage:     "make a project public or private",
				ArgsUsage: "NAME",
				Flags: append(clientFlags(),
					&cli.BoolFlag{Name: "public", Usage: "--public=true or --public=false"},
				),
				Action: m.action(func(c *call) error {
					if !c.IsSet("public") {
						return fmt.Errorf("project update %s: nothing to change; give --public=true or --public=false", c.args[0])
					}
					public := c.Bool("public")
					var p projectView
					if err := c.do(http.MethodPut, pathOf("projects", c.args[0]), map[string]any{"public": public}, &p); err != nil {
						return err
					}
					if p.Name != "" {
						return c.print(p, func(w io.Writer) error { return printProject(w, p) })
					}
					return c.done("project %s is now %s", c.args[0], visibility(public))
				}, "NAME"),
			},
			{
				Name:      "delete",
				Usage:     "delete an empty project",
				ArgsUsage: "NAME",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					if err := c.do(http.MethodDelete, pathOf("projects", c.args[0]), nil, nil); err != nil {
						return err
					}
					return c.done("project %s deleted", c.args[0])
				}, "NAME"),
			},
		},
	}
}

func visibility(public bool) string {
	if public {
		return "public"
	}
	return "private"
}

// scheduleText describes a retention schedule.
func scheduleText(spec string) string {
	if spec == "" {
		return "run by hand only"
	}
	return "schedule " + spec
}

func printProjects(w io.Writer, ps []projectView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tACCESS\tOWNER\tSTORAGE\tARTIFACTS\tCREATED")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, visibility(p.Public), dash(p.Owner),
			formatUse(p.Usage.Storage, p.Quota.Storage, true), formatUse(p.Usage.Count, p.Quota.Count, false), when(p.Created))
	}
	return tw.Flush()
}

func printProject(w io.Writer, p projectView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", p.Name)
	fmt.Fprintf(tw, "access\t%s\n", visibility(p.Public))
	fmt.Fprintf(tw, "owner\t%s\n", dash(p.Owner))
	fmt.Fprintf(tw, "created\t%s\n", when(p.Created))
	fmt.Fprintf(tw, "storage\t%s\n", formatUse(p.Usage.Storage, p.Quota.Storage, true))
	fmt.Fprintf(tw, "artifacts\t%s\n", formatUse(p.Usage.Count, p.Quota.Count, false))
	fmt.Fprintf(tw, "immutability rules\t%d\n", len(p.Immutable))
	switch r := p.Retention; {
	case r == nil || len(r.Rules) == 0:
		fmt.Fprintf(tw, "retention\tnone\n")
	default:
		fmt.Fprintf(tw, "retention\t%d rule(s), %s\n", len(r.Rules), scheduleText(r.Schedule))
	}
	return tw.Flush()
}

func (m *Main) memberCommand() *cli.Command {
	roleHelp := "ROLE is projectAdmin, maintainer, developer, guest or limitedGuest\n" +
		"(project-admin and limited-guest are accepted too)."
	return &cli.Command{
		Name:  "member",
		Usage: "project members and their roles",
		Subcommands: []*cli.Command{
			{
				Name:        "add",
				Usage:       "give a user a role in a project",
				ArgsUsage:   "PROJECT USER ROLE",
				Description: roleHelp,
				Flags:       clientFlags(),
				Action: m.action(func(c *call) error {
					role, err := policy.ParseRole(c.args[2])
					if err != nil {
						return err
					}
					var mb policy.Member
					in := map[string]any{"username": c.args[1], "role": role}
					if err := c.do(http.MethodPost, pathOf("projects", c.args[0], "members"), in, &mb); err != nil {
						return err
					}
					if mb.User == "" {
						mb = policy.Member{Project: c.args[0], User: c.args[1], Role: role}
					}
					return printMember(c, c.args[0], mb)
				}, "PROJECT", "USER", "ROLE"),
			},
			{
				Name:      "list",
				Usage:     "list a project's members",
				ArgsUsage: "PROJECT",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					return show(c, pathOf("projects", c.args[0], "members"), func(w io.Writer, ms []policy.Member) error {
						tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "USER\tROLE")
						for _, mb := range ms {
							fmt.Fprintf(tw, "%s\t%s\n", mb.User, mb.Role)
						}
						return tw.Flush()
					})
				}, "PROJECT"),
			},
			{
				Name:        "set",
				Usage:       "change a member's role",
				ArgsUsage:   "PROJECT USER ROLE",
				Description: roleHelp,
				Flags:       clientFlags(),
				Action: m.action(func(c *call) error {
					role, err := policy.ParseRole(c.args[2])
					if err != nil {
						return err
					}
					if err := c.do(http.MethodPut, pathOf("projects", c.args[0], "members", c.args[1]), map[string]any{"role": role}, nil); err != nil {
						return err
					}
					return printMember(c, c.args[0], policy.Member{Project: c.args[0], User: c.args[1], Role: role})
				}, "PROJECT", "USER", "ROLE"),
			},
			{
				Name:      "remove",
				Usage:     "take a user out of a project",
				ArgsUsage: "PROJECT USER",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					if err := c.do(http.MethodDelete, pathOf("projects", c.args[0], "members", c.args[1]), nil, nil); err != nil {
						return err
					}
					return c.done("%s is no longer a member of project %s", c.args[1], c.args[0])
				}, "PROJECT", "USER"),
			},
		},
	}
}

// printMember says that mb has its role in project.
func printMember(c *call, project string, mb policy.Member) error {
	return c.print(mb, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s is %s in project %s\n", mb.User, mb.Role, project)
		return err
	})
}

func (m *Main) quotaCommand() *cli.Command {
	return &cli.Command{
		Name:  "quota",
		Usage: "project quotas (storage bytes and artifact count) and usage",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "every project's quota and usage (admin)",
				Flags: clientFlags(),
				Action: m.action(func(c *call) error {
					return show(c, "quotas", printQuotas)
				}),
			},
			{
				Name:      "show",
				Usage:     "a project's quota and usage",
				ArgsUsage: "PROJECT",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					var q quotaView
					if err := c.do(http.MethodGet, pathOf("projects", c.args[0], "quota"), nil, &q); err != nil {
						return err
					}
					q.Project = c.args[0]
					return c.print(q, func(w io.Writer) error { return printQuotas(w, []quotaView{q}) })
				}, "PROJECT"),
			},
			{
				Name:      "set",
				Usage:     "set a project's quota (admin); a limit not given stays",
				ArgsUsage: "PROJECT",
				Flags: append(clientFlags(),
					&cli.StringFlag{Name: "storage", Usage: "storage limit: a `SIZE` like 10GiB or 500MB, or -1/unlimited"},
					&cli.StringFlag{Name: "count", Usage: "artifact limit: a number `N`, or -1/unlimited"},
				),
				Action: m.action(func(c *call) error {
					if !c.IsSet("storage") && !c.IsSet("count") {
						return fmt.Errorf("quota set %s: nothing to change; give --storage and/or --count", c.args[0])
					}
					var storage, count int64
					var err error
					if c.IsSet("storage") {
						if storage, err = parseStorageLimit(c.String("storage")); err != nil {
							return err
						}
					}
					if c.IsSet("count") {
						if count, err = parseCountLimit(c.String("count")); err != nil {
							return err
						}
					}
					path := pathOf("projects", c.args[0], "quota")
					// The PUT sets both limits: read them to keep the one
					// not given (and the usage, to show).
					var q quotaView
					if err := c.do(http.MethodGet, path, nil, &q); err != nil {
						return err
					}
					if c.IsSet("storage") {
						q.Quota.Storage = storage
					}
					if c.IsSet("count") {
						q.Quota.Count = count
					}
					if err := c.do(http.MethodPut, path, q.Quota, nil); err != nil {
						return err
					}
					q.Project = c.args[0]
					return c.print(q, func(w io.Writer) error { return printQuotas(w, []quotaView{q}) })
				}, "PROJECT"),
			},
		},
	}
}

func printQuotas(w io.Writer, qs []quotaView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECT\tSTORAGE\tARTIFACTS")
	for _, q := range qs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", q.Project, formatUse(q.Usage.Storage, q.Quota.Storage, true), formatUse(q.Usage.Count, q.Quota.Count, false))
	}
	return tw.Flush()
}
