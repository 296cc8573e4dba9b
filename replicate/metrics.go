package replicate

import (
	"github.com/prometheus/client_golang/prometheus"

	"time"

	"github.com/berth-registry/berth/policy"
)

// metrics are the engine's collectors, registered on the node's registry.
type metrics struct {
	tasks   *prometheus.GaugeVec   // active tasks by endpoint and status
	lag     *prometheus.GaugeVec   // age of the oldest active task by endpoint
	bytes   *prometheus.CounterVec // bytes sent by endpoint
	retries *prometheus.CounterVec // temporary failures by endpoint
	done    *prometheus.CounterVec // finished tasks by endpoint and status
	scans   *prometheus.CounterVec // reconciliation scans by trigger
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		tasks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_replication_tasks",
			Help: "Replication tasks that are pending, running or retrying, by endpoint and status (as this node's state shows them).",
		}, []string{"endpoint", "status"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_replication_lag_seconds",
			Help: "Age of the oldest pending, running or retrying replication task, by endpoint: how far the endpoint is behind.",
		}, []string{"endpoint"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_replication_bytes_total",
			Help: "Blob bytes this node sent to endpoints.",
		}, []string{"endpoint"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_replication_retries_total",
			Help: "Task attempts on this node that failed temporarily and will be retried.",
		}, []string{"endpoint"}),
		done: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_replication_tasks_finished_total",
			Help: "Tasks this node finished, by endpoint and final status.",
		}, []string{"endpoint", "status"}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_replication_scans_total",
			Help: "Comparisons of a policy's source and destination, by trigger.",
		}, []string{"trigger"}),
	}
	for _, c := range []prometheus.Collector{m.tasks, m.lag, m.bytes, m.retries, m.done, m.scans} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe sets the gauges from the active tasks.
func (m *metrics) observe(active []policy.Task, now time.Time) {
	type key struct{ ep, status string }
	counts := map[key]int{}
	oldest := map[string]int64{}
	for _, t := range active {
		counts[key{t.Endpoint, t.Status}]++
		if o, ok := oldest[t.Endpoint]; !ok || t.Created < o {
			oldest[t.Endpoint] = t.Created
		}
	}
	m.tasks.Reset()
	m.lag.Reset()
	for k, n := range counts {
		m.tasks.WithLabelValues(k.ep, k.status).Set(float64(n))
	}
	for ep, c := range oldest {
		m.lag.WithLabelValues(ep).Set(now.Sub(time.Unix(0, c)).Seconds())
	}
}
