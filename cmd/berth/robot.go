package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/policy"
)

// robotCreated is the answer of creating a robot: the secret is in it
// once, and never again.
type robotCreated struct {
	Robot  policy.Robot `json:"robot"`
	Secret string       `json:"secret"`
}

// robotPerm is a system robot's permission in one project (or "*") as
// POST /robots takes it.
type robotPerm struct {
	Namespace string          `json:"namespace"`
	Access    []policy.Access `json:"access"`
}

// parseAccessList reads permissions RESOURCE:ACTION, several to a value
// when separated by commas; RESOURCE:* is every action a robot may have
// on RESOURCE. Each must be one a robot may be given; repeats are dropped.
func parseAccessList(values []string) ([]policy.Access, error) {
	var out []policy.Access
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			item = strings.TrimSpace(item)
			res, act, ok := strings.Cut(item, ":")
			if !ok || res == "" || act == "" {
				return nil, fmt.Errorf("permission %q: want RESOURCE:ACTION, such as repository:pull; a robot may have %s", item, assignableText())
			}
			var matched []policy.Access
			for _, a := range policy.RobotAssignable {
				if string(a.Resource) == res && (act == "*" || string(a.Action) == act) {
					matched = append(matched, a)
				}
			}
			if len(matched) == 0 {
				return nil, fmt.Errorf("permission %q: a robot cannot have it; it may have %s", item, assignableText())
			}
			for _, a := range matched {
				if !slices.Contains(out, a) {
					out = append(out, a)
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("a robot needs at least one permission: --perm repository:pull")
	}
	return out, nil
}

// parseSystemPermissions reads a system robot's permissions, each
// PROJECT=RESOURCE:ACTION[,RESOURCE:ACTION...], PROJECT "*" for every
// project. A project named twice gets the union.
func parseSystemPermissions(values []string) ([]robotPerm, error) {
	var out []robotPerm
	for _, v := range values {
		ns, list, ok := strings.Cut(v, "=")
		ns = strings.TrimSpace(ns)
		if !ok || ns == "" {
			return nil, fmt.Errorf("permission %q: a system robot's permission names its project: PROJECT=RESOURCE:ACTION[,...] (PROJECT * for all)", v)
		}
		if ns != policy.AllProjects {
			if err := policy.ValidateProjectName(ns); err != nil {
				return nil, fmt.Errorf("permission %q: %w", v, err)
			}
		}
		acc, err := parseAccessList([]string{list})
		if err != nil {
			return nil, fmt.Errorf("permission %q: %w", v, err)
		}
		i := slices.IndexFunc(out, func(p robotPerm) bool { return p.Namespace == ns })
		if i < 0 {
			out = append(out, robotPerm{Namespace: ns})
			i = len(out) - 1
		}
		for _, a := range acc {
			if !slices.Contains(out[i].Access, a) {
				out[i].Access = append(out[i].Access, a)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("a robot needs at least one permission: --perm 'PROJECT=repository:pull'")
	}
	return out, nil
}

// assignableText lists what a robot may be given, by resource:
// "repository:pull|push|..., artifact:...".
func assignableText() string {
	var parts []string
	var res policy.Resource
	for _, a := range policy.RobotAssignable {
		if a.Resource != res {
			parts = append(parts, string(a.Resource)+":"+string(a.Action))
			res = a.Resource
			continue
		}
		parts[len(parts)-1] += "|" + string(a.Action)
	}
	return strings.Join(parts, ", ")
}

// robotName is the account a robot argument names: a full name
// (robot$team+ci); without the robot$ prefix (shells expand $), team+ci
// or a system robot's ci; with --project team, ci is robot$team+ci.
func robotName(arg, project string) string {
	if policy.IsRobotName(arg) {
		return arg
	}
	if project != "" && !strings.Contains(arg, "+") {
		return policy.RobotName(project, arg)
	}
	return policy.RobotPrefix + arg
}

func (m *Main) robotCommand() *cli.Command {
	// Flags are made for each command: cli keeps state in them.
	projectFlag := func() cli.Flag {
		return &cli.StringFlag{Name: "project", Usage: "the robot's `PROJECT`, so that NAME may be its short name"}
	}
	secretFile := func() cli.Flag {
		return &cli.StringFlag{Name: "secret-file", Usage: "write the secret to `FILE` (mode 0600) instead of printing it"}
	}
	// byName is a subcommand about one robot.
	byName := func(name, usage string, flags []cli.Flag, fn func(c *call, robot string) error) *cli.Command {
		return &cli.Command{
			Name:      name,
			Usage:     usage,
			ArgsUsage: "NAME",
			Flags:     append(append(clientFlags(), projectFlag()), flags...),
			Action: m.action(func(c *call) error {
				return fn(c, robotName(c.args[0], c.String("project")))
			}, "NAME"),
		}
	}
	setDisabled := func(disabled bool) func(c *call, robot string) error {
		return func(c *call, robot string) error {
			path := pathOf("robots", robot)
			var r policy.Robot
			if err := c.do(http.MethodGet, path, nil, &r); err != nil {
				return err
			}
			r.Disabled = disabled
			// The PUT changes only the fields it names.
			if err := c.do(http.MethodPut, path, map[string]any{"disable": disabled}, nil); err != nil {
				return err
			}
			return c.print(r, func(w io.Writer) error { return printRobot(w, r) })
		}
	}
	return &cli.Command{
		Name:  "robot",
		Usage: "robot accounts: project robots (robot$PROJECT+NAME) and system robots (robot$NAME)",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a robot and print its secret, once",
				ArgsUsage: "NAME",
				Description: "A project robot:  --project team --perm repository:pull --perm repository:push\n" +
					"A system robot:   --system --perm 'team=repository:pull,repository:push' --perm '*=repository:pull'\n" +
					"RESOURCE:* is every action a robot may have on RESOURCE. A robot may have\n" +
					assignableText() + ".",
				Flags: append(clientFlags(),
					&cli.StringFlag{Name: "project", Usage: "create a robot of `PROJECT`"},
					&cli.BoolFlag{Name: "system", Usage: "create a system robot (admin), with permissions in named projects or all"},
					repeatedFlag("perm", "a permission: RESOURCE:ACTION[,...], or PROJECT=RESOURCE:ACTION[,...] for a system robot (repeatable)"),
					&cli.StringFlag{Name: "expires-in", Usage: "lifetime in whole days, like 30d or 4w, or never (default: the server's)"},
					&cli.StringFlag{Name: "description", Usage: "what the robot is for"},
					secretFile(),
				),
				Action: m.action(func(c *call) error {
					short, project, system := c.args[0], c.String("project"), c.Bool("system")
					if policy.IsRobotName(short) {
						return fmt.Errorf("robot %q: give its short name; berth names it robot$PROJECT+NAME or robot$NAME", short)
					}
					if err := policy.ValidateRobotShortName(short); err != nil {
						return err
					}
					if (project == "") == !system {
						return errors.New("robot create: give --project PROJECT (a project robot) or --system (a system robot)")
					}
					in := map[string]any{"name": short}
					if d := c.String("description"); d != "" {
						in["description"] = d
					}
					if c.IsSet("expires-in") {
						days, err := parseExpiresIn(c.String("expires-in"))
						if err != nil {
							return err
						}
						in["expires_in_days"] = days
					}
					path := "robots"
					perms := repeatedValues(c.Context, "perm")
					if system {
						ps, err := parseSystemPermissions(perms)
						if err != nil {
							return err
						}
						in["permissions"] = ps
					} else {
						if err := policy.ValidateProjectName(project); err != nil {
							return err
						}
						for _, p := range perms {
							if strings.Contains(p, "=") {
								return fmt.Errorf("permission %q: a project robot's permissions are in its project: give RESOURCE:ACTION", p)
							}
						}
						acc, err := parseAccessList(perms)
						if err != nil {
							return err
						}
						in["permissions"] = acc
						path = pathOf("projects", project, "robots")
					}
					var res robotCreated
					if err := c.do(http.MethodPost, path, in, &res); err != nil {
						return err
					}
					if res.Robot.Name == "" {
						res.Robot.Name = policy.RobotName(project, short)
					}
					return c.showSecret(&res.Robot, res.Robot.Name, res.Secret)
				}, "NAME"),
			},
			{
				Name:  "list",
				Usage: "list a project's robots (--project), or the system robots (admin)",
				Flags: append(clientFlags(), &cli.StringFlag{Name: "project", Usage: "list the robots of `PROJECT`"}),
				Action: m.action(func(c *call) error {
					path := "robots"
					if p := c.String("project"); p != "" {
						path = pathOf("projects", p, "robots")
					}
					return show(c, path, func(w io.Writer, rs []policy.Robot) error {
						tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "NAME\tLEVEL\tENABLED\tEXPIRES\tPERMISSIONS\tDESCRIPTION")
						for _, r := range rs {
							fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\t%s\n", r.Name, r.Level, !r.Disabled, robotExpiry(r), formatRobotPermissions(r), r.Description)
						}
						return tw.Flush()
					})
				}),
			},
			byName("show", "show a robot (never its secret)", nil, func(c *call, robot string) error {
				return show(c, pathOf("robots", robot), printRobot)
			}),
			byName("disable", "disable a robot: it cannot log in until enabled", nil, setDisabled(true)),
			byName("enable", "enable a disabled robot", nil, setDisabled(false)),
			byName("refresh-secret", "give a robot a new secret and print it, once; the old one stops working", []cli.Flag{secretFile()},
				func(c *call, robot string) error {
					var res struct {
						Secret string `json:"secret"`
					}
					if err := c.do(http.MethodPost, pathOf("robots", robot, "secret"), map[string]any{}, &res); err != nil {
						return err
					}
					return c.showSecret(nil, robot, res.Secret)
				}),
			byName("delete", "delete a robot", nil, func(c *call, robot string) error {
				if err := c.do(http.MethodDelete, pathOf("robots", robot), nil, nil); err != nil {
					return err
				}
				return c.done("robot %s deleted", robot)
			}),
		},
	}
}

