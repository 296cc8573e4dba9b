package retention_test

import (
	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/retention"
)

// cmd passes a *cluster.Node as the runner's store.
var _ retention.Store = (*cluster.Node)(nil)
