package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"time"
)

// logLine is the part of a berth node's JSON log line the bench reads.
type logLine struct {
	Time      time.Time `json:"time"`
	Level     string    `json:"level"`
	Msg       string    `json:"msg"`
	Leader    string    `json:"leader"`
	RequestID string    `json:"request_id"`
	Err       string    `json:"err"`
	Error     string    `json:"error"`
}

// scanLog calls fn with each JSON line of the node log at path from byte
// offset on, until fn returns false. Lines that are not JSON (a panic's
// trace) are skipped.
func scanLog(path string, offset int64, fn func(logLine) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		if !fn(l) {
			return nil
		}
	}
	return sc.Err()
}
