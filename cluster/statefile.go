package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"
)

// The state file is not fsynced on every apply. The Raft log (fsynced on
// every append) and the snapshots (fsynced when taken) hold everything the
// state file does, so the file is a cache of them that is worth keeping
// only when it is known to be whole:
//   - after a clean close (the file was synced);
//   - after the process died while the machine kept running (kill -9, a
//     panic, the OOM killer): every committed bbolt transaction reached the
//     page cache, which survives the process, so the file is whole as of
//     its last applied index and the log replays the rest;
//   - but not after the machine itself went down (power loss, kernel crash)
//     without a clean close: bbolt without fsync may then have persisted a
//     meta page whose tree pages never reached the disk.
//
// The guard file beside the state tells the cases apart: it records the
// boot id of the kernel that opened the state and whether it was closed
// cleanly. When the file cannot be trusted it is set aside and Raft
// rebuilds the state from its latest snapshot and the log after it.
//
// This saves two fsyncs per applied batch on every node (bbolt syncs the
// data pages, then the meta page) without weakening what an acknowledged
// write survives: it is in the fsynced log of a quorum.

const (
	guardSuffix = ".guard"
	bootIDPath  = "/proc/sys/kernel/random/boot_id"
)

// stateGuard is the content of the guard file.
type stateGuard struct {
	BootID string `json:"boot_id"`
	Clean  bool   `json:"clean"`
}

// bootID returns this kernel's boot id, or "" when the platform has none
// (the state file is then fsynced on every apply, as bbolt does by
// default).
func bootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// trustState decides whether the state file at path can be used as it is,
// and returns why not. A missing guard means the file was written by a
// version that fsynced every apply (or does not exist yet): trusted.
func trustState(path, boot string) (bool, string) {
	b, err := os.ReadFile(path + guardSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return true, ""
	}
	if err != nil {
		return false, fmt.Sprintf("read guard: %v", err)
	}
	var g stateGuard
	if err := json.Unmarshal(b, &g); err != nil {
		return false, fmt.Sprintf("guard does not parse: %v", err)
	}
	switch {
	case g.Clean:
		return true, ""
	case boot != "" && g.BootID == boot:
		return true, ""
	}
	return false, "the machine restarted (boot id " + g.BootID + ", now " + boot + ") since the state was last open, and it was not closed cleanly"
}

// writeGuard records, durably, that the state file is open on this boot
// (clean false) or was closed cleanly.
func writeGuard(path, boot string, clean bool) error {
	b, err := json.Marshal(stateGuard{BootID: boot, Clean: clean})
	if err != nil {
		return err
	}
	return writeFileAtomic(path+guardSuffix, b)
}

// setAside renames an untrusted state file out of the way (kept for a
// look, never read again) so that a fresh one is rebuilt.
func setAside(path string, logger *slog.Logger, why string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	aside := fmt.Sprintf("%s.untrusted-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	if err := renameSync(path, aside); err != nil {
		return fmt.Errorf("set aside untrusted state: %w", err)
	}
	logger.Warn("the state file cannot be trusted; rebuilding it from the raft snapshot and log", "reason", why, "set_aside", aside)
	return nil
}
