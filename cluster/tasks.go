package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Executions and tasks in apply: their ids, the indexes kept with them
// (active, running, per execution, latest per reference), the counts of an
// execution, and the leases of claims (see DESIGN.md, "Leases").

// Bounds of the replication ops.
const (
	maxClaim    = 1000 // tasks one claim_tasks takes at most
	maxClaimID  = 256  // bytes of a node id, claim id or token
	maxTrigger  = policy.MaxName
	taskChunk   = 500 // tasks of one start_execution or add_tasks command
	updateChunk = 500 // updates of one update_tasks command
)

// execution is a stored execution: the model's, whether more tasks may
// still be added (a scan in progress), and the token of the start that
// made it.
type execution struct {
	policy.Execution
	Open  bool   `json:"open,omitempty"`
	Token string `json:"token,omitempty"`
}

// count changes the count of status by d.
func (e *execution) count(status string, d int) {
	switch status {
	case policy.StatusPending, policy.StatusRetrying:
		e.Pending += d
	case policy.StatusRunning:
		e.Running += d
	case policy.StatusSucceeded:
		e.Succeeded += d
	case policy.StatusFailed:
		e.Failed += d
	case policy.StatusStopped:
		e.Stopped += d
	}
}

// settle ends a running execution that expects no more tasks once all of
// its tasks are final: failed if one failed, stopped if one was stopped,
// succeeded otherwise.
func (e *execution) settle(now int64) {
	if e.Status != policy.ExecRunning || e.Open || e.Pending > 0 || e.Running > 0 {
		return
	}
	switch {
	case e.Failed > 0:
		e.Status = policy.ExecFailed
	case e.Stopped > 0:
		e.Status = policy.ExecStopped
	default:
		e.Status = policy.ExecSucceeded
	}
	e.Finished = now
}

// latestKey is the key of t's rule and reference in bucketTaskLatest.
func latestKey(t policy.Task) []byte { return key(t.Policy, t.Repo, t.Ref()) }

// runKey is what at most one running task may work on at a time: a rule's
// reference at one destination repository.
func runKey(t policy.Task) string { return t.Policy + sep + t.DestRepo + sep + t.Ref() }

// nextID takes the next id of the sequence in meta at k.
func (w *writer) nextID(k []byte) uint64 {
	n := decodeUint(w.get(bucketMeta, k)) + 1
	w.put(bucketMeta, k, encodeUint(n))
	return n
}

func (w *writer) execution(id uint64) (execution, bool, error) {
	var e execution
	found, err := w.getJSON(bucketExecutions, idKey(id), &e)
	return e, found, err
}

func (w *writer) task(id uint64) (policy.Task, bool, error) {
	var t policy.Task
	found, err := w.getJSON(bucketTasks, idKey(id), &t)
	return t, found, err
}

// mark puts k in an index bucket when on, and takes it out otherwise.
func (w *writer) mark(bucket, k []byte, on bool) {
	if on {
		w.put(bucket, k, []byte{})
		return
	}
	w.del(bucket, k)
}

func (w *writer) saveExecution(e execution) {
	k := idKey(e.ID)
	w.putJSON(bucketExecutions, k, e)
	w.mark(bucketExecRunning, k, e.Status == policy.ExecRunning)
}

// newExecution records a running execution of rule and returns its id.
func (w *writer) newExecution(rule, trigger, token string, open bool) uint64 {
	id := w.nextID(metaExecSeq)
	w.saveExecution(execution{
		Execution: policy.Execution{ID: id, Policy: rule, Trigger: trigger, Status: policy.ExecRunning, Created: w.now},
		Open:      open,
		Token:     token,
	})
	w.put(bucketRuleExecs, append(prefix(rule), idKey(id)...), []byte{})
	if token != "" {
		w.put(bucketExecTokens, []byte(token), idKey(id))
	}
	return id
}

// storeTask writes t, which was prev (nil: a new task), and keeps the
// indexes and its execution's counts, which it settles.
func (w *writer) storeTask(prev *policy.Task, t policy.Task) error {
	k := idKey(t.ID)
	w.putJSON(bucketTasks, k, t)
	w.mark(bucketTasksActive, k, t.Active())
	w.mark(bucketTasksRunning, k, t.Status == policy.StatusRunning)
	if prev != nil && prev.Status == t.Status && prev.Bytes == t.Bytes {
		return nil
	}
	e, found, err := w.execution(t.Execution)
	if err != nil {
		return err
	}
	if !found {
		return &storageError{err: fmt.Errorf("task %d of missing execution %d", t.ID, t.Execution)}
	}
	if prev == nil {
		e.Total++
	} else {
		e.count(prev.Status, -1)
		e.Bytes -= prev.Bytes
	}
	e.count(t.Status, +1)
	e.Bytes += t.Bytes
	e.settle(w.now)
	w.saveExecution(e)
	return nil
}

