package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The engine's methods that the management API calls (api.Replication).

// endpointCheckTimeout bounds the connectivity check of a new endpoint.
const endpointCheckTimeout = 10 * time.Second

func (e *Engine) view(ep policy.Endpoint) EndpointView {
	e.mu.Lock()
	h := e.health[ep.Name]
	e.mu.Unlock()
	return EndpointView{
		Name: ep.Name, URL: ep.URL, Type: ep.Type, Insecure: ep.Insecure, User: ep.User,
		HasPassword: len(ep.Secret) > 0, Created: ep.Created, Updated: ep.Updated, Health: h,
	}
}

// ListEndpoints returns every endpoint, without credentials.
func (e *Engine) ListEndpoints(ctx context.Context) ([]EndpointView, error) {
	eps, err := e.store.Endpoints(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]EndpointView, len(eps))
	for i, ep := range eps {
		out[i] = e.view(ep)
	}
	return out, nil
}

// GetEndpoint returns one endpoint, without credentials.
func (e *Engine) GetEndpoint(ctx context.Context, name string) (EndpointView, error) {
	ep, err := e.store.Endpoint(ctx, name)
	if err != nil {
		return EndpointView{}, err
	}
	return e.view(ep), nil
}

// PutEndpoint checks that the endpoint answers with its credentials (unless
// spec.SkipCheck), seals the password and stores it. An empty password on
// a replaced endpoint with the same user keeps the stored one.
func (e *Engine) PutEndpoint(ctx context.Context, spec EndpointSpec) (EndpointView, error) {
	now := time.Now().UnixNano()
	ep := policy.Endpoint{
		Name: spec.Name, URL: spec.URL, Type: spec.Type, Insecure: spec.Insecure, User: spec.User,
		Created: now, Updated: now,
	}
	if ep.Type == "" {
		ep.Type = policy.EndpointBerth
	}
	old, err := e.store.Endpoint(ctx, spec.Name)
	switch {
	case err == nil:
		ep.Created = old.Created
		if spec.Password == "" && spec.User == old.User {
			ep.Secret = old.Secret
		}
	case !errors.Is(err, oci.ErrNotFound):
		return EndpointView{}, err
	}
	if spec.Password != "" {
		if ep.Secret, err = e.seal.seal(ep.Name, spec.Password); err != nil {
			return EndpointView{}, fmt.Errorf("seal credentials: %w", err)
		}
	}
	if err := ep.Validate(); err != nil {
		return EndpointView{}, err
	}
	var h Health
	if !spec.SkipCheck {
		r, err := e.newRemote(ep)
		if err != nil {
			return EndpointView{}, err
		}
		cctx, cancel := context.WithTimeout(ctx, endpointCheckTimeout)
		start := time.Now()
		err = r.Ping(cctx)
		cancel()
		if err != nil {
			return EndpointView{}, fmt.Errorf("%w: %s: %v", ErrUnreachable, ep.URL, err)
		}
		h = Health{Reachable: true, Checked: time.Now().UnixNano(), LatencyMS: time.Since(start).Milliseconds()}
	}
	if err := e.store.PutEndpoint(ctx, ep); err != nil {
		return EndpointView{}, err
	}
	if h.Checked != 0 {
		e.mu.Lock()
		e.health[ep.Name] = h
		e.mu.Unlock()
	}
	return e.view(ep), nil
}

// RemoveEndpoint removes an endpoint that no policy uses.
func (e *Engine) RemoveEndpoint(ctx context.Context, name string) error {
	if err := e.store.DeleteEndpoint(ctx, name); err != nil {
		return err
	}
	e.mu.Lock()
	delete(e.remotes, name)
	delete(e.health, name)
	e.mu.Unlock()
	return nil
}

