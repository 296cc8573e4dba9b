package cluster

import (
	"fmt"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Endpoints and rules in apply. A rule names an endpoint that exists; an
// endpoint a rule names cannot be deleted.

// stamp sets the times of an entry about to be stored under name in
// bucket: Created stays the stored one's (the command's time for a new
// one), Updated is the command's time.
func (w *writer) stamp(bucket []byte, name string, created, updated *int64) error {
	old := struct {
		Created int64 `json:"created"`
	}{Created: w.now}
	_, err := w.getJSON(bucket, []byte(name), &old)
	*created, *updated = old.Created, w.now
	return err
}

func (w *writer) putEndpoint(e *policy.Endpoint) error {
	if e == nil {
		return badf("put_endpoint without an endpoint")
	}
	if err := e.Validate(); err != nil {
		return fmt.Errorf("endpoint %q: %w", e.Name, err)
	}
	v := *e
	if err := w.stamp(bucketEndpoints, v.Name, &v.Created, &v.Updated); err != nil {
		return err
	}
	w.putJSON(bucketEndpoints, []byte(v.Name), v)
	return nil
}

// deleteEndpoint removes an endpoint that no rule uses.
func (w *writer) deleteEndpoint(name string) error {
	if w.get(bucketEndpoints, []byte(name)) == nil {
		return fmt.Errorf("endpoint %q: %w", name, oci.ErrNotFound)
	}
	rules, err := w.allRules()
	if err != nil {
		return err
	}
	for _, r := range rules {
		if r.Endpoint == name {
			return fmt.Errorf("endpoint %q is used by rule %q; delete the rule or change its endpoint first: %w", name, r.Name, oci.ErrDenied)
		}
	}
	w.del(bucketEndpoints, []byte(name))
	return nil
}

func (w *writer) putRule(r *policy.Rule) error {
	if r == nil {
		return badf("put_rule without a rule")
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("rule %q: %w", r.Name, err)
	}
	if w.get(bucketEndpoints, []byte(r.Endpoint)) == nil {
		return fmt.Errorf("rule %q: endpoint %q: %w", r.Name, r.Endpoint, oci.ErrNotFound)
	}
	v := *r
	if err := w.stamp(bucketRules, v.Name, &v.Created, &v.Updated); err != nil {
		return err
	}
	w.putJSON(bucketRules, []byte(v.Name), v)
	w.read = false
	return nil
}

// deleteRule removes a rule and stops its running executions (and so its
// active tasks); their history stays.
func (w *writer) deleteRule(name string) error {
	if _, err := w.rule(name); err != nil {
		return err
	}
	for _, k := range w.keysWithPrefix(bucketExecRunning, nil) {
		e, _, err := w.execution(decodeUint(k))
		if err != nil {
			return err
		}
		if e.Policy == name {
			if err := w.stopExecution(e.ID); err != nil {
				return err
			}
		}
	}
	w.del(bucketRules, []byte(name))
	w.read = false
	return nil
}
