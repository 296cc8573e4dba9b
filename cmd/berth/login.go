package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// login is what `berth login` saves for the client commands.
type login struct {
	Server   string `json:"server"`
	User     string `json:"user"`
	Password string `json:"password"`
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
			Usage:     "check credentials against a node and save them for the client commands",
			ArgsUsage: "[SERVER]",
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
				password, err := m.readPassword(c)
				if err != nil {
					return err
				}
				a := apiClient{server: server, user: c.String("user"), password: password}
				var eps []json.RawMessage
				if err := a.do(c.Context, http.MethodGet, "endpoints", nil, &eps); err != nil {
					return fmt.Errorf("login: %w", err)
				}
				p, err := saveLogin(login{Server: server, User: a.user, Password: password})
				if err != nil {
					return fmt.Errorf("save login: %w", err)
				}
				_, err = fmt.Fprintf(m.Stdout, "logged in to %s as %s (saved in %s)\n", server, a.user, p)
				return err
			},
		},
		{
			Name:  "logout",
			Usage: "forget the saved login",
			Action: func(*cli.Context) error {
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

// readPassword takes the password from --password, standard input
// (--password-stdin), or a prompt on the terminal.
func (m *Main) readPassword(c *cli.Context) (string, error) {
	if p := c.String("password"); p != "" {
		return p, nil
	}
	if c.Bool("password-stdin") {
		line, err := bufio.NewReader(m.stdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		if p := strings.TrimRight(line, "\r\n"); p != "" {
			return p, nil
		}
		return "", errors.New("empty password on standard input")
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", errors.New("no password: give --password-stdin or run on a terminal")
	}
	fmt.Fprint(m.Stderr, "Password: ")
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(m.Stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
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