// showSecret hands a robot's new secret over once: to --secret-file, or
// on standard output with a warning that it will not be shown again.
func (c *call) showSecret(r *policy.Robot, name, secret string) error {
	if secret == "" {
		return fmt.Errorf("robot %s: the server returned no secret", name)
	}
	file := c.String("secret-file")
	if file != "" {
		if err := writeSecretFile(file, secret); err != nil {
			return fmt.Errorf("robot %s: %w (berth robot refresh-secret makes a new one)", name, err)
		}
	} else {
		defer fmt.Fprintf(c.m.Stderr, "Save the secret of %s now: it will not be shown again (berth robot refresh-secret makes a new one).\n", name)
	}
	if c.output == outputJSON {
		out := map[string]any{"name": name}
		if r != nil {
			out["robot"] = r
		}
		if file != "" {
			out["secret_file"] = file
		} else {
			out["secret"] = secret
		}
		return writeJSONOut(c.m.Stdout, out)
	}
	if r != nil {
		if err := printRobot(c.m.Stdout, *r); err != nil {
			return err
		}
	}
	if file != "" {
		_, err := fmt.Fprintf(c.m.Stdout, "secret of %s written to %s (mode 0600)\n", name, file)
		return err
	}
	_, err := fmt.Fprintf(c.m.Stdout, "secret: %s\n", secret)
	return err
}

