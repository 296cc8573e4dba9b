package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// series are the samples of one /metrics scrape (Prometheus text format),
// keyed by the series as written: name{label="value",...}.
type series map[string]float64

// scrape reads s's /metrics.
func scrape(ctx context.Context, s *server) (series, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: scrape metrics: %w", s.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: scrape metrics: %s", s.name, resp.Status)
	}
	out := series{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, "berth_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// minus returns s - before, series by series.
func (s series) minus(before series) series {
	d := series{}
	for k, v := range s {
		d[k] = v - before[k]
	}
	return d
}

// plus returns s + o, series by series.
func (s series) plus(o series) series {
	d := series{}
	for k, v := range s {
		d[k] = v
	}
	for k, v := range o {
		d[k] += v
	}
	return d
}

// sum adds the series of metric name whose labels include every one of
// labels (each written as key="value").
func (s series) sum(name string, labels ...string) float64 {
	var total float64
	for k, v := range s {
		metric, rest, _ := strings.Cut(k, "{")
		if metric != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			total += v
		}
	}
	return total
}

// histogram is the count of observations and their mean, in a delta.
type histogram struct {
	count float64
	mean  time.Duration
}

// hist sums histogram name (of seconds) over the series matching labels.
func (s series) hist(name string, labels ...string) histogram {
	n := s.sum(name+"_count", labels...)
	if n == 0 {
		return histogram{}
	}
	return histogram{count: n, mean: time.Duration(s.sum(name+"_sum", labels...) / n * float64(time.Second))}
}