// addTask adds t, pending, to execution exec.
func (w *writer) addTask(exec uint64, t policy.Task) error {
	t.ID = w.nextID(metaTaskSeq)
	t.Execution, t.Status, t.Created = exec, policy.StatusPending, w.now
	if err := w.storeTask(nil, t); err != nil {
		return err
	}
	w.put(bucketExecTasks, idKey(exec, t.ID), []byte{})
	w.put(bucketTaskLatest, latestKey(t), idKey(t.ID))
	return nil
}

// stopTask makes the active task t stopped.
func (w *writer) stopTask(t policy.Task) error {
	prev := t
	t.Status, t.Finished, t.LeaseUntil = policy.StatusStopped, w.now, 0
	return w.storeTask(&prev, t)
}

// truncate cuts s to policy.MaxError bytes, at a character boundary.
func truncate(s string) string {
	if len(s) <= policy.MaxError {
		return s
	}
	s = s[:policy.MaxError]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func checkID(what, s string, empty bool) error {
	if s == "" && !empty || len(s) > maxClaimID || hasSep(s) {
		return badf("%s %q: want 1 to %d bytes without NUL", what, s, maxClaimID)
	}
	return nil
}

// jobs checks tasks given to start_execution or add_tasks for rule r and
// returns them as new tasks: only what says what to do is kept, and the
// rule's endpoint and destination repository are the defaults.
func jobs(r policy.Rule, tasks []policy.Task) ([]policy.Task, error) {
	out := make([]policy.Task, 0, len(tasks))
	for _, t := range tasks {
		j := policy.Task{
			Policy: r.Name, Endpoint: t.Endpoint, Kind: t.Kind,
			Repo: t.Repo, Tag: t.Tag, Digest: t.Digest, DestRepo: t.DestRepo, Version: t.Version,
		}
		if j.Endpoint == "" {
			j.Endpoint = r.Endpoint
		}
		if j.DestRepo == "" && j.Repo != "" {
			j.DestRepo = r.DestRepo(j.Repo)
		}
		if j.Kind != policy.TaskCopy && j.Kind != policy.TaskDelete {
			return nil, badf("task kind %q", j.Kind)
		}
		if err := policy.ValidateName("endpoint", j.Endpoint); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
		for _, err := range []error{checkRepo(j.Repo), checkRepo(j.DestRepo), checkDigest(j.Digest), checkVersioning(command{Version: j.Version})} {
			if err != nil {
				return nil, err
			}
		}
		if j.Tag != "" {
			if err := checkTag(j.Tag); err != nil {
				return nil, err
			}
		}
		out = append(out, j)
	}
	return out, nil
}

// addJobs adds jobs to execution exec, skipping one that the newest task of
// its reference in exec already holds (a repeated command adds nothing),
// then records whether more may come and settles the execution.
func (w *writer) addJobs(exec uint64, jobs []policy.Task, done bool) error {
	for _, j := range jobs {
		if id := w.get(bucketTaskLatest, latestKey(j)); id != nil {
			t, _, err := w.task(decodeUint(id))
			if err != nil {
				return err
			}
			if t.Execution == exec && t.Kind == j.Kind && t.Tag == j.Tag && t.Digest == j.Digest && t.DestRepo == j.DestRepo {
				continue
			}
		}
		if err := w.addTask(exec, j); err != nil {
			return err
		}
	}
	e, _, err := w.execution(exec)
	if err != nil {
		return err
	}
	e.Open = !done
	e.settle(w.now)
	w.saveExecution(e)
	return nil
}

// rule reads rule name; a missing one is oci.ErrNotFound.
func (w *writer) rule(name string) (policy.Rule, error) {
	var r policy.Rule
	found, err := w.getJSON(bucketRules, []byte(name), &r)
	if err == nil && !found {
		err = fmt.Errorf("rule %q: %w", name, oci.ErrNotFound)
	}
	return r, err
}

// startExecution records a new execution of rule c.Name with its first
// tasks. A repeat of the command (same token) does nothing.
func (w *writer) startExecution(c command) error {
	if c.Trigger == "" || len(c.Trigger) > maxTrigger {
		return badf("trigger %q", c.Trigger)
	}
	if err := checkID("token", c.Token, true); err != nil {
		return err
	}
	r, err := w.rule(c.Name)
	if err != nil {
		return err
	}
	js, err := jobs(r, c.Tasks)
	if err != nil {
		return err
	}
	if c.Token != "" && w.get(bucketExecTokens, []byte(c.Token)) != nil {
		return nil
	}
	return w.addJobs(w.newExecution(r.Name, c.Trigger, c.Token, !c.Done), js, c.Done)
}

// addTasks adds tasks to execution c.Exec. An execution that ended (all its
// tasks were done before the next chunk of a scan came) runs again; one
// that was stopped refuses them (oci.ErrDenied).
func (w *writer) addTasks(c command) error {
	e, found, err := w.execution(c.Exec)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("execution %d: %w", c.Exec, oci.ErrNotFound)
	}
	if e.Status == policy.ExecStopped {
		return fmt.Errorf("execution %d was stopped: %w", c.Exec, oci.ErrDenied)
	}
	r, err := w.rule(e.Policy)
	if err != nil {
		return err
	}
	js, err := jobs(r, c.Tasks)
	if err != nil {
		return err
	}
	if e.Status != policy.ExecRunning {
		if len(js) == 0 && c.Done {
			return nil
		}
		e.Status, e.Finished = policy.ExecRunning, 0
		w.saveExecution(e)
	}
	return w.addJobs(e.ID, js, c.Done)
}