func robotExpiry(r policy.Robot) string {
	if r.Expires <= 0 {
		return "never"
	}
	return when(r.Expires)
}

// formatRobotPermissions shows a robot's permissions: a project robot's
// as RESOURCE:ACTION,...; a system robot's as PROJECT=RESOURCE:ACTION,...
// for each project.
func formatRobotPermissions(r policy.Robot) string {
	var parts []string
	for _, p := range r.Permissions {
		acc := make([]string, len(p.Access))
		for i, a := range p.Access {
			acc[i] = a.String()
		}
		s := strings.Join(acc, ",")
		if r.Level != policy.RobotProject || p.Namespace != r.Project {
			s = p.Namespace + "=" + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func printRobot(w io.Writer, r policy.Robot) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", r.Name)
	fmt.Fprintf(tw, "level\t%s\n", r.Level)
	if r.Project != "" {
		fmt.Fprintf(tw, "project\t%s\n", r.Project)
	}
	fmt.Fprintf(tw, "enabled\t%t\n", !r.Disabled)
	fmt.Fprintf(tw, "expires\t%s\n", robotExpiry(r))
	fmt.Fprintf(tw, "permissions\t%s\n", formatRobotPermissions(r))
	if r.Description != "" {
		fmt.Fprintf(tw, "description\t%s\n", r.Description)
	}
	if r.Creator != "" {
		fmt.Fprintf(tw, "creator\t%s\n", r.Creator)
	}
	fmt.Fprintf(tw, "created\t%s\n", when(r.Created))
	return tw.Flush()
}
