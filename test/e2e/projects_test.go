package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// fixtureProjects are the projects the end-to-end tests push into. berth
// refuses a push into a project that does not exist (as Harbor does), so
// the harness creates them, public (the tests pull anonymously, as they
// did before projects), on every berth it starts, unless
// Options.NoProjects says not to (a replication destination whose
// projects the engine must create itself). library exists from the start.
var fixtureProjects = []string{
	"across", "artifacts", "auth", "big", "chain", "charts", "cosign", "crash",
	"e2e", "generated", "lat", "leave", "lib", "other", "pair", "podman", "probe",
	"prod", "quorum", "regctl", "skopeo", "team", "conformance",
	"leaderkill", "followerkill", "freeze", "join", "rolling", "fivekill",
}

// createProject creates project name, public, through the management API
// as admin; one that exists already is fine (every node of a cluster
// creates them).
func (s *Server) createProject(name string) error {
	body, _ := json.Marshal(map[string]any{"name": name, "public": true})
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/api/v1/projects", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(s.Username(), s.Password())
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("create project %s: %w", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusCreated, http.StatusConflict:
		return nil
	}
	return fmt.Errorf("create project %s: %s: %s", name, resp.Status, b)
}

// createFixtureProjects creates fixtureProjects on s. A flavor without
// projects does nothing.
func (s *Server) createFixtureProjects() error {
	if !s.flavor.projects() {
		return nil
	}
	for _, p := range fixtureProjects {
		if err := s.createProject(p); err != nil {
			return err
		}
	}
	return nil
}
