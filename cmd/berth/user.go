package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/policy"
)

// currentView is GET /users/current: the caller, user or robot, whether
// it is a system administrator, and its roles in projects.
type currentView struct {
	User        *policy.User    `json:"user,omitempty"`
	Robot       *policy.Robot   `json:"robot,omitempty"`
	Admin       bool            `json:"admin"`
	Memberships []policy.Member `json:"memberships"`
}

func (m *Main) userCommand() *cli.Command {
	profileFlags := []cli.Flag{
		&cli.StringFlag{Name: "email", Usage: "e-mail `ADDRESS`"},
		&cli.StringFlag{Name: "realname", Usage: "full `NAME`"},
		&cli.StringFlag{Name: "comment", Usage: "a note about the user"},
	}
	return &cli.Command{
		Name:  "user",
		Usage: "local users (admin; a user may see and change its own profile and password)",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a user; the password is typed twice, or read from standard input",
				ArgsUsage: "NAME",
				Description: "The server checks the password's strength: 8 characters to 72 bytes with an\n" +
					"upper-case letter, a lower-case letter and a digit.",
				Flags: append(append(clientFlags(), profileFlags...),
					&cli.BoolFlag{Name: "admin", Usage: "make the user a system administrator"},
					&cli.BoolFlag{Name: "password-stdin", Usage: "read the new user's password from standard input"},
				),
				Action: m.action(func(c *call) error {
					name := c.args[0]
					if err := policy.ValidateUserName(name); err != nil {
						return err
					}
					password, err := c.m.newPassword(name, c.Bool("password-stdin"))
					if err != nil {
						return err
					}
					in := map[string]any{"username": name, "password": password,
						"email": c.String("email"), "realname": c.String("realname"), "comment": c.String("comment")}
					var u policy.User
					if err := c.do(http.MethodPost, "users", in, &u); err != nil {
						return err
					}
					if c.Bool("admin") {
						// The flag has its own endpoint: no profile write carries it.
						if err := c.do(http.MethodPut, pathOf("users", name, "sysadmin"), map[string]any{"sysadmin_flag": true}, nil); err != nil {
							return fmt.Errorf("user %s was created, but not made an administrator: %w", name, err)
						}
						u.Admin = true
					}
					if u.Name == "" {
						u.Name = name
					}
					return c.print(u, func(w io.Writer) error { return printUser(w, u) })
				}, "NAME"),
			},
			{
				Name:  "list",
				Usage: "list the users (admin)",
				Flags: clientFlags(),
				Action: m.action(func(c *call) error {
					us, err := listPages[policy.User](c, "users", nil)
					if err != nil {
						return err
					}
					return c.print(us, func(w io.Writer) error {
						tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "NAME\tADMIN\tEMAIL\tREAL NAME\tCREATED")
						for _, u := range us {
							fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\n", u.Name, u.Admin, dash(u.Email), dash(u.RealName), when(u.Created))
						}
						return tw.Flush()
					})
				}),
			},
			{
				Name:      "show",
				Usage:     "show a user",
				ArgsUsage: "NAME",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					return show(c, pathOf("users", c.args[0]), printUser)
				}, "NAME"),
			},
			{
				Name:      "update",
				Usage:     "change a user's profile; fields not given stay",
				ArgsUsage: "NAME",
				Flags:     append(clientFlags(), profileFlags...),
				Action: m.action(func(c *call) error {
					if !c.IsSet("email") && !c.IsSet("realname") && !c.IsSet("comment") {
						return fmt.Errorf("user update %s: nothing to change; give --email, --realname or --comment", c.args[0])
					}
					path := pathOf("users", c.args[0])
					// The PUT writes the whole profile: read it to keep what
					// is not given.
					var u policy.User
					if err := c.do(http.MethodGet, path, nil, &u); err != nil {
						return err
					}
					if c.IsSet("email") {
						u.Email = c.String("email")
					}
					if c.IsSet("realname") {
						u.RealName = c.String("realname")
					}
					if c.IsSet("comment") {
						u.Comment = c.String("comment")
					}
					in := map[string]any{"email": u.Email, "realname": u.RealName, "comment": u.Comment}
					if err := c.do(http.MethodPut, path, in, nil); err != nil {
						return err
					}
					return c.print(u, func(w io.Writer) error { return printUser(w, u) })
				}, "NAME"),
			},
			{
				Name:      "passwd",
				Usage:     "change a user's password (your own needs the current one)",
				ArgsUsage: "NAME",
				Description: "The current password is asked when you change your own. On standard input,\n" +
					"--old-password-stdin takes the first line and --password-stdin the next.",
				Flags: append(clientFlags(),
					&cli.BoolFlag{Name: "old-password-stdin", Usage: "read the current password from standard input"},
					&cli.BoolFlag{Name: "password-stdin", Usage: "read the new password from standard input"},
				),
				Action: m.action(func(c *call) error {
					name := c.args[0]
					a, err := c.api()
					if err != nil {
						return err
					}
					self := a.user == name
					var old, password string
					var lines []string
					if n := btoi(c.Bool("old-password-stdin")) + btoi(c.Bool("password-stdin")); n > 0 {
						if lines, err = c.m.stdinLines(n); err != nil {
							return err
						}
					}
					if c.Bool("old-password-stdin") {
						old, lines = lines[0], lines[1:]
					} else if self {
						if old, err = promptPassword(c.m.Stderr, "Current password of "+name+": "); err != nil {
							return fmt.Errorf("your own password: the current one is needed (--old-password-stdin, or a terminal): %w", err)
						}
					}
					if c.Bool("password-stdin") {
						password = lines[0]
					} else if password, err = c.m.newPassword(name, false); err != nil {
						return err
					}
					in := map[string]any{"new_password": password}
					if old != "" {
						in["old_password"] = old
					}
					if err := c.do(http.MethodPut, pathOf("users", name, "password"), in, nil); err != nil {
						return err
					}
					if err := c.done("password of %s changed", name); err != nil {
						return err
					}
					if self && a.tokens != nil {
						// A new password ends the refresh tokens issued before.
						fmt.Fprintf(c.m.Stderr, "Your saved login ended with the old password: berth login %s -u %s\n", a.server, name)
					}
					return nil
				}, "NAME"),
			},
			{
				Name:      "set-admin",
				Usage:     "grant or take away system administration (admin)",
				ArgsUsage: "NAME true|false",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					admin, err := parseBool("set-admin", c.args[1])
					if err != nil {
						return err
					}
					if err := c.do(http.MethodPut, pathOf("users", c.args[0], "sysadmin"), map[string]any{"sysadmin_flag": admin}, nil); err != nil {
						return err
					}
					if admin {
						return c.done("%s is a system administrator", c.args[0])
					}
					return c.done("%s is no longer a system administrator", c.args[0])
				}, "NAME", "true|false"),
			},
			{
				Name:      "delete",
				Usage:     "delete a user (admin)",
				ArgsUsage: "NAME",
				Flags:     clientFlags(),
				Action: m.action(func(c *call) error {
					if err := c.do(http.MethodDelete, pathOf("users", c.args[0]), nil, nil); err != nil {
						return err
					}
					return c.done("user %s deleted", c.args[0])
				}, "NAME"),
			},
			{
				Name:  "current",
				Usage: "who you are to the server: user or robot, administrator or not, roles in projects",
				Flags: clientFlags(),
				Action: m.action(func(c *call) error {
					var raw json.RawMessage
					if err := c.do(http.MethodGet, "users/current", nil, &raw); err != nil {
						return err
					}
					if c.output == outputJSON {
						// As the server says it, fields this client does not know included.
						return writeJSONOut(c.m.Stdout, raw)
					}
					var cur currentView
					if err := json.Unmarshal(raw, &cur); err != nil {
						return fmt.Errorf("GET users/current: decode answer: %w", err)
					}
					return printCurrent(c.m.Stdout, cur)
				}),
			},
		},
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func printUser(w io.Writer, u policy.User) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", u.Name)
	fmt.Fprintf(tw, "admin\t%t\n", u.Admin)
	fmt.Fprintf(tw, "email\t%s\n", dash(u.Email))
	fmt.Fprintf(tw, "real name\t%s\n", dash(u.RealName))
	if u.Comment != "" {
		fmt.Fprintf(tw, "comment\t%s\n", u.Comment)
	}
	fmt.Fprintf(tw, "created\t%s\n", when(u.Created))
	return tw.Flush()
}

func printCurrent(w io.Writer, cur currentView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch {
	case cur.Robot != nil:
		fmt.Fprintf(tw, "robot\t%s\n", cur.Robot.Name)
		fmt.Fprintf(tw, "permissions\t%s\n", formatRobotPermissions(*cur.Robot))
	case cur.User != nil:
		fmt.Fprintf(tw, "user\t%s\n", cur.User.Name)
		if cur.User.Email != "" {
			fmt.Fprintf(tw, "email\t%s\n", cur.User.Email)
		}
	}
	fmt.Fprintf(tw, "admin\t%t\n", cur.Admin)
	var roles []string
	for _, mb := range cur.Memberships {
		roles = append(roles, mb.Project+" ("+string(mb.Role)+")")
	}
	if len(roles) > 0 {
		fmt.Fprintf(tw, "projects\t%s\n", strings.Join(roles, ", "))
	} else if cur.Robot == nil {
		fmt.Fprintf(tw, "projects\tnone\n")
	}
	return tw.Flush()
}