// claimTasks takes a lease until c.Until for node c.Node, under claim
// c.Claim, on at most c.Max claimable tasks, scanning the active ones in id
// order: pending ones, retrying ones whose next attempt has come, running
// ones whose lease expired before c.Time. A rule's running tasks (with a
// valid lease) never exceed its concurrency, and a reference at a
// destination has one at a time. A repeat of the command takes no more
// than the first did. The tasks of a rule that is gone are stopped.
func (w *writer) claimTasks(c command) error {
	if err := checkID("node", c.Node, false); err != nil {
		return err
	}
	if err := checkID("claim", c.Claim, false); err != nil {
		return err
	}
	if c.Max < 0 || c.Until <= c.Time {
		return badf("claim of %d tasks until %d at %d", c.Max, c.Until, c.Time)
	}
	all, err := w.allRules()
	if err != nil {
		return err
	}
	rules := map[string]policy.Rule{}
	for _, r := range all {
		rules[r.Name] = r
	}
	now := c.Time
	running := map[string]int{} // rule → tasks with a valid lease
	busy := map[string]bool{}   // runKey → a task with a valid lease
	want := min(c.Max, maxClaim)
	for _, k := range w.keysWithPrefix(bucketTasksRunning, nil) {
		t, _, err := w.task(decodeUint(k))
		if err != nil {
			return err
		}
		if t.LeaseUntil >= now {
			running[t.Policy]++
			busy[runKey(t)] = true
			if t.Claim == c.Claim {
				want--
			}
		}
	}
	free := 0 // tasks the rules may still start
	for _, r := range all {
		free += max(0, r.MaxConcurrent()-running[r.Name])
	}
	var take, gone []policy.Task
	cur := w.tx.Bucket(bucketTasksActive).Cursor()
	for k, _ := cur.First(); k != nil && want > 0 && free > 0; k, _ = cur.Next() {
		t, _, err := w.task(decodeUint(k))
		if err != nil {
			return err
		}
		switch {
		case t.Status == policy.StatusPending:
		case t.Status == policy.StatusRetrying && t.NextAttempt <= now:
		case t.Status == policy.StatusRunning && t.LeaseUntil < now:
		default:
			continue
		}
		r, ok := rules[t.Policy]
		switch {
		case !ok:
			gone = append(gone, t)
			continue
		case running[r.Name] >= r.MaxConcurrent() || busy[runKey(t)]:
			continue
		}
		running[r.Name]++
		busy[runKey(t)] = true
		want--
		free--
		take = append(take, t)
	}
	for _, t := range gone {
		if err := w.stopTask(t); err != nil {
			return err
		}
	}
	for _, t := range take {
		prev := t
		t.Status, t.Owner, t.Claim, t.LeaseUntil = policy.StatusRunning, c.Node, c.Claim, c.Until
		t.Attempts++
		if t.Started == 0 {
			t.Started = now
		}
		if err := w.storeTask(&prev, t); err != nil {
			return err
		}
	}
	return nil
}

