package main

import (
	"io"
	"log/slog"
)

// newLogger builds the process logger writing to w: text for a person at a
// terminal, JSON for a log collector. format is one of logFormat*; with
// "auto" the choice follows whether w is a terminal.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl, err := parseLogLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == logFormatAuto {
		format = logFormatJSON
		if isTerminal(w) {
			format = logFormatText
		}
	}
	if format == logFormatText {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}
