package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// checkWorkers is how many image checks run at once.
const checkWorkers = 8

// checkRetries is how often a check is tried when the answer is temporary
// (no answer, 5xx): after the heal every node should answer, but a check
// must not fail on one dropped connection. A 404 or wrong bytes are final.
const checkRetries = 3

// ImageCheck is the outcome of CheckImages.
type ImageCheck struct {
	Images int      // acknowledged images checked
	Nodes  int      // on this many nodes each
	Lost   []string // "image on node: why", one per image and node that failed
	// LostImages counts the images that failed on at least one node.
	LostImages int
	Took       time.Duration
}

// CheckImages checks that every node serves every acknowledged image
// exactly as it was pushed: the manifest by tag and by digest with the
// pushed bytes and digest, and every blob hashing to its digest.
func CheckImages(ctx context.Context, c *Client, nodes []*Node, images []Image) ImageCheck {
	start := time.Now()
	res := ImageCheck{Images: len(images), Nodes: len(nodes)}
	var mu sync.Mutex
	work := make(chan Image)
	var wg sync.WaitGroup
	for range checkWorkers {
		wg.Go(func() {
			for img := range work {
				var lost []string
				for _, n := range nodes {
					if err := checkImage(ctx, c, n, img); err != nil {
						lost = append(lost, fmt.Sprintf("%s on %s: %v", img, n.Short, err))
					}
				}
				if len(lost) > 0 {
					mu.Lock()
					res.Lost = append(res.Lost, lost...)
					res.LostImages++
					mu.Unlock()
				}
			}
		})
	}
	for _, img := range images {
		work <- img
	}
	close(work)
	wg.Wait()
	res.Took = time.Since(start)
	return res
}

func checkImage(ctx context.Context, c *Client, n *Node, img Image) error {
	for _, ref := range []string{img.Tag, img.Digest.String()} {
		if err := retryTemporary(ctx, func() error {
			return verifyPull(ctx, c, n, img, ref, img.Blobs[0])
		}); err != nil {
			return err
		}
	}
	for _, b := range img.Blobs[1:] {
		if err := retryTemporary(ctx, func() error { return c.Blob(ctx, n, img.Repo, b) }); err != nil {
			return err
		}
	}
	return nil
}

func retryTemporary(ctx context.Context, f func() error) error {
	var err error
	for range checkRetries {
		if err = f(); err == nil || !Temporary(err) {
			return err
		}
		if !waitUntil(ctx, time.Now().Add(time.Second)) {
			return errors.Join(err, ctx.Err())
		}
	}
	return err
}

// crashMarkers are log texts that mean a process crashed or raced.
var crashMarkers = []string{"panic", "fatal error", "DATA RACE"}

// CheckLogs fetches every node's container log (all its starts), writes it
// to dir/<node>.log when dir is not empty, and returns the lines that show
// a panic, a fatal error or a data race, each with the lines after it.
func CheckLogs(ctx context.Context, nodes []*Node, dir string) ([]string, error) {
	var found []string
	var errs []error
	for _, n := range nodes {
		logs, err := n.env.Docker.Logs(ctx, n.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if dir != "" {
			if err := os.WriteFile(filepath.Join(dir, n.Short+".log"), logs, 0o644); err != nil {
				errs = append(errs, err)
			}
		}
		found = append(found, crashLines(n.Short, logs)...)
	}
	return found, errors.Join(errs...)
}

// crashLines returns, for each line of logs with a crash marker, that line
// and the next few, prefixed with the node's name.
func crashLines(node string, logs []byte) []string {
	const after = 6
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	left := 0
	for sc.Scan() {
		l := sc.Text()
		switch {
		case left > 0:
			out[len(out)-1] += "\n    " + l
			left--
		case containsAny(l, crashMarkers):
			out = append(out, node+": "+l)
			left = after
		}
	}
	return out
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
