package retention

import "github.com/prometheus/client_golang/prometheus"

// metrics are the runner's collectors, registered on the node's registry.
type metrics struct {
	runs    *prometheus.CounterVec // finished runs by result
	deleted prometheus.Counter     // artifacts this node deleted
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_retention_runs_total",
			Help: "Retention runs this node made (real and dry), by result: succeeded or failed.",
		}, []string{"result"}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_retention_artifacts_deleted_total",
			Help: "Artifacts (manifests, accessories included) that retention runs on this node deleted.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.runs, m.deleted} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
