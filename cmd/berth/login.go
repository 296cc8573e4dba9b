package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// login is what `berth login` saves for the client commands: the server,
// the user and a refresh token from the server's token service; never the
// password.
type login struct {
	Server       string `json:"server"`
	User         string `json:"user"`
	RefreshToken string `json:"refresh_token,omitempty"`
	// Password is in logins saved before token auth: used with basic auth
	// until the next `berth login` replaces it.
	Password string `json:"password,omitempty"`
}

// loginPath is where the saved login lives: $BERTH_LOGIN_FILE, else
// $XDG_CONFIG_HOME/berth/login.json, else ~/.config/berth/login.json.
func loginPath() (string, error) {
	if p := os.Getenv("BERTH_LOGIN_FILE"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config directory for the saved login: %w", err)
	}
	return filepath.Join(dir, "berth", "login.json"), nil
}

// loadLogin reads the saved login (zero when there is none).
func loadLogin() (login, error) {
	p, err := loginPath()
	if err != nil {
		return login{}, nil // no home: nothing saved
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return login{}, nil
	}
	if err != nil {
		return login{}, fmt.Errorf("read saved login: %w", err)
	}
	var l login
	if err := json.Unmarshal(b, &l); err != nil {
		return login{}, fmt.Errorf("saved login %s: %w (berth logout removes it)", p, err)
	}
	return l, nil
}

// saveLogin writes l readable by this user only.
func saveLogin(l login) (string, error) {
	p, err := loginPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return "", err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

func sameServer(a, b string) bool {
	return strings.TrimRight(a, "/") == strings.TrimRight(b, "/")
}

func (m *Main) loginCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "login",
			Usage:     "log in to a node and save a refresh token (never the password) for the client commands",
			ArgsUsage: "[SERVER]",
			Description: "The password is traded at SERVER/service/token for a refresh token, saved in\n" +
				"$BERTH_LOGIN_FILE or ~/.config/berth/login.json (mode 0600). Each later command\n" +
				"trades it for a short-lived access token. --user and --password on a command\n" +
				"(or BERTH_USER and BERTH_PASSWORD) still use basic auth instead.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Value: adminUser, Usage: "user name"},
				&cli.StringFlag{Name: "password", Aliases: []string{"p"}, Usage: "password (prefer --password-stdin or the prompt)"},
				&cli.BoolFlag{Name: "password-stdin", Usage: "read the password from standard input"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() > 1 {
					return errors.New("login takes at most one argument, the server URL")
				}
				server := c.Args().First()
				if server == "" {
					server = "http://127.0.0.1:5000"
				}
				if !strings.Contains(server, "://") {
					server = "https://" + server
				}
				server = strings.TrimRight(server, "/")
				user := c.String("user")
				password, err := m.readPassword(c)
				if err != nil {
					return err
				}
				tr, err := passwordGrant(c.Context, server, user, password)
				if err != nil {
					return fmt.Errorf("login to %s: %w", server, err)
				}
				p, err := saveLogin(login{Server: server, User: user, RefreshToken: tr.RefreshToken})
				if err != nil {
					return fmt.Errorf("save login: %w", err)
				}
				_, err = fmt.Fprintf(m.Stdout, "logged in to %s as %s (saved in %s)\n", server, user, p)
				return err
			},
		},
		{
			Name:  "logout",
			Usage: "forget the saved login",
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return errors.New("logout takes no arguments")
				}
				p, err := loginPath()
				if err != nil {
					return err
				}
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				_, err = fmt.Fprintln(m.Stdout, "logged out")
				return err
			},
		},
	}
}

// readPassword takes the password of `berth login` from --password,
// standard input (--password-stdin), or a prompt on the terminal.
func (m *Main) readPassword(c *cli.Context) (string, error) {
	if p := c.String("password"); p != "" {
		return p, nil
	}
	if c.Bool("password-stdin") {
		lines, err := m.stdinLines(1)
		if err != nil {
			return "", err
		}
		return lines[0], nil
	}
	return promptPassword(m.Stderr, "Password: ")
}

// newPassword reads a new password for user: a line of standard input
// when fromStdin, else typed twice at a prompt. Its strength is the
// server's to check.
func (m *Main) newPassword(user string, fromStdin bool) (string, error) {
	if fromStdin {
		lines, err := m.stdinLines(1)
		if err != nil {
			return "", err
		}
		return lines[0], nil
	}
	p, err := promptPassword(m.Stderr, "New password for "+user+": ")
	if err != nil {
		return "", err
	}
	again, err := promptPassword(m.Stderr, "Again: ")
	if err != nil {
		return "", err
	}
	if p != again {
		return "", errors.New("the passwords do not match")
	}
	return p, nil
}

// stdinLines reads n non-empty lines (passwords, one a line) from standard
// input.
func (m *Main) stdinLines(n int) ([]string, error) {
	r := bufio.NewReader(io.LimitReader(m.stdin(), 64<<10))
	out := make([]string, 0, n)
	for len(out) < n {
		line, err := r.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(out) == 0 {
				return nil, errors.New("empty password on standard input")
			}
			return nil, fmt.Errorf("standard input holds %d password(s), want %d, one a line", len(out), n)
		}
		// A read after the last line is empty: too few lines end above.
		out = append(out, line)
	}
	return out, nil
}

// promptPassword asks for a password on the terminal without echoing it.
// Tests replace it.
var promptPassword = func(stderr io.Writer, prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("no password: give it on standard input (--password-stdin) or run on a terminal")
	}
	fmt.Fprint(stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if len(b) == 0 {
		return "", errors.New("empty password")
	}
	return string(b), nil
}

// stdin is the standard input of the program (tests set Main.Stdin).
func (m *Main) stdin() io.Reader {
	if m.Stdin != nil {
		return m.Stdin
	}
	return os.Stdin
}