// updateTasks applies what workers report. An update whose claim no longer
// holds its task (or whose task is not running) is ignored.
func (w *writer) updateTasks(us []policy.TaskUpdate) error {
	for _, u := range us {
		switch u.Status {
		case policy.StatusRunning, policy.StatusRetrying, policy.StatusSucceeded, policy.StatusFailed:
		default:
			return badf("task %d: update to status %q", u.ID, u.Status)
		}
		if u.Bytes < 0 {
			return badf("task %d: negative bytes", u.ID)
		}
	}
	for _, u := range us {
		t, found, err := w.task(u.ID)
		if err != nil {
			return err
		}
		if !found || t.Status != policy.StatusRunning || u.Claim == "" || t.Claim != u.Claim {
			continue
		}
		prev := t
		if u.Bytes > 0 {
			t.Bytes = u.Bytes
		}
		switch u.Status {
		case policy.StatusRunning:
			if u.LeaseUntil > 0 {
				t.LeaseUntil = u.LeaseUntil
			}
		case policy.StatusRetrying:
			t.Status, t.NextAttempt, t.Error = u.Status, u.NextAttempt, truncate(u.Error)
			t.Owner, t.Claim, t.LeaseUntil = "", "", 0
		default:
			t.Status, t.Finished, t.LeaseUntil = u.Status, w.now, 0
			t.Error, t.Note = truncate(u.Error), truncate(u.Note)
		}
		if err := w.storeTask(&prev, t); err != nil {
			return err
		}
	}
	return nil
}

// stopExecution stops a running execution and its active tasks; stopping
// one that ended does nothing.
func (w *writer) stopExecution(id uint64) error {
	e, found, err := w.execution(id)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("execution %d: %w", id, oci.ErrNotFound)
	}
	if e.Status != policy.ExecRunning {
		return nil
	}
	e.Status, e.Finished, e.Open = policy.ExecStopped, w.now, false
	w.saveExecution(e)
	p := idKey(id)
	for _, k := range w.keysWithPrefix(bucketExecTasks, p) {
		t, _, err := w.task(decodeUint(k[len(p):]))
		if err != nil {
			return err
		}
		if t.Active() {
			if err := w.stopTask(t); err != nil {
				return err
			}
		}
	}
	return nil
}

// pruneHistory forgets the final executions that ended before before (unix
// nanoseconds) and the oldest final ones beyond keep (0: no bound), with
// their tasks. Running executions stay.
func (w *writer) pruneHistory(before int64, keep int) error {
	if keep < 0 {
		return badf("keep %d", keep)
	}
	var drop []execution
	n := 0
	c := w.tx.Bucket(bucketExecutions).Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		var e execution
		if err := json.Unmarshal(v, &e); err != nil {
			return &storageError{err: fmt.Errorf("decode execution %d: %w", decodeUint(k), err)}
		}
		if e.Status == policy.ExecRunning {
			continue
		}
		n++
		if keep > 0 && n > keep || e.Finished < before {
			drop = append(drop, e)
		}
	}
	for _, e := range drop {
		if err := w.dropExecution(e); err != nil {
			return err
		}
	}
	return nil
}

// dropExecution deletes e, its tasks and their index entries.
func (w *writer) dropExecution(e execution) error {
	p := idKey(e.ID)
	for _, k := range w.keysWithPrefix(bucketExecTasks, p) {
		tk := k[len(p):]
		t, found, err := w.task(decodeUint(tk))
		if err != nil {
			return err
		}
		if found && bytes.Equal(w.get(bucketTaskLatest, latestKey(t)), tk) {
			w.del(bucketTaskLatest, latestKey(t))
		}
		for _, b := range [][]byte{bucketTasks, bucketTasksActive, bucketTasksRunning} {
			w.del(b, tk)
		}
		w.del(bucketExecTasks, k)
	}
	w.del(bucketRuleExecs, append(prefix(e.Policy), p...))
	if e.Token != "" {
		w.del(bucketExecTokens, []byte(e.Token))
	}
	w.del(bucketExecutions, p)
	w.del(bucketExecRunning, p)
	return nil
}
