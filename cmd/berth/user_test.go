package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/policy"
)

// typed makes promptPassword answer each prompt with the next of answers.
func typed(t *testing.T, answers ...string) *[]string {
	t.Helper()
	var prompts []string
	prev := promptPassword
	promptPassword = func(_ io.Writer, prompt string) (string, error) {
		prompts = append(prompts, prompt)
		if len(answers) == 0 {
			return "", errors.New("not a terminal")
		}
		a := answers[0]
		answers = answers[1:]
		return a, nil
	}
	t.Cleanup(func() { promptPassword = prev })
	return &prompts
}

func TestUserCreate(t *testing.T) {
	f := loggedIn(t)
	carol := policy.User{ID: 3, Name: "carol", Email: "carol@example.com"}
	f.on("POST", "users", fakeAnswer{Status: http.StatusCreated, Body: carol})
	f.on("PUT", "users/carol/sysadmin", fakeAnswer{Status: http.StatusNoContent})

	out, _, err := f.runCLI("Car0lPassword\n", "user", "create", "carol", "--email", "carol@example.com", "--admin", "--password-stdin")
	if err != nil {
		t.Fatal(err)
	}
	f.wantRequests(
		[2]string{"POST /api/v1/users", `{"username":"carol","password":"Car0lPassword","email":"carol@example.com","realname":"","comment":""}`},
		[2]string{"PUT /api/v1/users/carol/sysadmin", `{"sysadmin_flag":true}`},
	)
	if !strings.Contains(out, "carol") || !strings.Contains(out, "admin      true") {
		t.Errorf("output:\n%s", out)
	}

	// On a terminal: typed twice.
	prompts := typed(t, "Car0lPassword", "Car0lPassword")
	f.mustRun("user", "create", "carol", "--realname", "Carol C")
	f.wantRequests([2]string{"POST /api/v1/users", `{"username":"carol","password":"Car0lPassword","email":"","realname":"Carol C","comment":""}`})
	if len(*prompts) != 2 {
		t.Errorf("prompts %q, want two", *prompts)
	}
	typed(t, "Car0lPassword", "Car0lPasswort")
	if _, _, err := f.runCLI("", "user", "create", "carol"); err == nil || !strings.Contains(err.Error(), "do not match") {
		t.Errorf("mismatch: %v", err)
	}
	typed(t)
	if _, _, err := f.runCLI("", "user", "create", "carol"); err == nil || !strings.Contains(err.Error(), "terminal") {
		t.Errorf("no terminal: %v", err)
	}
	if _, _, err := f.runCLI("", "user", "create", "Carol", "--password-stdin"); err == nil || !strings.Contains(err.Error(), "user name") {
		t.Errorf("bad name: %v", err)
	}
	f.wantRequests()

	// The server's verdict on the password comes through.
	f.on("POST", "users", fakeAnswer{Status: http.StatusBadRequest, Body: api.ErrorResponse{Error: "invalid: password: use 8 characters to 72 bytes"}})
	_, _, err = f.runCLI("weak\n", "user", "create", "dave", "--password-stdin")
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request: invalid: password: use 8 characters to 72 bytes") {
		t.Errorf("weak password: %v", err)
	}
}

func TestUserShowListUpdate(t *testing.T) {
	f := loggedIn(t)
	carol := policy.User{Name: "carol", Email: "carol@example.com", Comment: "ops"}
	f.on("GET", "users", ok([]policy.User{carol, {Name: "admin", Admin: true}}))
	f.on("GET", "users/carol", ok(carol))
	f.on("PUT", "users/carol", fakeAnswer{Status: http.StatusNoContent})

	out := f.mustRun("user", "list")
	if !strings.Contains(out, "carol@example.com") || !strings.Contains(out, "true") {
		t.Errorf("list:\n%s", out)
	}
	out = f.mustRun("user", "show", "carol", "-o", "json")
	var u policy.User
	if err := json.Unmarshal([]byte(out), &u); err != nil || u.Email != carol.Email {
		t.Errorf("show -o json %q: %v", out, err)
	}
	// What is not given stays.
	f.mustRun("user", "update", "carol", "--realname", "Carol C")
	f.wantRequests(
		[2]string{"GET /api/v1/users", ""},
		[2]string{"GET /api/v1/users/carol", ""},
		[2]string{"GET /api/v1/users/carol", ""},
		[2]string{"PUT /api/v1/users/carol", `{"email":"carol@example.com","realname":"Carol C","comment":"ops"}`},
	)
	if _, _, err := f.runCLI("", "user", "update", "carol"); err == nil || !strings.Contains(err.Error(), "nothing to change") {
		t.Errorf("update without a change: %v", err)
	}
}