// CheckEndpoint pings an endpoint now.
func (e *Engine) CheckEndpoint(ctx context.Context, name string) (Health, error) {
	ep, err := e.store.Endpoint(ctx, name)
	if err != nil {
		return Health{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, endpointCheckTimeout)
	defer cancel()
	h := e.check(cctx, ep)
	e.mu.Lock()
	e.health[name] = h
	e.mu.Unlock()
	return h, nil
}

// ListRules returns every policy.
func (e *Engine) ListRules(ctx context.Context) ([]policy.Rule, error) { return e.store.Rules(ctx) }

// GetRule returns one policy.
func (e *Engine) GetRule(ctx context.Context, name string) (policy.Rule, error) {
	return e.store.Rule(ctx, name)
}

// PutRule validates (cron spec included) and stores a policy.
func (e *Engine) PutRule(ctx context.Context, r policy.Rule) (policy.Rule, error) {
	now := time.Now().UnixNano()
	r.Created, r.Updated = now, now
	if old, err := e.store.Rule(ctx, r.Name); err == nil {
		r.Created = old.Created
	} else if !errors.Is(err, oci.ErrNotFound) {
		return policy.Rule{}, err
	}
	if err := r.Validate(); err != nil {
		return policy.Rule{}, err
	}
	if r.Trigger == policy.TriggerCron {
		if _, err := ParseCron(r.Cron); err != nil {
			return policy.Rule{}, err
		}
	}
	if err := e.store.PutRule(ctx, r); err != nil {
		return policy.Rule{}, err
	}
	return r, nil
}

// RemoveRule removes a policy; its active tasks stop.
func (e *Engine) RemoveRule(ctx context.Context, name string) error {
	return e.store.DeleteRule(ctx, name)
}

// SetRuleEnabled enables or disables a policy.
func (e *Engine) SetRuleEnabled(ctx context.Context, name string, enabled bool) (policy.Rule, error) {
	r, err := e.store.Rule(ctx, name)
	if err != nil {
		return policy.Rule{}, err
	}
	if r.Enabled == enabled {
		return r, nil
	}
	r.Enabled = enabled
	r.Updated = time.Now().UnixNano()
	if err := e.store.PutRule(ctx, r); err != nil {
		return policy.Rule{}, err
	}
	return r, nil
}

// RunRule starts a manual execution of a policy: it compares source and
// destination now and queues what differs. It returns once the execution
// is recorded; the scan goes on in the background.
func (e *Engine) RunRule(ctx context.Context, name string) (uint64, error) {
	r, err := e.store.Rule(ctx, name)
	if err != nil {
		return 0, err
	}
	if _, err := e.store.Endpoint(ctx, r.Endpoint); err != nil {
		return 0, fmt.Errorf("endpoint %s of policy %s: %w", r.Endpoint, r.Name, err)
	}
	e.mu.Lock()
	runCtx := e.runCtx
	e.mu.Unlock()
	if runCtx == nil || runCtx.Err() != nil {
		return 0, fmt.Errorf("replication is not running: %w", oci.ErrUnavailable)
	}
	id, err := e.store.StartExecution(ctx, r.Name, policy.TriggerManual, nil, false, time.Now())
	if err != nil {
		return 0, err
	}
	e.scanAsync(runCtx, r, policy.TriggerManual, id)
	return id, nil
}

// Executions pages through executions, newest first.
func (e *Engine) Executions(ctx context.Context, rule string, before uint64, n int) ([]policy.Execution, error) {
	return e.store.Executions(ctx, rule, before, n)
}

// Execution returns one execution.
func (e *Engine) Execution(ctx context.Context, id uint64) (policy.Execution, error) {
	return e.store.Execution(ctx, id)
}

// Tasks pages through an execution's tasks.
func (e *Engine) Tasks(ctx context.Context, exec uint64, status string, after uint64, n int) ([]policy.Task, error) {
	if _, err := e.store.Execution(ctx, exec); err != nil {
		return nil, err
	}
	return e.store.Tasks(ctx, exec, status, after, n)
}

// StopExecution stops an execution; its running tasks are abandoned at
// their next renewal.
func (e *Engine) StopExecution(ctx context.Context, id uint64) error {
	return e.store.StopExecution(ctx, id, time.Now())
}
