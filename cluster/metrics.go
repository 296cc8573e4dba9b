package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's collectors, registered on the injected Registerer
// and unregistered by Close, so that several nodes (or a restarted one) can
// live in one process.
type metrics struct {
	reg           prometheus.Registerer
	collectors    []prometheus.Collector
	applyDuration prometheus.Histogram
	leaderChanges prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, lastApplied, state func() float64) (*metrics, error) {
	m := &metrics{
		reg: reg,
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_raft_apply_duration_seconds",
			Help:    "Time from proposing a command to its being applied on this node.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_raft_leader_changes_total",
			Help: "Number of times this node observed a new Raft leader.",
		}),
	}
	m.collectors = []prometheus.Collector{
		m.applyDuration,
		m.leaderChanges,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_raft_last_applied_index",
			Help: "Index of the last Raft log entry applied to the state machine.",
		}, lastApplied),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_raft_state",
			Help: "Raft state of this node: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
		}, state),
	}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, r := range m.collectors[:i] {
				reg.Unregister(r)
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