func TestUserPasswdAdminDelete(t *testing.T) {
	f := loggedIn(t)
	f.on("PUT", "users/bob/password", fakeAnswer{Status: http.StatusNoContent})
	f.on("PUT", "users/alice/password", fakeAnswer{Status: http.StatusNoContent})
	f.on("PUT", "users/bob/sysadmin", fakeAnswer{Status: http.StatusNoContent})
	f.on("DELETE", "users/bob", fakeAnswer{Status: http.StatusNoContent})

	// Another user's: no current password.
	if _, _, err := f.runCLI("N3wPassword\n", "user", "passwd", "bob", "--password-stdin"); err != nil {
		t.Fatal(err)
	}
	// One's own: the current one first, then the new.
	_, errOut, err := f.runCLI("Al1cePassword\nN3wPassword\n", "user", "passwd", "alice", "--old-password-stdin", "--password-stdin")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "berth login") {
		t.Errorf("no hint that the saved login ended: %q", errOut)
	}
	// One's own on a terminal: asked for the current one, then twice the new.
	prompts := typed(t, "Al1cePassword", "N3wPassword", "N3wPassword")
	f.mustRun("user", "passwd", "alice")
	if len(*prompts) != 3 || !strings.Contains((*prompts)[0], "Current") {
		t.Errorf("prompts %q", *prompts)
	}
	f.mustRun("user", "set-admin", "bob", "true")
	f.mustRun("user", "set-admin", "bob", "false")
	f.mustRun("user", "delete", "bob")
	f.wantRequests(
		[2]string{"PUT /api/v1/users/bob/password", `{"new_password":"N3wPassword"}`},
		[2]string{"PUT /api/v1/users/alice/password", `{"old_password":"Al1cePassword","new_password":"N3wPassword"}`},
		[2]string{"PUT /api/v1/users/alice/password", `{"old_password":"Al1cePassword","new_password":"N3wPassword"}`},
		[2]string{"PUT /api/v1/users/bob/sysadmin", `{"sysadmin_flag":true}`},
		[2]string{"PUT /api/v1/users/bob/sysadmin", `{"sysadmin_flag":false}`},
		[2]string{"DELETE /api/v1/users/bob", ""},
	)

	if _, _, err := f.runCLI("", "user", "set-admin", "bob", "maybe"); err == nil || !strings.Contains(err.Error(), "true or false") {
		t.Errorf("set-admin maybe: %v", err)
	}
	if _, _, err := f.runCLI("only-one\n", "user", "passwd", "alice", "--old-password-stdin", "--password-stdin"); err == nil || !strings.Contains(err.Error(), "want 2") {
		t.Errorf("one line for two passwords: %v", err)
	}
	f.wantRequests()
}

func TestUserCurrent(t *testing.T) {
	f := loggedIn(t)
	f.on("GET", "users/current", ok(map[string]any{
		"user":        policy.User{Name: "alice"},
		"admin":       false,
		"memberships": []policy.Member{{Project: "team", User: "alice", Role: policy.RoleDeveloper}},
		"extra":       "kept",
	}))
	out := f.mustRun("user", "current")
	if !strings.Contains(out, "alice") || !strings.Contains(out, "team (developer)") {
		t.Errorf("current:\n%s", out)
	}
	out = f.mustRun("user", "current", "-o", "json")
	if !strings.Contains(out, `"extra": "kept"`) {
		t.Errorf("current -o json does not pass the server's answer through:\n%s", out)
	}
}
