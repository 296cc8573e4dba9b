package retention

import (
	"fmt"
	"time"
)

// Config tunes a Runner; cmd uses DefaultConfig.
type Config struct {
	// Poll is how often the leader looks for schedules that are due. Cron
	// schedules have a resolution of a minute; a due run starts at most
	// Poll late.
	Poll time.Duration
	// RunTimeout bounds one run; a run still recorded as running this long
	// after it started was interrupted (its node stopped), and no longer
	// keeps another run of its project from starting.
	RunTimeout time.Duration
	// PageSize is how many projects or repositories are read at a time.
	PageSize int
}

// DefaultConfig returns the defaults: look for due schedules every 15 s,
// runs of at most 6 h, pages of 500.
func DefaultConfig() Config {
	return Config{
		Poll:       15 * time.Second,
		RunTimeout: 6 * time.Hour,
		PageSize:   500,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.Poll <= 0 || c.Poll > time.Minute:
		return fmt.Errorf("retention: poll %s: want more than 0 and at most 1m", c.Poll)
	case c.RunTimeout < time.Second:
		return fmt.Errorf("retention: run timeout %s: want at least 1s", c.RunTimeout)
	case c.PageSize < 1 || c.PageSize > 10000:
		return fmt.Errorf("retention: page size %d: want 1 to 10000", c.PageSize)
	}
	return nil
}
