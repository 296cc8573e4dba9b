package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"time"
)

// Config is what the environment tells a chaos run.
type Config struct {
	// Image is the berth image to run (CHAOS_IMAGE, set by make chaos);
	// empty means the chaos tests skip.
	Image string
	// Nodes is the size of the cluster (CHAOS_NODES, default 3). One node
	// checks the harness itself: it is faulted although it is no minority.
	Nodes int
	// Duration is the fault phase (CHAOS_DURATION, a Go duration, default
	// 3m).
	Duration time.Duration
	// Seed seeds the fault schedule and the workload (CHAOS_SEED; default
	// a random one below 10⁹). The same seed gives the same schedule.
	Seed int64
	// Pushers and Pullers are the concurrent clients (CHAOS_PUSHERS,
	// default 4; CHAOS_PULLERS, default 2).
	Pushers, Pullers int
	// Artifacts is the directory that keeps each run's report, schedule
	// and container logs, in a subdirectory named after the run
	// (CHAOS_ARTIFACTS; empty keeps nothing).
	Artifacts string
	// Keep leaves a failed run's containers, network and volumes for a
	// look (CHAOS_KEEP=1); the next run removes them.
	Keep bool
}

// LoadConfig reads the CHAOS_* environment variables.
func LoadConfig() (Config, error) {
	wl := DefaultWorkloadConfig()
	c := Config{
		Image:     os.Getenv("CHAOS_IMAGE"),
		Nodes:     3,
		Duration:  3 * time.Minute,
		Seed:      1 + rand.Int64N(1e9), // short enough to type back in
		Pushers:   wl.Pushers,
		Pullers:   wl.Pullers,
		Artifacts: os.Getenv("CHAOS_ARTIFACTS"),
	}
	var err error
	set := func(name string, parse func(string) error) {
		if v := os.Getenv(name); v != "" && err == nil {
			if perr := parse(v); perr != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, perr)
			}
		}
	}
	atoi := func(dst *int, least int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err == nil && n < least {
				err = fmt.Errorf("want at least %d", least)
			}
			*dst = n
			return err
		}
	}
	set("CHAOS_NODES", atoi(&c.Nodes, 1))
	set("CHAOS_PUSHERS", atoi(&c.Pushers, 1))
	set("CHAOS_PULLERS", atoi(&c.Pullers, 0))
	set("CHAOS_DURATION", func(v string) (err error) { c.Duration, err = time.ParseDuration(v); return err })
	set("CHAOS_SEED", func(v string) (err error) { c.Seed, err = strconv.ParseInt(v, 10, 64); return err })
	set("CHAOS_KEEP", func(v string) (err error) { c.Keep, err = strconv.ParseBool(v); return err })
	return c, err
}
