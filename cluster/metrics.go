package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's collectors, registered on the injected Registerer
// and unregistered by Close, so that several nodes (or a restarted one) can
// live in one process.
type metrics struct {
	reg            prometheus.Registerer
	collectors     []prometheus.Collector
	applyDuration  prometheus.Histogram
	commitDuration prometheus.Histogram
	leaderChanges  prometheus.Counter
	forwarded      *prometheus.CounterVec
	blobTransfers  *prometheus.CounterVec
	blobBytes      *prometheus.CounterVec
}

var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 14)

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	m := &metrics{
		reg: reg,
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_raft_apply_duration_seconds",
			Help:    "Time from proposing a command on this node (forwarded to the leader when this node follows) to its being applied here.",
			Buckets: latencyBuckets,
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_raft_commit_duration_seconds",
			Help:    "Time the leader takes to commit a command to a quorum and apply it.",
			Buckets: latencyBuckets,
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_raft_leader_changes_total",
			Help: "Number of times this node observed a new Raft leader.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_forwarded_requests_total",
			Help: "Requests this node sent to another node: apply (a write forwarded to the leader), readindex (a catch-up before a not-found answer), upload (a request for an upload session another node owns).",
		}, []string{"kind"}),
		blobTransfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_blob_transfers_total",
			Help: "Blob transfers between peers, by direction (push: for the write quorum, fetch: repair or a read that missed) and result (ok, error, corrupt).",
		}, []string{"direction", "result"}),
		blobBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_blob_transfer_bytes_total",
			Help: "Bytes of blobs sent to (push) or received from (fetch) peers.",
		}, []string{"direction"}),
	}
	for _, k := range []string{"apply", "readindex", "upload"} {
		m.forwarded.WithLabelValues(k)
	}
	m.collectors = []prometheus.Collector{
		m.applyDuration,
		m.commitDuration,
		m.leaderChanges,
		m.forwarded,
		m.blobTransfers,
		m.blobBytes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_raft_last_applied_index",
			Help: "Index of the last Raft log entry applied to the state machine.",
		}, func() float64 { return float64(n.fsm.applied.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_raft_commit_index",
			Help: "Raft commit index as this node knows it.",
		}, func() float64 { return float64(n.raft.CommitIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_raft_state",
			Help: "Raft state of this node: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
		}, func() float64 { return float64(n.raft.State()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "berth_blob_repair_backlog",
			Help: "Blobs that manifests reference but this node does not hold yet.",
		}, func() float64 {
			if n.repair == nil {
				return 0
			}
			return float64(n.repair.backlog())
		}),
		&membersCollector{n: n, desc: prometheus.NewDesc("berth_cluster_members",
			"Cluster members as this node's gossip sees them, by state.", []string{"state"}, nil)},
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

// membersCollector counts members by gossip state at each scrape.
type membersCollector struct {
	n    *Node
	desc *prometheus.Desc
}

func (c *membersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *membersCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[MemberState]int{StateAlive: 0, StateSuspect: 0, StateDead: 0, StateLeft: 0}
	for _, m := range c.n.Members() {
		counts[m.State]++
	}
	for s, v := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), string(s))
	}
}
